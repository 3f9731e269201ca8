"""The pure decisions inside the Kubernetes actions: rollout completeness, drain filters,
ConfigMap/Secret data patches, error classification, object names. (The API calls
themselves are proven against a real control plane in tests/e2e.)"""

from __future__ import annotations

import asyncio
import base64
import copy

import pytest
from kubernetes.client.exceptions import ApiException

from reconciler.actions.base import run_object_name
from reconciler.actions.config import apply_target, undo_target
from reconciler.actions.deployments import rollout_progress
from reconciler.actions.errors import engine_error
from reconciler.actions.nodes import pods_to_evict
from reconciler.engine.errors import PermanentError, TransientError
from reconciler.kube import errors
from reconciler.manifest.params import DrainParams


def deploy(generation=2, observed=2, want=3, updated=3, replicas=3, available=3, conditions=()):
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": want},
        "status": {
            "observedGeneration": observed,
            "updatedReplicas": updated,
            "replicas": replicas,
            "availableReplicas": available,
            "conditions": list(conditions),
        },
    }


@pytest.mark.parametrize(
    ("obj", "waiting"),
    [
        (deploy(), None),
        (deploy(observed=1), "has not observed generation 2"),
        (deploy(updated=1), "1 of 3 replicas updated"),
        (deploy(replicas=5), "2 old replicas pending termination"),
        (deploy(available=2), "2 of 3 updated replicas available"),
        (deploy(want=0, updated=0, replicas=0, available=0), None),
        (deploy(want=2, updated=4, replicas=4, available=4), "2 extra replicas still terminating"),
    ],
)
def test_rollout_progress_matches_kubectl(obj: dict, waiting: str | None) -> None:
    result = rollout_progress(obj, "deployment shop/app")
    assert (result is None) if waiting is None else (waiting in result)


def test_progress_deadline_exceeded_is_permanent() -> None:
    cond = {"type": "Progressing", "reason": "ProgressDeadlineExceeded", "message": "too slow"}
    with pytest.raises(PermanentError, match="progress deadline"):
        rollout_progress(deploy(updated=1, conditions=[cond]), "deployment shop/app")


def pod(name, *, owner=None, phase="Running", empty_dir=False, mirror=False):
    meta = {"name": name, "namespace": "ns", "annotations": {}}
    if owner:
        meta["ownerReferences"] = [{"kind": owner, "name": "x", "controller": True}]
    if mirror:
        meta["annotations"]["kubernetes.io/config.mirror"] = "x"
    volumes = [{"name": "tmp", "emptyDir": {}}] if empty_dir else []
    return {"metadata": meta, "spec": {"volumes": volumes}, "status": {"phase": phase}}


def drain(**params):
    return DrainParams.model_validate({"ignoreDaemonSets": True, **params})


def test_drain_skips_daemonsets_and_mirror_pods() -> None:
    pods = [
        pod("web", owner="ReplicaSet"),
        pod("ds", owner="DaemonSet"),
        pod("static", mirror=True),
    ]
    assert [p["metadata"]["name"] for p in pods_to_evict(pods, drain(), "n1")] == ["web"]


@pytest.mark.parametrize(
    ("pods", "params", "message"),
    [
        (
            [pod("ds", owner="DaemonSet")],
            {"ignoreDaemonSets": False},
            "DaemonSet-managed pods (set ignoreDaemonSets): ns/ds",
        ),
        (
            [pod("cache", owner="ReplicaSet", empty_dir=True)],
            {},
            "emptyDir data (set deleteEmptyDirData): ns/cache",
        ),
        ([pod("lonely")], {}, "no controller will recreate (set force): ns/lonely"),
    ],
)
def test_drain_refuses_like_kubectl(pods: list, params: dict, message: str) -> None:
    with pytest.raises(PermanentError, match="cannot drain node n1") as exc:
        pods_to_evict(pods, drain(**params), "n1")
    assert message in str(exc.value)


@pytest.mark.parametrize(
    ("pods", "params"),
    [
        ([pod("cache", owner="ReplicaSet", empty_dir=True)], {"deleteEmptyDirData": True}),
        ([pod("lonely")], {"force": True}),
        ([pod("done", phase="Succeeded")], {}),
    ],
)
def test_drain_flags_allow_what_kubectl_allows(pods: list, params: dict) -> None:
    assert len(pods_to_evict(pods, drain(**params), "n1")) == 1


