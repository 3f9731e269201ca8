"""What the Kubernetes API answered, as types: callers catch `Conflict`, not a status code
found in a chained exception. Each error carries the HTTP status (0: no answer), the API's
reason (`AlreadyExists`, `NotFound`, ...) and a message that names the object.

This module only says what happened. Whether that means "retry" or "fail the step" is
decided by its users: actions/errors.py for steps, each cluster/ module for its own writes.
"""

from __future__ import annotations

import json
from typing import Any

import urllib3.exceptions
from kubernetes.client.exceptions import ApiException


class KubeError(Exception):
    """A request failed. `what` names the object ("deployment shop/web")."""

    def __init__(self, what: str, message: str, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.what = what
        self.status = status
        self.reason = reason


class NotFound(KubeError):
    """404: the object (or its kind) does not exist."""


class Forbidden(KubeError):
    """403: RBAC, an admission webhook or a terminating namespace said no."""


class Conflict(KubeError):
    """409: a stale resourceVersion, or the object already exists (reason AlreadyExists)."""


class Gone(KubeError):
    """410: a list continue token or watch resourceVersion too old."""


class TooManyRequests(KubeError):
    """429: API priority and fairness, or an eviction a PodDisruptionBudget blocks."""


class Unreachable(KubeError):
    """No answer, or the API server is restarting (502/503/504): try again later."""


class ServerError(KubeError):
    """500: the API server failed; may succeed later."""


class Fenced(KubeError):
    """Not sent: this process may no longer write (its lease may have expired)."""


class Rejected(KubeError):
    """Any other answer (400, 422 Invalid, 405, ...), or a request that could not be made."""


# May succeed if sent again later, unchanged (or after re-reading the object, for 409).
RETRYABLE: tuple[type[KubeError], ...] = (Conflict, Gone, TooManyRequests, Unreachable, ServerError)
_BY_STATUS: dict[int, type[KubeError]] = {
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    429: TooManyRequests,
    500: ServerError,
    502: Unreachable,
    503: Unreachable,
    504: Unreachable,
}


def from_exception(err: BaseException, what: str) -> KubeError:
    """The typed error for whatever the official client (or urllib3 under it) raised."""
    if isinstance(err, KubeError):
        return err
    if isinstance(err, ApiException):
        status = int(err.status or 0)
        detail = _body(err)
        reason = str(detail.get("reason") or err.reason or "")
        message = str(detail.get("message") or err.reason or "error")
        cls = _BY_STATUS.get(status, Unreachable if status == 0 else Rejected)
        if cls is NotFound:
            text = f"{what} not found"
        elif cls is Forbidden:
            text = f"forbidden to act on {what}: {message}"
        else:
            text = f"{what}: HTTP {status}: {message}"
        return cls(what, text, status, reason)
    if isinstance(err, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError, OSError)):
        return Unreachable(what, f"{what}: cannot reach the API server{_at(err)}: {cause(err)}")
    return Rejected(what, f"{what}: {type(err).__name__}: {err}")


PLAIN_WORDS = {
    "[Errno 111] Connection refused": "connection refused (nothing listens there)",
    "[Errno -2] Name or service not known": "unknown host name",
    "[Errno -3] Temporary failure in name resolution": "the host name cannot be resolved",
}


def cause(err: BaseException) -> str:
    """Why a request got no answer, in a few words (urllib3 nests the reason two deep:
    MaxRetryError -> NewConnectionError -> "[Errno 111] Connection refused")."""
    if isinstance(err, urllib3.exceptions.MaxRetryError) and err.reason is not None:
        return cause(err.reason)
    if isinstance(err, urllib3.exceptions.NewConnectionError):  # a ConnectTimeoutError too
        text = str(err)
        marker = "Failed to establish a new connection: "
        reason = text.split(marker, 1)[1] if marker in text else text
        return PLAIN_WORDS.get(reason, reason)
    if isinstance(err, urllib3.exceptions.ConnectTimeoutError):
        return "connecting timed out"
    if isinstance(err, urllib3.exceptions.ReadTimeoutError):
        return "no answer in time (read timed out)"
    if isinstance(err, urllib3.exceptions.SSLError):
        return f"TLS failed: {err}"
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _at(err: BaseException) -> str:
    """ at host:port, when urllib3 says which server it tried."""
    pool = getattr(err, "pool", None)
    host, port = getattr(pool, "host", None), getattr(pool, "port", None)
    return f" at {host}:{port}" if host else ""


def _body(err: ApiException) -> dict[str, Any]:
    """The Status object the API server sent, if any (its message names the field)."""
    body = getattr(err, "body", None)
    if not body:
        return {}
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return {"message": str(body)[:300]}
    return data if isinstance(data, dict) else {}
