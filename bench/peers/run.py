"""Ours beside Flux, one run (issue 18, part 1): one kwok control plane, one bare git remote
served over smart HTTP on 127.0.0.1, Flux v1.9.6's source- and kustomize-controller and our
daemon reading it. Each trial pushes one commit changing a Deployment's replicas (Flux: the
manifest; ours: a one-step ScaleDeployment workflow) and measures push -> the Deployment's
spec changed in the API (a watch; one clock). Trials interleave, ours then Flux's:
event-driven (ours: POST /hooks/git; Flux: what its Receiver does) and polling at the same
interval. Prints min/median/p95/max, ours/Flux, each side's CPU seconds and peak RSS, and
where each side's time goes.

`make bench-peers` (builds Flux first); `python bench/peers/run.py [--trials 20]
[--poll-trials 20] [--interval 10] [--receiver-resources GitRepository,Kustomization]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flux import FluxPeer, GitServer, build, version
from reconciler_side import STAGES, Bench, Ours, summary, trial


def table(name: str, ours: list[float], theirs: list[float]) -> list[str]:
    ratio = statistics.median(ours) / statistics.median(theirs)
    return [
        f"{name}",
        f"  ours  {summary(ours)}",
        f"  Flux  {summary(theirs)}",
        f"  ours/Flux (median): {ratio:.2f}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="event-driven, each side")
    parser.add_argument("--poll-trials", type=int, default=20, help="polling, each side")
    parser.add_argument("--interval", type=int, default=10, help="both sides' polling, s")
    parser.add_argument(
        "--receiver-resources",
        default="GitRepository",
        help="what Flux's Receiver annotates, in order (the Receiver guide's example names"
        " the GitRepository; the Kustomization follows its new revision)",
    )
    args = parser.parse_args()
    build()
    bench = Bench.make("peers-side-")
    kubeconfig, namespace = bench.kubeconfig, bench.namespace
    work, bare, clone = bench.work, bench.bare, bench.clone
    watcher = bench.watch()
    ours: Ours | None = None
    flux: FluxPeer | None = None
    try:
        with GitServer(bare) as server:
            flux = FluxPeer(
                kubeconfig,
                bare,
                work / "flux",
                repo_url=server.url,
                receiver_resources=tuple(args.receiver_resources.split(",")),
            ).start()
            results: dict[str, dict[str, list]] = {}
            replicas = 2
            for mode, count, interval, extra in (
                ("event", args.trials, 3600, ()),
                ("event-git-client", args.trials, 3600, ("--git-client-fetch",)),
                ("poll", args.poll_trials, args.interval, ()),
            ):
                if count == 0:
                    continue
                ours = Ours(kubeconfig, server.url, clone, work / f"ours-{mode}", namespace)
                ours.interval, ours.extra = interval, extra
                ours.start()
                flux.set_mode(mode.split("-")[0], interval=args.interval)
                flux.reset_usage()
                before = ours.usage()[0]
                mine, theirs = [], []
                for _ in range(count):
                    mine.append(trial(ours, watcher, replicas, polling=mode == "poll"))
                    replicas += 1
                    flux.trial()
                    theirs.append(flux.trials[-1])
                cpu, rss = ours.usage()
                results[mode] = {"ours": mine, "flux": theirs}
                results[mode]["usage"] = [(cpu - before, rss), flux.usage()["flux"]]
                ours.stop()
                ours = None
            report(results, args)
    finally:
        watcher.stop()
        if ours is not None:
            ours.stop()
        if flux is not None:
            flux.stop()
        bench.delete()
    return 0


def report(results: dict[str, dict[str, list]], args: argparse.Namespace) -> None:
    print(
        f"peers bench: ours vs Flux {version()} (source- and kustomize-controller), one kwok"
        f" control plane, one smart-HTTP git remote on 127.0.0.1; Flux's Receiver annotates"
        f" {args.receiver_resources}; seconds from git push returning to spec.replicas changed"
    )
    for mode, title in (
        ("event", f"event-driven ({args.trials} trials each, interleaved)"),
        (
            "event-git-client",
            f"event-driven, our baseline: the daemon's --git-client-fetch, every fetch by the"
            f" git client as before issue 18's in-process fetch ({args.trials} trials each,"
            " interleaved)",
        ),
        ("poll", f"polling every {args.interval}s ({args.poll_trials} trials each)"),
    ):
        got = results.get(mode) or {}
        if not got:
            continue
        mine = [r["total"] for r in got["ours"]]
        theirs = [t.seconds for t in got["flux"]]
        print("\n".join(table(title, mine, theirs)))
        (cpu, rss), flux_usage = got["usage"]
        print(
            f"  CPU over the trials: ours {cpu:.2f}s, Flux {flux_usage.cpu_seconds:.2f}s;"
            f" peak RSS: ours {rss:.1f} MiB, Flux {flux_usage.peak_rss_mib:.1f} MiB (both"
            " controllers' peaks summed)"
        )
        stages = "  ours by stage (median s from push): " + ", ".join(
            f"{key} {statistics.median(v):.3f}"
            for key in STAGES
            if (v := [r[key] for r in got["ours"] if key in r])
        )
        print(stages)
        flux_stages = "  Flux by stage (median s from push): " + ", ".join(
            f"{key} {statistics.median(v):.3f}"
            for key in ("fetched", "applied")
            if (v := [t.stages[key] for t in got["flux"] if key in t.stages])
        )
        print(flux_stages)
    fast, baseline = results.get("event"), results.get("event-git-client")
    if fast and baseline:
        ours = statistics.median(r["total"] for r in fast["ours"])
        before = statistics.median(r["total"] for r in baseline["ours"])
        print(
            f"ours event-driven, in-process fetch vs the git client's (median): {ours:.3f}"
            f" vs {before:.3f} s ({ours / before:.2f}); target <= 0.100 s:"
            f" {'met' if ours <= 0.1 else 'NOT met'}"
        )


if __name__ == "__main__":
    sys.exit(main())
