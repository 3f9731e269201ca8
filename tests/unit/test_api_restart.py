"""A restarted API server answers before its RBAC cache is synced: impersonated requests
(every step's) get 403 for a moment. Found by the outage e2e test; here on virtual time."""

from __future__ import annotations

import pytest
from fakes import run_virtual
from kubernetes import client as k8s

from reconciler.kube.client import Kube
from reconciler.kube.errors import Forbidden, Unreachable


def answers(*outcomes: object):
    """A client call that raises (or returns) each outcome in turn."""
    queue = list(outcomes)

    def call() -> object:
        outcome = queue.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return call


def test_a_403_just_after_an_outage_is_tried_again() -> None:
    kube = Kube(k8s.ApiClient())
    down = Unreachable("pods", "cannot reach the API server")
    denied = Forbidden("pods", "pods is forbidden: User ... cannot list", 403, "Forbidden")
    fn = answers(down, down, denied, denied, {"items": []})
    assert run_virtual(lambda: kube.call("pods", fn)) == {"items": []}


def test_a_403_without_an_outage_is_the_answer() -> None:
    kube = Kube(k8s.ApiClient())
    denied = Forbidden("pods", "pods is forbidden", 403, "Forbidden")
    with pytest.raises(Forbidden):
        run_virtual(lambda: kube.call("pods", answers(denied, {"items": []})))
