"""Bad invocations, as a new user makes them (issue 15): every command, with bad files, flags,
environment variables, a missing kubeconfig and an API server on 127.0.0.1 that nothing
listens on. Each case asserts the exit code (1 invalid input, 2 usage), that no traceback
appears, and the words of the one message: what is wrong, where, and how to fix it.

Commands run in-process through reconciler.cli.main, the console script's own entry
point; the environment is set before the parser is built, as a shell would."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reconciler.cli import main


def workflow(namespace: str = "shop", name: str = "scale") -> str:
    return (
        "apiVersion: reconciler.dev/v1alpha1\nkind: Workflow\n"
        f"metadata: {{name: {name}}}\nspec:\n  steps:\n"
        f"    - {{name: s, action: ScaleDeployment, target: {{namespace: {namespace},"
        " name: web}, params: {replicas: 2}}\n"
    )


KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:{port}"}}}}]
contexts: [{{name: here, context: {{cluster: c, user: u}}}}]
current-context: here
users: [{{name: u, user: {{token: not-a-secret}}}}]
"""
WF = {"wf.yaml": workflow()}
CLUSTER = {**WF, "kubeconfig": KUBECONFIG}


@dataclass
class Case:
    id: str
    argv: list[str]
    code: int
    words: list[str]  # each in stderr, after {tmp} and {port} are filled in
    files: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


CASES = [
    # --- environment variables: refused where they are used, never breaking the rest
    Case("bad-variable-version", ["--version"], 0, [], env={"RECONCILER_INTERVAL": "abc"}),
    Case(
        "bad-variable-validate", ["validate", "wf.yaml"], 0, ["1 workflow(s) valid"], WF,
        {"RECONCILER_INTERVAL": "abc"},
    ),
    Case(
        "bad-variable-daemon", ["daemon", "--repo", "r"], 2,
        ["RECONCILER_INTERVAL='abc'", "a duration such as 30s, 1m", "fix the value or unset it"],
        env={"RECONCILER_INTERVAL": "abc"},
    ),
    Case(
        "bad-switch-daemon", ["daemon", "--repo", "r"], 2,
        ["RECONCILER_LEADER_ELECT='maybe'", "expected 1 or true"],
        env={"RECONCILER_LEADER_ELECT": "maybe"},
    ),
    Case(
        "bad-choice-daemon", ["daemon", "--repo", "r"], 2,
        ["RECONCILER_LOG_LEVEL='loud'", "one of DEBUG, INFO, WARNING, ERROR"],
        env={"RECONCILER_LOG_LEVEL": "loud"},
    ),
    Case(
        "bad-count-flag", ["daemon", "--repo", "r", "--max-concurrent-workflows", "many"], 2,
        ["--max-concurrent-workflows", "expected a whole number, got 'many'"],
    ),
    Case(
        "short-lease", ["daemon", "--repo", "r", "--lease-duration", "3s"], 2,
        ["--lease-duration", "at least 7s"],
    ),
    # --- the kubeconfig: missing, unknown context, not YAML
    *(
        Case(
            f"missing-kubeconfig-{cmd[0]}", [*cmd, "--kubeconfig", "nope.yaml"], 1,
            ["no kubeconfig: nope.yaml does not exist", "--kubeconfig FILE or set KUBECONFIG"],
            WF,
        )
        for cmd in (["plan", "--server-dry-run", "wf.yaml"], ["run", "wf.yaml"], ["rollback", "r1"])
    ),
    Case(
        "unknown-context", ["run", "wf.yaml", "--kubeconfig", "kubeconfig", "--context", "prod"],
        1, ["context 'prod' (--context) is not in kubeconfig kubeconfig", "its contexts: here"],
        CLUSTER,
    ),
    Case(
        "kubeconfig-not-yaml", ["rollback", "r1", "--kubeconfig", "kubeconfig"], 1,
        ["kubeconfig kubeconfig:2:1: not valid YAML"], {"kubeconfig": "clusters: [\n"},
    ),
    # --- an API server that cannot be reached: given up on within --api-timeout, named
    *(
        Case(
            f"unreachable-{cmd[0]}", [*cmd, "--kubeconfig", "kubeconfig", "--api-timeout", "1s"],
            1,
            ["cannot reach the API server at 127.0.0.1:{port}", "connection refused",
             "gave up after 1s", "--api-timeout waits longer"],
            CLUSTER,
        )
        for cmd in (["plan", "--server-dry-run", "wf.yaml"], ["run", "wf.yaml"], ["rollback", "r1"])
    ),
    # --- the policy file
    Case(
        "policy-missing", ["validate", "--policy", "nope.yaml", "wf.yaml"], 1,
        ["nope.yaml: cannot read the policy file"], WF,
    ),
    Case(
        "policy-a-list", ["validate", "--policy", "p.yaml", "wf.yaml"], 1,
        ["p.yaml:1:1: the document: must be a mapping, not list"], {**WF, "p.yaml": "- shop\n"},
    ),
    Case(
        "policy-unknown-action", ["plan", "--policy", "p.yaml", "wf.yaml"], 1,
        ["p.yaml:1:14: namespaces.shop: unknown action(s) ScaleDeploymnt", "did you mean 'ScaleDeployment'"],
        {**WF, "p.yaml": "namespaces: {shop: [ScaleDeploymnt]}\n"},
    ),
    # --- protected namespaces: the same on every command, added to, never replaced
    *(
        Case(
            f"own-namespace-{cmd}", [cmd, "own.yaml"], 1,
            ["own.yaml:", "reconciler-system", "protected"],
            {"own.yaml": workflow("reconciler-system")},
        )
        for cmd in ("validate", "plan", "run")
    ),
    Case(
        "own-namespace-from-variable", ["validate", "ops.yaml"], 1, ["ops.yaml:", "'ops'"],
        {"ops.yaml": workflow("ops")}, {"RECONCILER_NAMESPACE": "ops"},
    ),
    Case(
        "protected-list-with-spaces",
        ["validate", "--protected-namespaces", "kube-system, api", "api.yaml"], 1,
        ["api.yaml:", "'api'"], {"api.yaml": workflow("api")},
    ),
    Case(
        "protected-flag-keeps-the-defaults",
        ["validate", "--protected-namespaces", "api", "kube.yaml"], 1,
        ["kube.yaml:", "'kube-system'"], {"kube.yaml": workflow("kube-system")},
    ),
]


