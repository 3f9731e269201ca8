"""After the real node stops, the host is as it was before it started (issue 14): no process
of its binaries or naming its folder, no mount, no iptables chain, no cgroup, nothing in
/run/containerd or /var/log/containers that was not there, and its folder gone. Runs late
(zz) because it stops the session's node."""

from __future__ import annotations

from kubehelp import api, wait_for  # noqa: F401  (fixture)
from kubernetes import client as k8s
from realnode import LABEL, TAINT, RealNode, jobs_image


def test_the_real_node_leaves_the_host_as_it_found_it(api, namespace, real_node: RealNode) -> None:
    # a pod that is running when the node stops: its sandbox, mounts and cgroups are live
    core = k8s.CoreV1Api(api)
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "still-running"},
            "spec": {
                "nodeSelector": {LABEL[0]: LABEL[1]},
                "tolerations": [{"key": TAINT["key"], "operator": "Exists"}],
                "containers": [{"name": "c", "image": jobs_image(), "command": ["sleep", "600"]}],
            },
        },
    )
    wait_for(
        lambda: core.read_namespaced_pod("still-running", namespace).status.phase == "Running",
        60,
        "a pod running on the real node",
    )
    real_node.stop()
    undone = real_node.undone
    assert undone["mounts"] > 0 and undone["cgroups"] > 0, undone  # there was something to undo
    assert real_node.host_changes() == []