@pytest.mark.parametrize(
    ("current", "new", "mode", "patch", "after"),
    [
        ({"a": "1", "b": "2"}, {"b": "3"}, "merge", {"b": "3"}, {"a": "1", "b": "3"}),
        ({"a": "1", "b": "2"}, {"b": "3"}, "replace", {"a": None, "b": "3"}, {"b": "3"}),
        ({}, {"a": "1"}, "merge", {"a": "1"}, {"a": "1"}),
        ({"b": "3"}, {"b": "3"}, "merge", {}, {"b": "3"}),  # re-applied after a crash: no-op
    ],
)
def test_apply_patch_sets_what_the_mode_says(
    current: dict, new: dict, mode: str, patch: dict, after: dict
) -> None:
    target = apply_target(new, mode)
    assert target.patch(current) == {"data": patch}
    assert apply_patch(current, target.patch(current)) == after
    assert target.reached(after)
    assert target.reached(current) == (current == after)


def test_merge_owns_only_its_keys_so_concurrent_merges_keep_each_other() -> None:
    """Two steps capture {} then merge different keys: neither removes the other's key,
    and undoing one leaves the other's key in place."""
    first, second = apply_target({"a": "1"}, "merge"), apply_target({"b": "2"}, "merge")
    live: dict = {}
    for target in (first, second):
        live = apply_patch(live, target.patch(live))
    assert live == {"a": "1", "b": "2"} and first.reached(live) and second.reached(live)
    undo_first = undo_target({}, ["a"], "merge")
    live = apply_patch(live, undo_first.patch(live))
    assert live == {"b": "2"} and undo_first.reached(live)


@pytest.mark.parametrize(
    ("original", "keys", "mode", "current", "restored"),
    [
        (
            {"a": "1"},
            ["a", "added"],
            "merge",
            {"a": "9", "added": "x", "other": "o"},
            {"a": "1", "other": "o"},
        ),  # the step's keys restored or removed; others' stay
        ({"a": "1"}, ["b"], "replace", {"b": "2", "late": "l"}, {"a": "1"}),  # exact
    ],
)
def test_undo_restores_exactly_what_the_step_changed(
    original: dict, keys: list, mode: str, current: dict, restored: dict
) -> None:
    target = undo_target(original, keys, mode)
    assert apply_patch(current, target.patch(current)) == restored
    assert target.reached(restored)


def apply_patch(data: dict, patch: dict) -> dict:
    """A JSON merge patch of `data`, as the API server applies it."""
    out = dict(data)
    for key, value in patch["data"].items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


@pytest.mark.parametrize(
    ("status", "typed", "kind", "fragment"),
    [
        (404, errors.NotFound, PermanentError, "deployment shop/app not found"),
        (403, errors.Forbidden, PermanentError, "forbidden"),
        (422, errors.Rejected, PermanentError, "HTTP 422"),
        (409, errors.Conflict, TransientError, "HTTP 409"),
        (410, errors.Gone, TransientError, "HTTP 410"),
        (429, errors.TooManyRequests, TransientError, "HTTP 429"),
        (500, errors.ServerError, TransientError, "HTTP 500"),
        (503, errors.Unreachable, TransientError, "HTTP 503"),
    ],
)
def test_api_errors_are_typed_then_classified_for_the_engine(
    status: int, typed: type, kind: type, fragment: str
) -> None:
    err = ApiException(status=status, reason="reason")
    err.body = '{"message": "details from the API server", "reason": "AlreadyExists"}'
    kube_error = errors.from_exception(err, "deployment shop/app")
    assert type(kube_error) is typed
    assert (kube_error.status, kube_error.reason) == (status, "AlreadyExists")
    translated = engine_error(kube_error)
    assert isinstance(translated, kind)
    assert fragment in str(translated)


def test_connection_failures_are_transient() -> None:
    kube_error = errors.from_exception(ConnectionRefusedError("refused"), "deployment shop/app")
    assert isinstance(kube_error, errors.Unreachable)
    assert isinstance(engine_error(kube_error), TransientError)


def test_run_object_names_are_valid_and_distinct() -> None:
    long_step = "s" * 63
    a = run_object_name("wf-0123456789", long_step)
    b = run_object_name("wf-9876543210", long_step)
    c = run_object_name("wf-0123456789", long_step, "-rollback")
    assert a != b and a != c
    assert all(len(n) <= 63 and n[0].isalnum() and n[-1].isalnum() for n in (a, b, c))