def steps(body: str) -> str:
    return (
        "apiVersion: reconciler.dev/v1alpha1\nkind: Workflow\nmetadata: {name: w}\nspec:\n"
        f"  steps:\n{body}"
    )


SCALE = "    - {name: a, action: ScaleDeployment, target: {namespace: n, name: d}, "
CONFIG = "    - {name: a, action: UpdateConfigMap, target: {namespace: n, name: c}, "
DEPLOYMENT = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 2}\n"
# --- workflow files: validate is the CI gate, so each mistake is named where it is
MANIFESTS = [
    ("depends-on-a-string", steps(SCALE + "params: {replicas: 1}}\n" + SCALE.replace("a,", "b,")
     + "dependsOn: a, params: {replicas: 1}}\n"), ["f.yaml:7:", "dependsOn", "e.g. [a]"]),
    ("quoted-number", steps(SCALE + 'params: {replicas: "6"}}\n'),
     ["f.yaml:6:", "replicas", 'the string "6": remove the quotes']),
    ("null-value", steps(SCALE + "params: {replicas: }}\n"),
     ["f.yaml:6:", "has no value (null): give a whole number"]),
    ("no-steps", steps("    []\n").replace("steps:\n    []", "steps: []"),
     ["f.yaml:5:3", "a workflow needs at least one step"]),
    ("boolean-in-data", steps(CONFIG + "params: {data: {ENABLED: True}}}\n"),
     ["f.yaml:6:", 'quote it, e.g. "true"']),
    ("yaml-1.1-boolean-in-data", steps(CONFIG + 'params: {data: {A: yes, B: "on"}}}\n'),
     ["f.yaml:6:", "data.A: yes is a boolean to kubectl and Helm (YAML 1.1)", 'quote it, "yes"',
      "1 problem"]),
    ("wrong-api-version", steps(SCALE + "params: {replicas: 1}}\n").replace("v1alpha1", "v1"),
     ["f.yaml:1:1: apiVersion:", "use reconciler.dev/v1alpha1"]),
    ("a-deployment", DEPLOYMENT,
     ["f.yaml:2:1: kind: this is an apps/v1 Deployment, not a reconciler.dev/v1alpha1"]),
    ("empty-file", "", ["f.yaml:1:1: no workflow in this file"]),
    ("comments-only", "# TODO\n", ["f.yaml:1:1: no workflow in this file"]),
]
CASES += [
    Case(f"manifest-{name}", ["validate", "f.yaml"], 1, words, {"f.yaml": text})
    for name, text, words in MANIFESTS
]
LAYERS = steps(
    SCALE.replace("a,", "a, dependsOn: [b],") + "params: {replicas: many}}\n"
    + SCALE.replace("a,", "b, dependsOn: [a],") + "params: {replicas: 1}}\n"
)
DUPLICATE = steps(
    SCALE + "params: {replicas: many}}\n"
    + SCALE.replace("a,", "a, dependsOn: [zz],") + "params: {replicas: 1}}\n"
)
CASES += [
    Case(
        "every-layer-of-problems", ["validate", "f.yaml"], 1,
        ["f.yaml:6:", "expected a whole number, got 'many'",
         "f.yaml:7:", "dependency cycle: a -> b -> a", "2 problems"],
        {"f.yaml": LAYERS},
    ),
    Case(
        "schema-errors-and-duplicates", ["validate", "f.yaml"], 1,
        ["f.yaml:7:8: spec.steps[1].name: duplicate step name 'a'", "unknown step 'zz'",
         "3 problems"],
        {"f.yaml": DUPLICATE},
    ),
    Case(
        "a-deployment-only-one-line", ["validate", "-q", "f.yaml"], 1, [], {"f.yaml": DEPLOYMENT}
    ),
    Case("empty-folder", ["validate", "wf"], 1, ["wf: no workflow files (*.yaml, *.yml)"],
         {"wf/README.md": "nothing here\n"}),
    Case("missing-path", ["validate", "nope/"], 2, ["nope/: no such file or folder"]),
    Case(
        "status-unreachable-remote", ["status", "--repo", "https://127.0.0.1:{port}/ops.git"], 1,
        ["cannot read https://127.0.0.1:{port}/ops.git", "Failed to connect to 127.0.0.1 port {port}"],
    ),
    Case(
        "status-not-a-repository", ["status", "--repo", "nope.git"], 1,
        ["nope.git' does not appear to be a git repository",
         "Please make sure you have the correct access rights and the repository exists."],
    ),
    Case(
        "duplicate-names", ["validate", "a.yaml", "b.yaml"], 1,
        ["a.yaml:3:12: metadata.name: workflow name 'scale' is also defined in b.yaml:3"],
        {"a.yaml": workflow(), "b.yaml": workflow()},
    ),
]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_bad_invocation_gets_one_clear_message(
    case: Case,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = closed_port()
    for name, text in case.files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text.format(port=port) if name == "kubeconfig" else text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config of the machine's
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    for name, value in case.env.items():
        monkeypatch.setenv(name, value)
    ended = ""
    try:
        code = main([a.format(port=port) for a in case.argv])
    except SystemExit as stop:  # argparse, --version, and commands ending with a message
        # SystemExit("text") is printed to stderr by the interpreter and exits 1
        code, ended = (stop.code, "") if isinstance(stop.code, int) else (1, str(stop.code))
    out, err = capsys.readouterr()
    said = out + err + ended
    assert code == case.code, said
    assert "Traceback" not in said and "internal error" not in said, said
    for words in case.words:
        assert words.format(tmp=tmp_path, port=port) in said, said
    if case.id == "a-deployment-only-one-line":
        assert len(said.strip().splitlines()) == 1, said


def test_a_byte_that_is_not_utf8_is_pointed_at(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "latin1.yaml").write_bytes(b"metadata:\n  name: caf\xe9\n")
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "latin1.yaml"]) == 1
    assert capsys.readouterr().err.splitlines()[0] == (
        "latin1.yaml:2:12: file is not valid UTF-8 (byte 21, 0xe9): save it as UTF-8"
    )


