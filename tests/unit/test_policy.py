"""Protected namespaces and the allowed-actions policy fail validation, at the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from reconciler.manifest.loader import load_text
from reconciler.manifest.policy import DEFAULT_PROTECTED, Policy


def wf(step: str) -> str:
    return (
        "apiVersion: reconciler.dev/v1alpha1\nkind: Workflow\nmetadata: {name: w}\nspec:\n  steps:\n"
        f"    - {step}\n"
    )


SCALE_KUBE_SYSTEM = "{name: s, action: ScaleDeployment, target: {namespace: kube-system, name: coredns}, params: {replicas: 0}}"
APPLY_INTO_OWN = (
    "{name: a, action: Apply, params: {manifest: {apiVersion: v1, kind: ConfigMap, "
    "metadata: {name: x, namespace: reconciler-system}}}}"
)


@pytest.mark.parametrize(
    ("step", "fragment", "line"),
    [
        (SCALE_KUBE_SYSTEM, "namespace 'kube-system' is protected", 6),
        (APPLY_INTO_OWN, "namespace 'reconciler-system' is protected", 6),
    ],
)
def test_protected_namespaces_fail_validation(step: str, fragment: str, line: int) -> None:
    policy = Policy(protected=frozenset([*DEFAULT_PROTECTED, "reconciler-system"]))
    result = load_text(wf(step), "w.yaml", policy)
    assert result.workflows == []
    (issue,) = result.issues
    assert fragment in issue.message and issue.line == line


def test_policy_file_limits_actions_per_namespace_and_on_nodes(tmp_path: Path) -> None:
    file = tmp_path / "policy.yaml"
    file.write_text("namespaces:\n  shop: [ScaleDeployment]\n  '*': []\nnodes: [CordonNode]\n")
    policy = Policy.load(DEFAULT_PROTECTED, file)
    ok = load_text(
        wf(
            "{name: s, action: ScaleDeployment, target: {namespace: shop, name: a}, params: {replicas: 1}}"
        ),
        "w.yaml",
        policy,
    )
    assert ok.ok
    image = load_text(
        wf(
            "{name: s, action: UpdateImage, target: {namespace: shop, name: a}, params: {container: c, image: i}}"
        ),
        "w.yaml",
        policy,
    )
    assert "does not allow UpdateImage in namespace 'shop'" in image.issues[0].message
    elsewhere = load_text(
        wf(
            "{name: s, action: ScaleDeployment, target: {namespace: other, name: a}, params: {replicas: 1}}"
        ),
        "w.yaml",
        policy,
    )
    assert "does not allow ScaleDeployment in namespace 'other'" in elsewhere.issues[0].message
    drain = load_text(wf("{name: d, action: DrainNode, target: {name: n1}}"), "w.yaml", policy)
    assert "does not allow DrainNode on nodes" in drain.issues[0].message
    assert str(drain.issues[0]).startswith("w.yaml:6:")


def test_policy_file_with_unknown_action_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "policy.yaml"
    file.write_text("namespaces:\n  shop: [ScaleDeploymnt]\n")
    with pytest.raises(ValueError, match="unknown action"):
        Policy.load(DEFAULT_PROTECTED, file)


def test_apply_of_reconcilers_own_kinds_is_refused_at_the_field() -> None:
    """A step that writes a WorkflowExecution would plant a run the next leader resumes
    with the daemon's authority."""
    step = (
        "{name: forge, action: Apply, params: {manifest: {apiVersion: reconciler.dev/v1alpha1, "
        "kind: WorkflowExecution, metadata: {name: forged}}}}"
    )
    result = load_text(wf(step), "w.yaml")
    (issue,) = result.issues
    assert "may not manage reconciler's own kinds" in issue.message
    assert issue.path[-1] == "apiVersion" and issue.line == 6


def write(tmp_path: Path, text: str) -> Path:
    file = tmp_path / "policy.yaml"
    file.write_text(text)
    return file


CLUSTER_ROLE_BINDING = (
    "{name: a, action: Apply, params: {manifest: {apiVersion: rbac.authorization.k8s.io/v1,"
    " kind: ClusterRoleBinding, metadata: {name: x%s}}}}"
)


