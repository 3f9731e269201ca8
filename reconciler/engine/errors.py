"""The error taxonomy the engine acts on (docs/error-handling.md).

Actions raise TransientError (retry with backoff) or PermanentError (fail the step now).
Anything else an action raises is a bug or an unforeseen condition: treated as permanent,
because retrying an unknown failure against a production cluster is the riskier choice.
"""

from __future__ import annotations

from reconciler.engine.record import ErrorKind


class ActionError(Exception):
    """Base class; the message must name the resource and what was wrong."""

    kind: ErrorKind = ErrorKind.PERMANENT


class TransientError(ActionError):
    """API 429/5xx, connection failures, conflicts: may succeed if tried again."""

    kind = ErrorKind.TRANSIENT


class PermanentError(ActionError):
    """403/404/422, a missing container, an invalid parameter: trying again cannot help.

    `changed` says the action had already changed something before failing (a drain that
    cordoned the node, then met a pod it may not evict), so rollback must undo the step.
    """

    kind = ErrorKind.PERMANENT

    def __init__(self, message: str, *, changed: bool = False) -> None:
        super().__init__(message)
        self.changed = changed


def classify(error: BaseException) -> ErrorKind:
    if isinstance(error, ActionError):
        return error.kind
    return ErrorKind.PERMANENT


def describe(error: BaseException) -> str:
    text = str(error).strip()
    if isinstance(error, ActionError):
        return text or type(error).__name__
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
