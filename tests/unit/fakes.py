"""An in-memory Actions double (the only thing unit tests replace) and small builders."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import looptime

from reconciler.engine.interface import OUTPUTS_KEY, Captured, StepContext
from reconciler.manifest.schema import StepBase, Workflow

T = TypeVar("T")


@dataclass
class Script:
    """What one step does: how long apply+wait takes, and what each attempt raises."""

    duration: float = 1.0
    errors: list[BaseException | None] = field(default_factory=list)  # per attempt
    error_in: str = "apply"  # "capture" | "apply" | "wait"
    undo_errors: list[BaseException | None] = field(default_factory=list)
    undo_duration: float = 0.5
    outputs: dict[str, Any] | None = None  # what apply returns as the step's outputs


@dataclass
class Call:
    step: str
    method: str
    start: float
    end: float | None = None


class FakeActions:
    """Keeps a fake "cluster" (a dict of values per step) so undo can be checked for real."""

    def __init__(self, scripts: dict[str, Script] | None = None) -> None:
        self.scripts = scripts or {}
        self.state: dict[str, Any] = {}
        self.calls: list[Call] = []
        self.running = 0
        self.max_running = 0
        self.applied: dict[str, StepBase] = {}  # each step as apply last saw it (resolved)
        self.matching: dict[str, list[str]] = {}  # label selector -> names (forEach)

    def _script(self, step: StepBase) -> Script:
        return self.scripts.get(step.name, Script())

    def _raise_for(self, step: StepBase, ctx: StepContext, where: str) -> None:
        script = self._script(step)
        if script.error_in == where and ctx.attempt <= len(script.errors):
            error = script.errors[ctx.attempt - 1]
            if error is not None:
                raise error

    async def capture(self, step: StepBase, ctx: StepContext) -> Captured:
        self._raise_for(step, ctx, "capture")
        return {"before": self.state.get(step.name, "original")}

    async def apply(
        self, step: StepBase, captured: Captured, ctx: StepContext
    ) -> dict[str, Any] | None:
        call = Call(step.name, "apply", asyncio.get_running_loop().time())
        self.calls.append(call)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            self._raise_for(step, ctx, "apply")
            self.state[step.name] = "changed"
            self.applied[step.name] = step
            script = self._script(step)
            await asyncio.sleep(script.duration)
            return None if script.outputs is None else {OUTPUTS_KEY: dict(script.outputs)}
        finally:
            self.running -= 1
            call.end = asyncio.get_running_loop().time()

    async def wait(self, step: StepBase, captured: Captured, ctx: StepContext) -> None:
        self._raise_for(step, ctx, "wait")

    async def undo(self, step: StepBase, captured: Captured, ctx: StepContext) -> str | None:
        call = Call(step.name, "undo", asyncio.get_running_loop().time())
        self.calls.append(call)
        script = self._script(step)
        await asyncio.sleep(script.undo_duration)
        call.end = asyncio.get_running_loop().time()
        if ctx.attempt <= len(script.undo_errors) and script.undo_errors[ctx.attempt - 1]:
            raise script.undo_errors[ctx.attempt - 1]  # type: ignore[misc]
        self.state[step.name] = captured["before"]
        return None

    async def targets(self, step: StepBase, ctx: StepContext) -> list[str]:
        """What a fan-out's selector matches: `matching[label selector]`."""
        assert step.for_each is not None and step.for_each.selector is not None
        self.calls.append(Call(step.name, "targets", asyncio.get_running_loop().time()))
        return list(self.matching.get(step.for_each.selector.label_selector, []))

    def order(self, method: str) -> list[str]:
        return [c.step for c in self.calls if c.method == method]


def run_virtual(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine on an event loop whose clock is virtual: sleeps and timeouts are
    instant, so tests of minute-long timeouts take milliseconds and never flake."""
    loop = looptime.new_event_loop(start=0, _enabled=True)
    try:
        return loop.run_until_complete(factory())
    finally:
        loop.close()


def workflow(steps: list[dict[str, Any]], **spec: Any) -> Workflow:
    """A Workflow from step dicts; steps default to ScaleDeployment on shop/app."""
    full_steps = []
    for step in steps:
        s = {"action": "ScaleDeployment", "target": {"namespace": "shop", "name": "app"}}
        if s["action"] == step.get("action", s["action"]):
            s["params"] = {"replicas": 2}
        s.update(step)
        full_steps.append(s)
    return Workflow.model_validate(
        {
            "apiVersion": "reconciler.dev/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": spec.pop("name", "wf")},
            "spec": {**spec, "steps": full_steps},
        }
    )


class FakeChecks:
    """Scripted measurements per check name: each call takes the next verdict (the last
    repeats); `values` likewise. Records when each measurement was taken (virtual time)."""

    def __init__(
        self,
        verdicts: dict[str, list[str]],
        values: dict[str, list[str]] | None = None,
        decisive: set[str] | None = None,
    ) -> None:
        self.verdicts = verdicts
        self.values = values or {}
        self.decisive = decisive or set()  # verdict "Failed!" = its failureCondition held
        self.taken: list[tuple[str, float]] = []

    async def measure(self, check: Any, step: StepBase, ctx: StepContext) -> Any:
        from reconciler.engine.record import Measurement, Verdict

        now = asyncio.get_running_loop().time()
        n = sum(1 for name, _ in self.taken if name == check.name)
        self.taken.append((check.name, now))
        script = self.verdicts[check.name]
        verdict = script[min(n, len(script) - 1)]
        values = self.values.get(check.name) or ["1"]
        value = values[min(n, len(values) - 1)]
        return Measurement(
            time=now,
            verdict=Verdict(verdict.rstrip("!")),
            value=value,
            note=f"result = {value}",
            decisive=verdict.endswith("!"),
        )

    def times(self, name: str) -> list[float]:
        return [t for n, t in self.taken if n == name]


class FakeApprovals:
    """Approvals as tests give them: `decide(step, outcome, by)` (the daemon reads git)."""

    def __init__(self) -> None:
        self.views: dict[str, Any] = {}
        self.asked: list[str] = []
        self.event = asyncio.Event()

    def decide(self, step: str, outcome: str, by: str = "alice", refused: list[str] = ()) -> None:
        from reconciler.engine.interface import ApprovalView

        who = [{"approver": by, "commit": "c0ffee" * 7, "time": 0, "comment": "ok"}]
        self.views[step] = ApprovalView(
            outcome,
            who if outcome == "approved" else [],
            who if outcome == "rejected" else [],
            list(refused),
        )
        self.event.set()

    def state(self, run_id: str, step: StepBase) -> Any:
        from reconciler.engine.interface import ApprovalView

        self.asked.append(step.name)
        return self.views.get(step.name, ApprovalView("waiting", [], [], []))

    async def changed(self, timeout: float) -> None:
        self.event.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), timeout)