def test_cluster_scoped_apply_is_refused_unless_the_policy_lists_the_kind(tmp_path: Path) -> None:
    """An Apply with no namespace makes a cluster-scoped object; one with a namespace on a
    cluster-scoped kind would pass as namespaced (the API server ignores the namespace)."""
    for step in (CLUSTER_ROLE_BINDING % "", CLUSTER_ROLE_BINDING % ", namespace: shop"):
        (issue,) = load_text(wf(step), "w.yaml", Policy()).issues
        assert "ClusterRoleBinding" in issue.message and "cluster.kinds" in issue.message
        assert issue.path[-1] == "kind"
    listed = Policy.load(
        DEFAULT_PROTECTED,
        write(tmp_path, "cluster: {kinds: [rbac.authorization.k8s.io/ClusterRoleBinding]}\n"),
    )
    assert load_text(wf(CLUSTER_ROLE_BINDING % ""), "w.yaml", listed).ok


def test_apply_kinds_images_and_pod_accounts_are_limited_per_namespace(tmp_path: Path) -> None:
    policy = Policy.load(
        DEFAULT_PROTECTED,
        write(
            tmp_path,
            "namespaces:\n  shop:\n    applyKinds: [ConfigMap]\n"
            "    images: [registry.example.com/ops/]\n    serviceAccountNames: [default, canary]\n",
        ),
    )

    def issues(step: str) -> list[str]:
        return [i.message for i in load_text(wf(step), "w.yaml", policy).issues]

    deployment = (
        "{name: a, action: Apply, target: {namespace: shop}, params: {manifest: "
        "{apiVersion: apps/v1, kind: Deployment, metadata: {name: d}}}}"
    )
    assert issues(deployment) == [
        f"{tmp_path / 'policy.yaml'} does not allow Apply of apps/Deployment in namespace"
        " 'shop' (allowed: ConfigMap)"
    ]
    config = deployment.replace("apps/v1", "v1").replace("Deployment", "ConfigMap")
    assert issues(config) == []
    custom = "{name: c, action: Custom, target: {namespace: shop}, params: {image: %s%s}}"
    assert issues(custom % ("registry.example.com/ops/tool:1", "")) == []
    assert (
        issues(custom % ("registry.example.com/ops/tool:1", ", serviceAccountName: canary")) == []
    )
    (wrong_image,) = issues(custom % ("evil.example/tool:1", ""))
    assert "does not allow image 'evil.example/tool:1'" in wrong_image
    (wrong_account,) = issues(
        custom % ("registry.example.com/ops/tool:1", ", serviceAccountName: ingress-nginx")
    )
    assert "as ServiceAccount 'ingress-nginx'" in wrong_account
    # the rollback Job is held to the same rules
    (rollback,) = issues(
        custom
        % ("registry.example.com/ops/t:1", ", rollback: {image: r, serviceAccountName: default}")
    )
    assert "does not allow image 'r'" in rollback


def test_without_a_policy_file_custom_pods_run_only_as_default() -> None:
    step = (
        "{name: c, action: Custom, target: {namespace: flux-system}, params: {image: i,"
        " serviceAccountName: kustomize-controller}}"
    )
    (issue,) = load_text(wf(step), "w.yaml", Policy()).issues
    assert "'flux-system' is protected" in issue.message  # controllers' namespaces too
    (issue,) = load_text(wf(step.replace("flux-system", "shop")), "w.yaml", Policy()).issues
    assert "as ServiceAccount 'kustomize-controller'" in issue.message


