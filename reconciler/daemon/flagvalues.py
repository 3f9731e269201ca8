"""What a flag or its environment variable may say, parsed with messages a person can act
on: durations as Flux and kubectl write them, counts, switches; and a refused variable
kept for the command to report (BadVariable) rather than failing every command."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from reconciler.cluster.lease import FENCE_MARGIN, MIN_DURATION, RETRY
from reconciler.manifest.durations import parse_duration

SWITCH_ON = ("1", "true", "yes", "on")
SWITCH_OFF = ("", "0", "false", "no", "off")


def seconds(text: str) -> float:
    """A time flag: a duration as Flux and kubectl write it (`30s`, `1m`, `1h30m`) or a
    number of seconds (`30`, `0.5`)."""
    try:
        value = float(text)
    except ValueError:
        try:
            return parse_duration(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a duration such as 30s, 1m or 1h30m (or seconds), got {text!r}"
            ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text!r}")
    return value


def lease_seconds(text: str) -> float:
    """--lease-duration: long enough for a renewal to land before writes fence."""
    value = seconds(text)
    if value < MIN_DURATION:
        raise argparse.ArgumentTypeError(
            f"must be at least {MIN_DURATION:g}s: writes stop {FENCE_MARGIN:g}s before an"
            f" unrenewed lease could expire, and it is renewed every {RETRY:g}s"
        )
    return value


def count(text: str) -> int:
    """A limit: a whole number, 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text!r}")
    return value


def history(text: str) -> int | None:
    """--execution-history: a count, or 'all'."""
    if text == "all":
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'all', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


@dataclass(frozen=True)
class BadVariable:
    """An environment variable whose value a setting refuses. Kept as the setting's
    default instead of failing while the parser is built (which would break every command,
    --version included); the daemon reports it, unless the flag itself was given."""

    variable: str
    value: str
    reason: str

    def __str__(self) -> str:
        return f"{self.variable}={self.value!r}: {self.reason}; fix the value or unset it"


def switch(variable: str, value: str | None) -> bool | BadVariable:
    """A switch's variable: on, off, or refused."""
    if value is None or value.lower() in SWITCH_OFF:
        return False
    if value.lower() in SWITCH_ON:
        return True
    return BadVariable(variable, value, "expected 1 or true (on), 0 or false (off)")
