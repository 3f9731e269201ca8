"""`make demo`: what the product can show on a fresh machine today.

Today that is: validate every example workflow and print its plan (run id, levels, start
order, critical path). Running the examples against a cluster needs the Kubernetes actions
and the daemon, which are not built yet; this script says so rather than pretend.
"""

from __future__ import annotations

import sys
from pathlib import Path

from reconciler.manifest.loader import load_paths
from reconciler.plan import plan_workflow, render_text

EXAMPLES = Path(__file__).resolve().parents[1] / "examples-repo" / "workflows"


def main() -> int:
    print(f"== reconciler demo: validating and planning {EXAMPLES}\n")
    result = load_paths([EXAMPLES])
    for issue in result.issues:
        print(issue, file=sys.stderr)
    for loaded in result.workflows:
        print(render_text(plan_workflow(loaded)))
        print()
    print(f"{len(result.workflows)} workflow(s) valid, {len(result.issues)} error(s).")
    print(
        "\nNOTE: nothing was executed. This build validates and plans workflows only; running\n"
        "them against a Kubernetes cluster arrives with the actions and the daemon."
    )
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