def test_each_step_impersonates_the_account_the_policy_names(tmp_path: Path) -> None:
    policy = Policy.load(
        DEFAULT_PROTECTED,
        write(
            tmp_path,
            "serviceAccount: steps\nnamespaces:\n  shop: {serviceAccount: shop-ops}\n  '*': []\n"
            "cluster: {serviceAccount: node-ops}\n",
        ),
        home="reconciler-home",
    )
    workflow = (
        load_text(
            wf(
                "{name: s, action: ScaleDeployment, target: {namespace: shop, name: a},"
                " params: {replicas: 1}}\n    - {name: d, action: CordonNode, target: {name: n1}}"
            ),
            "w.yaml",
            policy,
        )
        .workflows[0]
        .workflow
    )
    scale, cordon = workflow.spec.steps
    assert policy.account_for(scale) == ("shop", "shop-ops")
    assert policy.account_for(cordon) == ("reconciler-home", "node-ops")
    assert Policy().account_for(scale) == ("shop", "reconciler-steps")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("- a\n", "the document: must be a mapping, not list"),
        ("namespaces: [shop]\n", "namespaces: must be a mapping"),
        ("namespaces: {shop: {verbs: [x]}}\n", "namespaces.shop: unknown field(s) verbs"),
        ("namespaces: {shop: {actions: [Scale]}}\n", "namespaces.shop.actions: unknown action"),
        ("serviceAccount: Bad_Name\n", "serviceAccount: 'Bad_Name' is not a ServiceAccount"),
        ("cluster: {kinds: ClusterRole}\n", "cluster.kinds: must be a list of strings"),
        ("namespaces: {shop: [\n", "YAML syntax"),
    ],
)
def test_a_bad_policy_file_names_the_file_and_field(
    tmp_path: Path, text: str, fragment: str
) -> None:
    file = write(tmp_path, text)
    with pytest.raises(ValueError) as err:
        Policy.load(DEFAULT_PROTECTED, file)
    assert str(err.value).startswith(str(file)) and fragment in str(err.value)


def test_without_a_policy_file_apply_manages_configmaps_only() -> None:
    """What deploy/tenant/ grants: a Deployment applied over another could make it
    privileged or mount the node's root."""
    step = (
        "{name: a, action: Apply, target: {namespace: shop}, params: {manifest: "
        "{apiVersion: apps/v1, kind: Deployment, metadata: {name: d}}}}"
    )
    (issue,) = load_text(wf(step), "w.yaml", Policy()).issues
    assert "does not allow Apply of apps/Deployment in namespace 'shop'" in issue.message
    config = step.replace("apps/v1", "v1").replace("Deployment", "ConfigMap")
    assert load_text(wf(config), "w.yaml", Policy()).ok


def test_record_previous_is_refused_on_a_secret_step() -> None:
    step = (
        "{name: s, action: UpdateSecret, target: {namespace: shop, name: db},"
        " params: {data: {K: v}}, recordPrevious: true}"
    )
    (issue,) = load_text(wf(step), "w.yaml").issues
    assert "never recorded" in issue.message and issue.path[-1] == "recordPrevious"


def test_docs_policy_md_describes_every_field_and_its_example_loads(tmp_path: Path) -> None:
    from reconciler.manifest.policy_file import CLUSTER, PER_NAMESPACE, TOP

    text = (Path(__file__).resolve().parents[2] / "docs" / "policy.md").read_text()
    table = text.split("## Fields", 1)[1].split("\n\n", 2)[1]
    rows = {line.split("|")[1].strip().strip("`") for line in table.splitlines()[2:]}
    expected = (
        TOP | {f"namespaces.<ns>.{f}" for f in {"actions"}} | {f"cluster.{f}" for f in CLUSTER}
    )
    assert expected <= rows, expected - rows
    assert set(TOP) | {"actions"} >= PER_NAMESPACE  # the per-namespace fields are top-level ones
    example = tmp_path / "policy.yaml"
    example.write_text(text.split("```yaml\n", 1)[1].split("```", 1)[0])
    policy = Policy.load(DEFAULT_PROTECTED, example)
    assert policy.namespaces is not None and set(policy.namespaces) == {"shop", "payments", "*"}


ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAYR2oQAR6BopyNA2Gc3LDEbrbOaV2VzHeXKF130RjyH"
ED25519_B = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOIWTDcIJ1vm2kN/8Q0tTc6SG8aqkSMcv9nM4LYeuGdQ"


