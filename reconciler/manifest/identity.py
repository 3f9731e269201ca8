"""Content hash and run id (docs/architecture.md, Identity): same content, same run; never
executed twice."""

from __future__ import annotations

import hashlib
import json

from reconciler.manifest.schema import RUN_ANNOTATION, Workflow


def canonical_json(workflow: Workflow) -> str:
    """Sorted JSON of what decides behaviour: name, spec, and the re-run annotation.

    Defaults are left out (`exclude_defaults`) so a field added in a later release with a
    default does not change every existing hash and re-run every workflow after an upgrade;
    durations are seconds, so `5m` and `300s` are the same content.
    """
    body = {
        "name": workflow.metadata.name,
        "run": workflow.metadata.annotations.get(RUN_ANNOTATION, ""),
        "spec": workflow.spec.model_dump(mode="json", exclude_defaults=True, by_alias=True),
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(workflow: Workflow) -> str:
    return hashlib.sha256(canonical_json(workflow).encode()).hexdigest()


def run_id(workflow: Workflow, digest: str | None = None) -> str:
    return f"{workflow.metadata.name}-{(digest or content_hash(workflow))[:10]}"