class SecretsOnlyKube:
    """Just enough of the API for UpdateSecret: objects by path, JSON merge patches."""

    dry_run = False
    capture_namespace = "reconciler-system"

    def __init__(self, objs: dict) -> None:
        self.objs = objs

    async def get(self, what: str, path: str) -> dict:
        return copy.deepcopy(self.objs[path])

    async def find(self, what: str, path: str) -> dict | None:
        return copy.deepcopy(self.objs.get(path))

    async def write(self, what: str, method: str, path: str, body: dict) -> dict:
        self.objs[f"{path}/{body['metadata']['name']}"] = copy.deepcopy(body)
        return body

    async def merge_patch(self, what: str, path: str, patch: dict) -> dict:
        self.objs[path] = {"data": apply_patch(self.objs[path].get("data") or {}, patch)}
        return self.objs[path]


def test_secret_merge_from_a_source_that_gains_a_key_changes_and_undoes_only_captured_keys() -> (
    None
):
    """fromSecret without `keys`: the keys are fixed at capture; a key the source gains before
    a retry or a resumed apply is not written, so undo leaves the target exactly as it was."""
    from fakes import workflow

    from reconciler.actions.config import UpdateSecret
    from reconciler.engine.interface import StepContext
    from reconciler.kube.paths import ns_path

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    target, source = (ns_path("v1", "shop", "secrets", n) for n in ("app", "src"))
    kube = SecretsOnlyKube(
        {target: {"data": {"keep": b64("1")}}, source: {"data": {"password": b64("new")}}}
    )
    step = workflow(
        [
            {
                "name": "s",
                "action": "UpdateSecret",
                "target": {"namespace": "shop", "name": "app"},
                "params": {"fromSecret": {"name": "src"}, "mode": "merge"},
            }
        ]
    ).spec.steps[0]
    ctx, action = StepContext("run-1", "wf", 1), UpdateSecret()

    async def main() -> tuple[list, list]:
        captured = await action.capture(kube, step, ctx, None)  # type: ignore[arg-type]
        kube.objs[source]["data"]["token"] = b64("t")  # the source changes before the apply
        await action.apply(kube, step, captured, ctx, None)  # type: ignore[arg-type]
        await action.wait(kube, step, captured, ctx)  # type: ignore[arg-type]
        applied = sorted(kube.objs[target]["data"])
        await action.undo(kube, step, captured, ctx, None)  # type: ignore[arg-type]
        return applied, sorted(kube.objs[target]["data"])

    applied, undone = asyncio.run(main())
    assert applied == ["keep", "password"]
    assert undone == ["keep"]


def test_inline_secret_values_are_redacted_for_the_execution_only() -> None:
    from reconciler.cluster.inputs import redact

    manifest = {
        "spec": {
            "steps": [
                {"name": "a", "action": "UpdateSecret", "params": {"data": {"K": "s3cret"}}},
                {"name": "b", "action": "UpdateConfigMap", "params": {"data": {"K": "plain"}}},
                {"name": "c", "action": "UpdateSecret", "params": {"fromSecret": {"name": "x"}}},
            ]
        }
    }
    redacted = redact(manifest, b"k" * 32)
    assert redacted is not None and "s3cret" not in str(redacted)
    keyed = redacted["spec"]["steps"][0]["params"]["data"]["K"]
    other = redact(manifest, b"x" * 32)
    assert keyed.startswith("hmac-sha256:") and other is not None
    assert keyed != other["spec"]["steps"][0]["params"]["data"]["K"]  # the key matters
    assert redacted["spec"]["steps"][1:] == manifest["spec"]["steps"][1:]  # untouched
    assert manifest["spec"]["steps"][0]["params"]["data"] == {"K": "s3cret"}  # not mutated
    assert redact({"spec": {"steps": manifest["spec"]["steps"][1:]}}, b"k" * 32) is None


def test_a_dry_run_diff_shows_what_the_step_writes_and_no_live_value() -> None:
    """Plan branches run for unsigned commits: their diffs must not read the cluster out."""
    from reconciler.actions.dryrun import diff_write
    from reconciler.kube.client import DryRunWrite

    before = {
        "kind": "ConfigMap",
        "metadata": {"name": "c"},
        "data": {"DATABASE_URL": "postgres://app:hunter2@db", "POOL": "5", "N": 3},
    }
    after = {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"POOL": "10"}}
    text = diff_write(DryRunWrite("configmap ns/c", "PATCH", before, after))
    assert "hunter2" not in text and '"5"' not in text and ": 3" not in text
    assert '-    "DATABASE_URL": "<live value>",' in text
    assert '+    "POOL": "10"' in text