def test_the_approvers_section_names_people_by_their_keys_and_groups_of_them(
    tmp_path: Path,
) -> None:
    file = write(
        tmp_path,
        f"approvers:\n  people:\n    alice@example.com: ['{ED25519} alice@laptop']\n"
        f"    bob.smith+ops@example.com: ['{ED25519_B}']\n"
        "  groups:\n    sre-leads: [alice@example.com, bob.smith+ops@example.com]\n",
    )
    approvers = Policy.load(DEFAULT_PROTECTED, file).approvers
    assert approvers.people == {  # the comment is not part of the key
        "alice@example.com": (ED25519,),
        "bob.smith+ops@example.com": (ED25519_B,),
    }
    assert approvers.groups == {
        "sre-leads": frozenset({"alice@example.com", "bob.smith+ops@example.com"})
    }
    assert approvers.expand(["sre-leads", "alice@example.com", "carol"]) == (
        frozenset({"alice@example.com", "bob.smith+ops@example.com"}),
        ["carol"],
    )
    assert Policy.load(DEFAULT_PROTECTED, None).approvers.people == {}  # default: nobody
    assert Policy.load(DEFAULT_PROTECTED, write(tmp_path, "approvers:\n")).approvers.groups == {}


PERSON = f"approvers:\n  people:\n    alice@example.com: ['{ED25519}']\n"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("approvers: [alice]\n", "1:1: approvers: must be a mapping, not list"),
        ("approvers: {poeple: {}}\n", "approvers: unknown field(s) poeple; did you mean 'people'?"),
        (
            "approvers:\n  people:\n    alice@example.com: ssh-ed25519\n",
            "3:5: approvers.people.alice@example.com: must be a list of SSH public keys",
        ),
        (
            "approvers:\n  people:\n    alice@example.com: [AAAAC3NzaC1]\n",
            "approvers.people.alice@example.com[0]: not an SSH public key: expected '<type> <base64>",
        ),
        (
            "approvers:\n  people:\n    alice@example.com: ['ssh-dss AAAAB3NzaC1kc3M=']\n",
            "'ssh-dss' is not an SSH key type git can verify",
        ),
        (
            "approvers:\n  people:\n    alice@example.com: ['ssh-ed25519 AAAA!!']\n",
            "the key is not valid base64",
        ),
        (
            f"approvers:\n  people:\n    alice@example.com: ['{ED25519.replace('ed25519', 'rsa', 1)}']\n",
            "the key's data is not a ssh-rsa key",
        ),
        (
            f"approvers:\n  people:\n    'Alice Smith': ['{ED25519}']\n",
            "3:5: approvers.people.Alice Smith: 'Alice Smith' cannot be an approver's name",
        ),
        (
            f"approvers:\n  people:\n    'a,b': ['{ED25519}']\n",
            "'a,b' cannot be an approver's name",
        ),
        (f"approvers:\n  people:\n    '\"a\"': ['{ED25519}']\n", "cannot be an approver's name"),
        (
            PERSON + f"    bob@example.com: ['{ED25519}']\n",
            "4:23: approvers.people.bob@example.com[0]: the same key as alice@example.com's",
        ),
        (
            PERSON + "  groups:\n    ops: [alice@example.com, bob@example.com]\n",
            "5:30: approvers.groups.ops[1]: 'bob@example.com' is not a person under approvers.people;"
            " did you mean 'alice@example.com'?",
        ),
        (
            PERSON + "  groups:\n    alice@example.com: [alice@example.com]\n",
            "approvers.groups.alice@example.com: is also a person under approvers.people",
        ),
        (
            PERSON + "  groups:\n    a: [alice@example.com]\n    b: [a]\n",
            "approvers.groups.b[0]: 'a' is a group: a group lists people, not other groups",
        ),
        (PERSON + "  groups:\n    ops: []\n", "approvers.groups.ops: must be a list of people"),
    ],
)
def test_a_bad_approvers_section_names_the_file_line_and_field(
    tmp_path: Path, text: str, fragment: str
) -> None:
    file = write(tmp_path, text)
    with pytest.raises(ValueError) as err:
        Policy.load(DEFAULT_PROTECTED, file)
    assert str(err.value).startswith(f"{file}:") and fragment in str(err.value), str(err.value)
    assert "\n" not in str(err.value)
