"""The one retry loop: permanent errors never retried, limits, deadlines, jitter bounds."""

from __future__ import annotations

import asyncio
import random

import pytest

from reconciler.attempt import Backoff, attempt


class FakeTimer:
    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


class Flaky(Exception):
    pass


class Broken(Exception):
    pass


def failing(errors: list[Exception]):
    calls: list[int] = []

    async def once(n: int) -> str:
        calls.append(n)
        if errors:
            raise errors.pop(0)
        return "ok"

    return once, calls


def run(coro):
    return asyncio.run(coro)


def test_retries_retryable_errors_then_returns() -> None:
    once, calls = failing([Flaky(), Flaky()])
    timer = FakeTimer()
    assert run(attempt(once, retryable=lambda e: isinstance(e, Flaky), timer=timer)) == "ok"
    assert calls == [1, 2, 3]
    assert len(timer.sleeps) == 2


def test_a_permanent_error_is_never_retried() -> None:
    once, calls = failing([Broken()])
    with pytest.raises(Broken):
        run(attempt(once, retryable=lambda e: isinstance(e, Flaky), timer=FakeTimer()))
    assert calls == [1]


def test_retry_limit_then_the_last_error() -> None:
    once, calls = failing([Flaky("1"), Flaky("2"), Flaky("3"), Flaky("4")])
    with pytest.raises(Flaky, match="3"):
        run(attempt(once, retryable=lambda e: True, retries=2, timer=FakeTimer()))
    assert calls == [1, 2, 3]


def test_no_retry_starts_past_the_deadline() -> None:
    once, calls = failing([Flaky()] * 100)
    timer = FakeTimer()
    backoff = Backoff(initial=1, factor=2, cap=4)
    with pytest.raises(Flaky):
        run(attempt(once, retryable=lambda e: True, deadline=10, backoff=backoff, timer=timer))
    assert timer.t <= 10
    assert len(calls) == len(timer.sleeps) + 1


def test_equal_jitter_stays_between_half_and_the_capped_delay() -> None:
    rng = random.Random(1)
    backoff = Backoff(initial=1, factor=3, cap=5)
    for n, full in [(1, 1), (2, 3), (3, 5), (9, 5)]:
        for _ in range(50):
            assert full / 2 <= backoff.delay(n, rng) <= full


def test_on_retry_sees_each_failure_before_its_wait() -> None:
    once, _ = failing([Flaky("a"), Flaky("b")])
    seen: list[tuple[int, str]] = []

    async def note(n: int, err: Exception, delay: float) -> None:
        seen.append((n, str(err)))

    run(attempt(once, retryable=lambda e: True, timer=FakeTimer(), on_retry=note))
    assert seen == [(1, "a"), (2, "b")]
