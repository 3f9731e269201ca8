"""The kube-apiserver's audit log as the witness of what reconciler did to the cluster.

Every request reconciler makes names its process, run, step, operation and attempt in its
User-Agent (reconciler/kube/origin.py), e.g.
    reconciler/0.1.0 (host-4242) run/crashy-0a1b2c3d4e step/s3 op/apply attempt/1
and the API server records each request with that User-Agent, the verb, the object, the
response code and its timestamps (Metadata level: never a body). So the tests count what a
daemon really sent, per step and per process, 409s included, instead of inferring it from
the objects' generation (which a patch to the same value does not move) or from the
engine's own bookkeeping.

`check_applied_once` is the crash tests' oracle: given the processes ("lives") that ran a
workflow and the checkpoint each left behind, it fails when a step already Succeeded in a
checkpoint is written again by a later process, when a step is re-applied without having
been interrupted after its capture, or when one process sends the same write twice.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from kubehelp import execution
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from reconciler.formats.packing import unpack

MUTATING = {"create", "update", "patch", "delete", "deletecollection"}
STEP_OPS = {"capture", "apply", "wait"}  # undo is judged separately (rollback)
_AGENT = re.compile(
    r"^reconciler/\S+ \((?P<identity>[^)]*)\)"
    r"(?: run/(?P<run>\S+))?(?: step/(?P<step>\S+))?(?: op/(?P<op>\S+))?"
    r"(?: attempt/(?P<attempt>\d+))?"
)


@dataclass(frozen=True)
class Request:
    verb: str
    resource: str  # with its subresource: "pods/eviction", "workflowexecutions/status"
    namespace: str | None
    name: str | None
    code: int
    received: datetime
    completed: datetime
    pid: int | None
    run: str | None
    step: str | None
    op: str | None
    attempt: int | None
    identity: str = ""  # host-pid of the process (a pod's name and 1 in a container)

    @property
    def mutating(self) -> bool:
        return self.verb in MUTATING

    @property
    def target(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else str(self.name)
        return f"{self.resource} {where}"

    def __str__(self) -> str:
        return (
            f"{self.received:%H:%M:%S.%f} pid {self.pid} {self.step}/{self.op}#{self.attempt}"
            f" {self.verb} {self.target} -> {self.code}"
        )


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def parse(line: str) -> Request | None:
    """One audit event, if it is the completion of a request reconciler made."""
    try:
        event = json.loads(line)
    except ValueError:
        return None  # a line cut short by rotation
    if event.get("stage") not in ("ResponseComplete", "Panic"):
        return None
    agent = _AGENT.match(event.get("userAgent") or "")
    if agent is None:
        return None
    ref = event.get("objectRef") or {}
    resource = ref.get("resource", "")
    if ref.get("subresource"):
        resource += "/" + ref["subresource"]
    identity = agent["identity"]
    pid = identity.rsplit("-", 1)[-1]
    return Request(
        verb=event.get("verb", ""),
        resource=resource,
        namespace=ref.get("namespace"),
        name=ref.get("name"),
        code=int((event.get("responseStatus") or {}).get("code") or 0),
        received=_time(event["requestReceivedTimestamp"]),
        completed=_time(event["stageTimestamp"]),
        pid=int(pid) if pid.isdigit() else None,
        run=agent["run"],
        step=agent["step"],
        op=agent["op"],
        attempt=int(agent["attempt"]) if agent["attempt"] else None,
        identity=identity,
    )


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _files(self) -> list[Path]:
        # the live file and the rotated ones (audit-<time>.log): a busy suite rotates it
        return sorted(self.path.parent.glob("audit*.log"), key=lambda p: p.stat().st_mtime)

    def requests(self, needle: str) -> list[Request]:
        """reconciler's requests whose audit line contains `needle` (a run id, a pid), in
        the order the API server received them."""
        found = []
        for path in self._files():
            with path.open(errors="replace") as f:
                for line in f:
                    if needle in line:
                        request = parse(line)
                        if request is not None:
                            found.append(request)
        return sorted(found, key=lambda r: r.received)

    def of_run(self, run_id: str) -> list[Request]:
        return [r for r in self.requests(f"run/{run_id}") if r.run == run_id]

    def settle(self, api: k8s.ApiClient, timeout: float = 30) -> None:
        """Return once every request made before this call is in the log: make one more
        (a GET of a name that exists nowhere) and wait for its line."""
        marker = f"audit-marker-{uuid.uuid4().hex[:12]}"
        try:
            k8s.CoreV1Api(api).read_namespaced_config_map(marker, "default")
        except ApiException as err:
            assert err.status == 404, err
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for path in self._files():
                if marker in path.read_text(errors="replace"):
                    return
            time.sleep(0.2)
        raise AssertionError(f"the audit log never recorded {marker} within {timeout}s")


@dataclass
class Life:
    """One daemon process that worked on the run, and the checkpoint it left behind."""

    pid: int
    name: str
    done: set[str] = field(default_factory=set)  # steps Succeeded in its last checkpoint
    interrupted: set[str] = field(default_factory=set)  # captured, not finished
    undone: set[str] = field(default_factory=set)  # undos finished in its last checkpoint
    phase: str | None = None  # the run's phase in that checkpoint

    def __str__(self) -> str:
        return f"{self.name} (pid {self.pid})"


def checkpoint_of(api: k8s.ApiClient, run_id: str) -> dict[str, Any]:
    """The run record packed in the WorkflowExecution's status ({} before the first)."""
    status = (execution(api, run_id) or {}).get("status") or {}
    return unpack(status["record"]) if status.get("record") else {}


