"""Exponential backoff with jitter and a cap: the one place that computes retry delays."""

from __future__ import annotations

import random

from reconciler.manifest.schema import RetryPolicy


def backoff_delay(policy: RetryPolicy, retry_number: int, rng: random.Random) -> float:
    """Delay before retry `retry_number` (1 = first retry).

    "Equal jitter": half the exponential delay is fixed, half random, so retries from many
    steps hitting one overloaded API server spread out but never collapse to zero wait.
    """
    exponential = policy.backoff * policy.factor ** (retry_number - 1)
    capped = min(policy.max_backoff, exponential)
    return capped / 2 + rng.random() * capped / 2
