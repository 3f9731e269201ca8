"""Every rule of the manifest: each bad input gets file:line:column, the field and a message."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from reconciler.manifest import yamlsource
from reconciler.manifest.loader import load_paths, load_text

HEAD = """\
apiVersion: reconciler.dev/v1alpha1
kind: Workflow
metadata:
  name: wf
spec:
"""


def doc(spec_body: str) -> str:
    return HEAD + textwrap.indent(textwrap.dedent(spec_body), "  ")


VALID = doc(
    """\
    maxConcurrent: 2
    steps:
      - name: scale-up
        action: ScaleDeployment
        target: {namespace: shop, name: checkout}
        params: {replicas: 6}
    """
)


def test_valid_manifest_loads_with_identity() -> None:
    result = load_text(VALID, "wf.yaml")
    assert result.issues == []
    (loaded,) = result.workflows
    assert loaded.name == "wf" and loaded.line == 1
    assert loaded.run_id == f"wf-{loaded.digest[:10]}"
    assert loaded.workflow.spec.max_concurrent == 2


STEP = "- name: s\n  action: ScaleDeployment\n  target: {namespace: shop, name: app}\n"

# (spec body, expected line, field path, message fragment)
CASES = [
    ("maxConcurent: 2\nsteps: []\n", 6, "spec.maxConcurent", "did you mean 'maxConcurrent'"),
    (
        "steps:\n" + textwrap.indent(STEP.replace("ScaleDeployment", "ScaleDeploymnt"), "  "),
        8,
        "spec.steps[0].action",
        "unknown action 'ScaleDeploymnt'; did you mean 'ScaleDeployment'",
    ),
    (
        "steps:\n  - name: s\n    target: {namespace: shop, name: app}\n",
        7,
        "spec.steps[0]",
        "missing required field 'action'",
    ),
    (
        "steps:\n" + textwrap.indent(STEP + "  params: {replicas: '6'}\n", "  "),
        10,
        "spec.steps[0].params.replicas",
        'the string "6": remove the quotes',
    ),
    (
        "steps:\n" + textwrap.indent(STEP + "  params: {replicas: 6}\n  dependOn: [x]\n", "  "),
        11,
        "spec.steps[0].dependOn",
        "did you mean 'dependsOn'",
    ),
    (
        "steps:\n" + textwrap.indent(STEP + "  params: {replicas: 6}\n  timeout: 30\n", "  "),
        11,
        "spec.steps[0].timeout",
        "duration must be a string",
    ),
    (
        "steps:\n" + textwrap.indent(STEP + "  params: {}\n", "  "),
        10,
        "spec.steps[0].params.replicas",
        "missing required field 'replicas'",
    ),
    (
        "steps:\n" + textwrap.indent(STEP + "  params: {replicas: -1}\n", "  "),
        10,
        "spec.steps[0].params.replicas",
        "greater than or equal to 0",
    ),
    (
        "steps:\n  - name: cm\n    action: UpdateConfigMap\n    target: {namespace: a, name: b}\n"
        "    params: {data: {TTL: 30}}\n",
        10,
        "spec.steps[0].params.data.TTL",
        'quote it, e.g. "30"',
    ),
    (
        "steps:\n"
        + textwrap.indent(
            STEP.replace("name: s", "name: ../etc") + "  params: {replicas: 1}\n", "  "
        ),
        7,
        "spec.steps[0].name",
        "not a valid name",
    ),
    ("steps: []\n", 6, "spec.steps", "at least one step"),
    (
        "steps:\n"
        + textwrap.indent(
            STEP + "  params: {replicas: 1}\n" + STEP + "  params: {replicas: 1}\n", "  "
        ),
        11,
        "spec.steps[1].name",
        "duplicate step name 's'",
    ),
    (
        "steps:\n"
        + textwrap.indent(STEP + "  params: {replicas: 1}\n  dependsOn: [scale]\n", "  "),
        11,
        "spec.steps[0].dependsOn[0]",
        "unknown step 'scale'",
    ),
    (
        "steps:\n" + textwrap.indent(STEP + "  params: {replicas: 1}\n  dependsOn: [s]\n", "  "),
        11,
        "spec.steps[0].dependsOn[0]",
        "depends on itself",
    ),
    (
        "steps:\n  - {name: a, action: CordonNode, target: {name: n}, dependsOn: [c]}\n"
        "  - {name: b, action: CordonNode, target: {name: n}, dependsOn: [a]}\n"
        "  - {name: c, action: CordonNode, target: {name: n}, dependsOn: [b]}\n",
        8,
        "spec.steps[1].dependsOn",
        "dependency cycle: a -> b -> c -> a",
    ),
    (
        "steps:\n  - {name: a, action: CordonNode, target: {namespace: x, name: n}}\n",
        7,
        "spec.steps[0].target.namespace",
        "cluster-scoped",
    ),
    (
        "steps:\n  - {name: a, action: ScaleDeployment, target: {namespace: x}, params: {replicas: 1}}\n",
        7,
        "spec.steps[0].target",
        "needs target.name",
    ),
    (
        "steps:\n  - {name: a, action: DeletePod, target: {namespace: x}}\n",
        7,
        "spec.steps[0].target",
        "exactly one of target.name or params.selector",
    ),
    (
        "steps:\n  - {name: a, action: UpdateSecret, target: {namespace: x, name: y}, params: {}}\n",
        7,
        "spec.steps[0].params",
        "exactly one of data or fromSecret",
    ),
    (
        "steps:\n  - {name: a, action: Apply, params: {manifest: {kind: ConfigMap}}}\n",
        7,
        "spec.steps[0].params.manifest.apiVersion",
        "apiVersion is required",
    ),
    (
        "steps:\n  - {name: a, action: Custom, target: {namespace: x}, params: {command: [x]}}\n",
        7,
        "spec.steps[0].params.image",
        "missing required field 'image'",
    ),
    (
        "steps:\n  - {name: a, action: DrainNode, target: {name: n}, params: {gracePeriod: '30'}}\n",
        7,
        "spec.steps[0].params.gracePeriod",
        'the string "30": remove the quotes',
    ),
]


@pytest.mark.parametrize(("body", "line", "path", "fragment"), CASES)
def test_bad_manifest_names_line_field_and_problem(
    body: str, line: int, path: str, fragment: str
) -> None:
    result = load_text(HEAD + textwrap.indent(body, "  "), "wf.yaml")
    assert result.workflows == []
    rendered = [str(i) for i in result.issues]
    match = [i for i in result.issues if fragment in i.message]
    assert match, rendered
    issue = match[0]
    assert issue.file == "wf.yaml"
    assert issue.line == line, rendered
    assert str(issue).startswith(f"wf.yaml:{line}:{issue.column}: {path}:"), rendered


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (
            "apiVersion: v1\nkind: Workflow\nmetadata: {name: a}\nspec: {steps: []}\n",
            1,
            "reconciler.dev/v1alpha1",
        ),
        ("apiVersion: reconciler.dev/v1alpha1\nkind: Job\n", 2, "'Workflow'"),
        ("a: [1\n", 2, "YAML syntax"),
        ("a: 1\na: 2\n", 2, "duplicate key"),
        ("- just\n- a list\n", 1, "expected a Workflow mapping"),
        ("[" * 5000 + "]" * 5000, 1, "nesting is deeper"),
    ],
)
def test_bad_yaml(text: str, line: int, fragment: str) -> None:
    result = load_text(text, "x.yaml")
    assert result.workflows == []
    assert any(fragment in i.message and i.line == line for i in result.issues), [
        str(i) for i in result.issues
    ]


def test_alias_bomb_rejected_without_expanding() -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    result = load_text("\n".join(lines) + "\n", "bomb.yaml")
    assert "alias bomb" in result.issues[0].message


def test_oversized_and_binary_files(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.truncate(yamlsource.MAX_FILE_BYTES + 1)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\x00\x01\x02apiVersion")
    result = load_paths([tmp_path])
    messages = {i.file.rsplit("/", 1)[-1]: i.message for i in result.issues}
    assert "over the 8 MiB limit" in messages["big.yaml"]
    assert "binary" in messages["bin.yaml"]


def test_multi_document_files_and_empty_documents() -> None:
    second = VALID.replace("name: wf", "name: wf-two")
    result = load_text(VALID + "---\n# only a comment\n---\n" + second, "multi.yaml")
    assert [w.name for w in result.workflows] == ["wf", "wf-two"]
    assert result.workflows[1].line == 15


def test_duplicate_workflow_names_across_files_name_both(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(VALID)
    (tmp_path / "b.yaml").write_text("# moved here\n" + VALID)
    result = load_paths([tmp_path])
    assert result.workflows == []
    text = "\n".join(str(i) for i in result.issues)
    assert (
        f"{tmp_path}/a.yaml:4:3: metadata.name: workflow name 'wf' is also defined in"
        f" {tmp_path}/b.yaml:5"
        in text
    )
    assert (
        f"{tmp_path}/b.yaml:5:3: metadata.name: workflow name 'wf' is also defined in"
        f" {tmp_path}/a.yaml:4"
        in text
    )


def test_symlink_outside_folder_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside.yaml"
    outside.write_text(VALID)
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "link.yaml").symlink_to(outside)
    result = load_paths([folder])
    assert result.workflows == []
    assert "outside the workflow folder" in result.issues[0].message


def test_every_error_in_a_file_is_reported() -> None:
    body = (
        "maxConcurent: 2\nsteps:\n"
        "  - {name: a, action: Nope, target: {namespace: x, name: y}}\n"
        "  - {name: b, action: ScaleDeployment, target: {namespace: x, name: y}, params: {replicas: x}}\n"
    )
    result = load_text(HEAD + textwrap.indent(body, "  "), "wf.yaml")
    assert [i.line for i in result.issues] == [6, 8, 9]


def test_python_tags_never_construct_objects() -> None:
    text = VALID.replace("name: scale-up", "name: !!python/object/apply:os.system ['false']")
    result = load_text(text, "evil.yaml")
    assert result.workflows == []  # rejected by the schema, and nothing was executed


def test_custom_env_in_the_pod_spec_list_form_is_the_same_workflow() -> None:
    """env: [{name: A, value: b}] (a Pod spec's form) loads as env: {A: b}: same run id."""
    def custom(env: str) -> str:
        return doc(
            "steps:\n  - name: c\n    action: Custom\n    target: {namespace: ops}\n"
            f"    params: {{image: busybox, command: [sh], env: {env}}}\n"
        )

    listed = load_text(custom("[{name: A, value: b}, {name: C, value: d}]"), "l.yaml")
    mapped = load_text(custom("{A: b, C: d}"), "m.yaml")
    assert listed.ok and mapped.ok, [str(i) for i in listed.issues + mapped.issues]
    assert listed.workflows[0].run_id == mapped.workflows[0].run_id
    refused = load_text(custom("[{name: A, valueFrom: {secretKeyRef: {name: s, key: k}}}]"), "r")
    assert [i.message for i in refused.issues] == [
        "env[0] (A): valueFrom is not supported; give a value"
    ]


def test_a_kubernetes_manifest_is_one_problem_for_the_daemon_too() -> None:
    """The daemon loads each file with load_text, as validate does: one line, not seven."""
    deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {}\n"
    (issue,) = load_text(deployment, "workflows/web.yaml").issues
    assert str(issue) == (
        "workflows/web.yaml:2:1: kind: this is an apps/v1 Deployment, not a"
        " reconciler.dev/v1alpha1 Workflow: keep other manifests out of the workflow folder"
        " (an Apply step can manage one)"
    )