def test_validate_json_names_file_line_column_field_and_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io
    import json

    monkeypatch.chdir(tmp_path)
    text = steps(SCALE + 'params: {replicas: "6"}}\n')
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    assert main(["validate", "--format", "json", "-q", "-"]) == 1
    out, err = capsys.readouterr()
    assert err == ""  # -q: no summary
    assert json.loads(out) == {
        "files": 1,
        "workflows": [],
        "problems": [
            {
                "file": "<stdin>",
                "line": 6,
                "column": 84,
                "field": "spec.steps[0].params.replicas",
                "message": 'expected a number, got the string "6": remove the quotes',
            }
        ],
    }


def test_status_reads_a_relative_local_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README says a local path works: relative to where the command runs, not to
    the temporary mirror git runs in."""
    import subprocess

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q", "--bare", "-b", "main", "ops.git")
    git("clone", "-q", "ops.git", "work")
    (tmp_path / "work" / "README").write_text("ops\n")
    git("-C", "work", "add", "README")
    git("-C", "work", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "first")
    git("-C", "work", "push", "-q", "origin", "HEAD:main")
    monkeypatch.chdir(tmp_path)
    assert main(["status", "--repo", "ops.git"]) == 0
    assert capsys.readouterr().out.strip() == "no run records yet"


def test_status_of_an_empty_repository_or_a_missing_branch_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import subprocess

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q", "--bare", "-b", "main", "ops.git")
    monkeypatch.chdir(tmp_path)
    assert main(["status", "--repo", "ops.git"]) == 1
    err = capsys.readouterr().err
    assert "it has no branch main: the repository is empty (nothing was pushed to it yet)" in err
    assert "couldn't find remote ref" not in err
    git("clone", "-q", "ops.git", "work")
    (tmp_path / "work" / "README").write_text("ops\n")
    git("-C", "work", "add", "README")
    git("-C", "work", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "first")
    git("-C", "work", "push", "-q", "origin", "HEAD:trunk")
    assert main(["status", "--repo", "ops.git"]) == 1
    assert "its branches are trunk (choose one with --branch)" in capsys.readouterr().err
    assert main(["status", "--repo", "ops.git", "--branch", "trunk"]) == 0


def test_status_gives_up_on_a_remote_that_never_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A server on 127.0.0.1 that takes the connection and says nothing: --git-timeout ends it."""
    import time

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake; nobody ever reads or answers
        url = f"https://127.0.0.1:{silent.getsockname()[1]}/ops.git"
        monkeypatch.chdir(tmp_path)
        started = time.monotonic()
        assert main(["status", "--repo", url, "--git-timeout", "2s"]) == 1
        took = time.monotonic() - started
    assert "no answer within 2s" in capsys.readouterr().err
    assert took < 20, took
