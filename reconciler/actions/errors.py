"""Where a Kubernetes error becomes the engine's: the one mapping from kube/errors.py to
TransientError (the engine retries the step's attempt) or PermanentError (the step fails)."""

from __future__ import annotations

from reconciler.engine.errors import ActionError, PermanentError, TransientError
from reconciler.kube.errors import RETRYABLE, KubeError


def engine_error(err: KubeError) -> ActionError:
    """409 conflicts, 410, 429, 5xx and no answer may succeed later; 403, 404, 422 and the
    rest cannot. The message is the kube error's, which names the object."""
    if isinstance(err, RETRYABLE):
        return TransientError(str(err))
    return PermanentError(str(err))