def ended(life: Life, record: dict[str, Any]) -> Life:
    """Fill in what `life` left in the checkpoint (`record`, read after it died)."""
    for name, step in (record.get("steps") or {}).items():
        if step.get("phase") == "Succeeded":
            life.done.add(name)
        elif step.get("captured") is not None:
            life.interrupted.add(name)
    for entry in (record.get("rollback") or {}).get("entries") or []:
        if entry.get("finished") is not None:
            life.undone.add(entry["step"])
    life.phase = record.get("phase")
    return life


def writes_by_step(requests: list[Request]) -> dict[tuple[str, str, int], list[Request]]:
    """(step, op kind, pid) -> the mutating requests; op kind is 'apply' or 'undo'."""
    out: dict[tuple[str, str, int], list[Request]] = defaultdict(list)
    for r in requests:
        if r.mutating and r.step is not None and r.pid is not None:
            kind = "undo" if r.op == "undo" else "capture" if r.op == "capture" else "apply"
            out[(r.step, kind, r.pid)].append(r)
    return out


def check_applied_once(
    requests: list[Request], lives: list[Life], *, one_write_each: bool = True
) -> dict[str, list[int]]:
    """Fail unless every step was applied once, as far as the checkpoints allow:

    - every step write comes from one of `lives`;
    - a step Succeeded in the checkpoint a process left is never written by a later one
      (capture, apply or wait), and an undo finished in it is never sent again;
    - a step is applied by a second process only if the one before left it interrupted
      after its capture (its apply may or may not have landed: at most one re-apply each);
    - a capture Secret is made once in all: a process killed after making it but before its
      checkpoint said so captures again, and that create must be refused (409, the same
      content, adopted); a capture already in a checkpoint is never made again;
    - with `one_write_each`, no process sends the same write (verb, object) twice within
      one step attempt (a drain retrying 429s does, so failover tests turn it off).

    Returns, per step, the number of apply writes each life made (for the report)."""
    pids = {life.pid: i for i, life in enumerate(lives)}
    writes = writes_by_step(requests)
    strangers = [r for r in requests if r.mutating and r.pid not in pids]
    assert not strangers, "writes from a process that is not one of the lives:\n" + "\n".join(
        map(str, strangers[:10])
    )
    problems: list[str] = []
    steps = sorted({step for step, _, _ in writes})
    counts: dict[str, list[int]] = {}
    for step in steps:
        counts[step] = [len(writes.get((step, "apply", life.pid), [])) for life in lives]
        applied_in = [i for i, life in enumerate(lives) if writes.get((step, "apply", life.pid))]
        for i in applied_in[1:]:
            if step not in lives[i - 1].interrupted:
                problems.append(
                    f"step {step} re-applied by {lives[i]} though {lives[i - 1]} did not leave it"
                    f" interrupted: {[str(r) for r in writes[(step, 'apply', lives[i].pid)]]}"
                )
        captures = [r for life in lives for r in writes.get((step, "capture", life.pid), [])]
        made: dict[str, int] = defaultdict(int)
        for r in captures:
            made[r.target] += r.code < 300
        if any(n > 1 for n in made.values()):
            problems.append(f"step {step} captured twice: {[str(r) for r in captures]}")
        for i, life in enumerate(lives):
            checkpointed = set().union(*(lv.interrupted | lv.done for lv in lives[:i]))
            if step in checkpointed and writes.get((step, "capture", life.pid)):
                problems.append(
                    f"step {step} captured again by {life} though its capture was in the"
                    f" checkpoint: {[str(r) for r in writes[(step, 'capture', life.pid)]]}"
                )
        for i, life in enumerate(lives):
            earlier_done = set().union(*(lv.done for lv in lives[:i]))
            earlier_undone = set().union(*(lv.undone for lv in lives[:i]))
            mine = writes.get((step, "apply", life.pid), []) + writes.get(
                (step, "capture", life.pid), []
            )
            if step in earlier_done and mine:
                problems.append(
                    f"step {step} was Succeeded in the checkpoint, yet {life} wrote again:"
                    f" {[str(r) for r in mine]}"
                )
            undos = writes.get((step, "undo", life.pid), [])
            if step in earlier_undone and undos:
                problems.append(
                    f"the undo of {step} was finished in the checkpoint, yet {life} sent it"
                    f" again: {[str(r) for r in undos]}"
                )
            if one_write_each:
                for kind in ("apply", "undo"):
                    seen: set[tuple[Any, ...]] = set()
                    for r in writes.get((step, kind, life.pid), []):
                        key = (r.op, r.attempt, r.verb, r.target)
                        if key in seen:
                            problems.append(f"{life} sent the same write twice: {r}")
                        seen.add(key)
    assert not problems, "\n".join(problems)
    return counts


def step_spans(requests: list[Request]) -> dict[str, tuple[datetime, datetime]]:
    """Per step: from the first request of any of its operations to the end of its last,
    as the API server saw them (undos excluded)."""
    spans: dict[str, tuple[datetime, datetime]] = {}
    for r in requests:
        if r.step is None or r.op == "undo":
            continue
        first, last = spans.get(r.step, (r.received, r.completed))
        spans[r.step] = (min(first, r.received), max(last, r.completed))
    return spans


def peak_overlap(spans: list[tuple[datetime, datetime]]) -> int:
    """The most spans open at one instant; one ending as another starts is not overlap."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    peak = now = 0
    for _, delta in events:  # at equal times -1 sorts first
        now += delta
        peak = max(peak, now)
    return peak
