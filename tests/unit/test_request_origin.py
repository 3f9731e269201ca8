"""Every request names reconciler, its process and (inside a step) the run, step, operation
and attempt in its User-Agent, so the API server's audit log says who did what. Checked on
real HTTP requests of the official client, against a server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kubernetes import client as k8s

from reconciler.actions.registry import KubeActions
from reconciler.engine.interface import StepContext
from reconciler.kube.client import Kube
from reconciler.kube.origin import process_identity, request_origin
from reconciler.manifest.policy import Policy
from reconciler.manifest.schema import Workflow

# what the client's discovery (DynamicClient) asks first
DISCOVERY = {
    "/api": {"kind": "APIVersions", "versions": ["v1"]},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": []},
}


impersonated: list[tuple[str, str | None]] = []  # (path, Impersonate-User) per request


@pytest.fixture
def server() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    seen: list[tuple[str, str]] = []
    impersonated.clear()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            path = self.path.split("?")[0]
            seen.append((path, self.headers.get("User-Agent", "")))
            impersonated.append((path, self.headers.get("Impersonate-User")))
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            body = json.dumps(DISCOVERY.get(path, {"data": {"K": "MQ=="}, "metadata": {}})).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_PATCH = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()
    httpd.server_close()


def one_step(name: str, action: str, namespace: str, target: str, params: dict) -> Workflow:
    return Workflow.model_validate(
        {
            "apiVersion": "reconciler.dev/v1alpha1",
            "kind": "Workflow",
            "metadata": {"name": "w"},
            "spec": {
                "steps": [
                    {
                        "name": name,
                        "action": action,
                        "target": {"namespace": namespace, "name": target},
                        "params": params,
                    }
                ]
            },
        }
    )


def kube_for(url: str) -> Kube:
    configuration = k8s.Configuration()
    configuration.host = url
    return Kube(k8s.ApiClient(configuration))


def test_requests_name_the_process_and_inside_a_step_the_run_and_step(server) -> None:
    url, seen = server
    kube = kube_for(url)
    workflow = one_step("cfg", "UpdateConfigMap", "ns", "c", {"data": {"K": "2"}})
    step = workflow.spec.steps[0]
    actions = KubeActions(kube)

    async def main() -> None:
        await kube.get("version", "/version")
        with request_origin("run/w-1"):  # a run's own requests (checkpoints, events)
            await kube.get("version", "/version")
            # a step's, from another task, at once: each task keeps its own origin
            await asyncio.gather(
                actions.capture(step, StepContext("w-1", "w", 1)),
                actions.apply(step, {"data": {"K": "1"}}, StepContext("w-1", "w", 2)),
            )
        await kube.get("version", "/version")

    asyncio.run(main())
    base = f"reconciler/0.1.0 ({process_identity()})"
    assert all(agent.startswith(base) for _, agent in seen)  # discovery included
    # discovery asks /version first too: read the last seven (the capture keeps its state)
    agents = [agent for path, agent in seen if path not in DISCOVERY][-7:]
    assert agents[0] == agents[-1] == base
    assert agents[1] == f"{base} run/w-1"
    step_agents = set(agents[2:-1])
    assert step_agents == {
        f"{base} run/w-1 step/cfg op/capture attempt/1",
        f"{base} run/w-1 step/cfg op/apply attempt/2",
    }
    applies = [a for p, a in seen if p == "/api/v1/namespaces/ns/configmaps/c" and "apply" in a]
    assert len(applies) == 2  # apply reads the current data, then patches it


def test_the_default_user_agent_is_kept_for_whoever_sets_one(server) -> None:
    url, seen = server
    kube = kube_for(url)
    kube.api.user_agent = "someone-else/1"  # the client's own setter still works
    asyncio.run(kube.get("version", "/version"))
    assert seen[-1][1] == "someone-else/1"
    Kube(kube.api)  # a second Kube on the same client keeps it too
    asyncio.run(kube.get("version", "/version"))
    assert seen[-1][1] == "someone-else/1"


def test_a_steps_calls_impersonate_its_tenant_account_and_nothing_else_does(server) -> None:
    """The API server decides what a step may do only if every call of the step, and no
    other, carries the tenant's Impersonate-User; the capture Secret stays the daemon's."""
    url, _ = server
    kube = kube_for(url)
    workflow = one_step("sec", "UpdateSecret", "shop", "s", {"data": {"K": "2"}})
    step = workflow.spec.steps[0]
    actions = KubeActions(kube, account_for=Policy().account_for)

    async def main() -> None:
        await kube.get("version", "/version")
        with request_origin("run/w-1"):
            await actions.capture(step, StepContext("w-1", "w", 1))
        await kube.get("version", "/version")

    asyncio.run(main())
    tenant = "system:serviceaccount:shop:reconciler-steps"
    calls = [(p, who) for p, who in impersonated if p not in DISCOVERY]
    assert calls[0] == ("/version", None) and calls[-1] == ("/version", None)
    step_calls = calls[1:-1]
    assert ("/api/v1/namespaces/shop/secrets/s", tenant) in step_calls
    own = [who for p, who in step_calls if p.startswith("/api/v1/namespaces/reconciler-system/")]
    assert len(own) == 2 and set(own) == {None}  # its capture and state Secrets: the daemon
    assert {who for p, who in step_calls if "/namespaces/shop/" in p} == {tenant}


def test_a_pod_names_itself_by_its_pod_name_not_the_nodes_host_name(monkeypatch) -> None:
    """With hostNetwork every pod on a node has the node's host name and pid 1: POD_NAME
    (the downward API, deploy/deployment.yaml) tells two replicas apart."""
    import os
    import socket

    monkeypatch.delenv("POD_NAME", raising=False)
    assert process_identity() == f"{socket.gethostname()}-{os.getpid()}"
    monkeypatch.setenv("POD_NAME", "reconciler-6d9f5798c-vfrpv")
    assert process_identity() == f"reconciler-6d9f5798c-vfrpv-{os.getpid()}"
