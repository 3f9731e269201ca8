"""Approvals in git as people (and attackers with push access) make them: real git, real SSH
signatures. What counts is who signed, never the name a file claims; decisions are never
changed or taken back; `reconciler approve` commits and pushes one end to end."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
from gitrepos import bare_and_clone

from reconciler.cli import main
from reconciler.gitops import approvals
from reconciler.gitops.approvals import (
    Decision,
    Refusal,
    approvers_signers_file,
    scan,
    signer_of,
)
from reconciler.gitops.approvaltally import tally
from reconciler.gitops.git import GitRepo
from reconciler.manifest.policy import Approvers, Policy, check_approval_spec

RUN, STEP = "rotate-nodes-0123abcd45", "drain-node"
ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"
FOLDER = f"approvals/{RUN}/{STEP}"


def sh(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        args, cwd=cwd, check=True, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    return done.stdout.strip()


@pytest.fixture(autouse=True)
def own_git_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`approve` runs git with the user's config: here, none but the clones' own."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in [n for n in os.environ if n.startswith("GIT_") and n != "GIT_CONFIG_NOSYSTEM"]:
        monkeypatch.delenv(name)


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    """A private key each for alice, bob and carol (carol's is in no policy file)."""
    found = {}
    for who in (ALICE, BOB, CAROL):
        key = tmp_path / "keys" / who.split("@")[0]
        key.parent.mkdir(exist_ok=True)
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", who, "-f", str(key), cwd=tmp_path)
        found[who] = key
    return found


def public(key: Path) -> str:
    return key.with_suffix(".pub").read_text().strip()


@pytest.fixture
def policy(keys: dict[str, Path]) -> Approvers:
    return Approvers(
        people={ALICE: (public(keys[ALICE]),), BOB: (public(keys[BOB]),)},
        groups={"sre-leads": frozenset({ALICE, BOB})},
    )


@pytest.fixture
def remote(tmp_path: Path) -> tuple[Path, Path]:
    """A bare remote with one commit on main, and a clone of it."""
    bare, clone = bare_and_clone(tmp_path, "Alice", ALICE)
    commit(clone, {"workflows/w.yaml": "w\n"}, None, "workflows")
    sh("git", "push", "--quiet", "origin", "HEAD:main", cwd=clone)
    return bare, clone


def commit(clone: Path, files: dict[str, str | None], key: Path | None, message: str = "c") -> str:
    """A commit of these files (None: remove), signed with `key` unless None."""
    for name, text in files.items():
        path = clone / name
        if text is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    sh("git", "add", "-A", cwd=clone)
    signing = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key}"] if key else []
    date = {"GIT_COMMITTER_DATE": "1700000000 +0000"}
    sh(
        "git",
        *signing,
        "commit",
        "--quiet",
        *(["-S"] if key else []),
        "-m",
        message,
        cwd=clone,
        env=date,
    )
    return sh("git", "rev-parse", "HEAD", cwd=clone)


def scanned(
    bare: Path,
    tmp_path: Path,
    policy: Approvers,
    old: str | None = None,
    claimed: set[str] | None = None,
    upto: str | None = None,
) -> list[Decision | Refusal]:
    async def go() -> list[Decision | Refusal]:
        git = GitRepo(url=str(bare), workdir=tmp_path / "mirror", full_history=True)
        await git.ensure()
        head = await git.fetch()
        assert head is not None
        signers = approvers_signers_file(policy, tmp_path / "signers")
        return await scan(git, old, upto or head, signers, claimed)

    return asyncio.run(go())


def decision_file(who: str, step: str = STEP) -> str:
    return f"approvals/{RUN}/{step}/{who}.yaml"


def push(clone: Path) -> None:
    sh("git", "push", "--quiet", "origin", "HEAD:main", cwd=clone)


def test_a_signed_approval_counts_with_the_signer_as_approver(remote, keys, policy, tmp_path):
    bare, clone = remote
    sha = commit(clone, {decision_file(ALICE): "decision: approve\ncomment: ok\n"}, keys[ALICE])
    unsigned = commit(clone, {"README.md": "x\n"}, None)
    push(clone)
    assert scanned(bare, tmp_path, policy) == [
        Decision(RUN, STEP, ALICE, "approve", "ok", sha, 1700000000, decision_file(ALICE))
    ]
    signers = approvers_signers_file(policy, tmp_path / "signers")
    assert f'{ALICE} namespaces="git" ssh-ed25519 ' in signers.read_text()
    git = GitRepo(url=str(bare), workdir=tmp_path / "mirror")
    assert asyncio.run(signer_of(git, sha, signers)) == ALICE
    assert asyncio.run(signer_of(git, unsigned, signers)) is None


def test_unsigned_and_strangers_commits_are_refused(remote, keys, policy, tmp_path):
    bare, clone = remote
    unsigned = commit(clone, {decision_file(ALICE): "decision: approve\n"}, None)
    stranger = commit(clone, {decision_file(CAROL): "decision: approve\n"}, keys[CAROL])
    push(clone)
    first, second = scanned(bare, tmp_path, policy)
    assert isinstance(first, Refusal) and first.commit == unsigned
    assert first.reason.startswith("unsigned commit")
    assert isinstance(second, Refusal) and second.commit == stranger
    assert "which is not an approver's" in second.reason and "SHA256:" in second.reason


def test_a_file_claiming_someone_else_is_refused_as_forged_naming_both(
    remote, keys, policy, tmp_path
):
    bare, clone = remote
    commit(clone, {decision_file(BOB): "decision: approve\n"}, keys[ALICE])
    push(clone)
    (refusal,) = scanned(bare, tmp_path, policy)
    assert isinstance(refusal, Refusal)
    assert refusal.reason == f"forged: the file name claims {BOB}, but {ALICE} signed the commit"


def test_a_decision_is_never_changed_or_taken_back(remote, keys, policy, tmp_path):
    bare, clone = remote
    first = commit(clone, {decision_file(ALICE): "decision: reject\n"}, keys[ALICE])
    changed = commit(clone, {decision_file(ALICE): "decision: approve\n"}, keys[ALICE])
    removed = commit(clone, {decision_file(ALICE): None}, keys[ALICE])
    push(clone)
    decision, change, removal = scanned(bare, tmp_path, policy)
    assert isinstance(decision, Decision) and decision.decision == "reject"
    assert isinstance(change, Refusal) and change.commit == changed
    assert "never changed" in change.reason
    assert isinstance(removal, Refusal) and removal.commit == removed
    assert "never taken back" in removal.reason
    # from a known commit on, only what came after it
    assert [r.commit for r in scanned(bare, tmp_path, policy, old=first)] == [changed, removed]


@pytest.mark.parametrize(
    ("path", "text", "fragment", "line"),
    [
        (decision_file(ALICE), "decision: [approve\n", "YAML syntax", 2),
        (
            decision_file(ALICE),
            "decison: approve\n",
            "unknown field decison; did you mean 'decision'?",
            1,
        ),
        (
            decision_file(ALICE),
            "comment: hi\ndecision: maybe\n",
            "decision: 'maybe' is neither approve nor reject",
            2,
        ),
        (decision_file(ALICE), "comment: hi\n", "decision: missing: neither approve nor reject", 0),
        (decision_file(ALICE), "decision: approve\ncomment: 42\n", "comment: must be text", 2),
        (decision_file(ALICE), "- decision: approve\n", "not a mapping", 0),
        (
            decision_file(ALICE),
            "decision: approve\ncomment: " + "x" * 5000 + "\n",
            "over 4096 bytes (5028)",
            0,
        ),
        (
            "approvals/README.md",
            "hi\n",
            "the path must be approvals/<run-id>/<step>/<identity>.yaml",
            0,
        ),
        (
            f"approvals/rotate-nodes/{STEP}/{ALICE}.yaml",
            "decision: approve\n",
            "not a decision file",
            0,
        ),
        (f"{FOLDER}/{ALICE}.yml", "decision: approve\n", "not a decision file", 0),
    ],
)
def test_a_bad_decision_file_is_refused_naming_the_field(
    remote, keys, policy, tmp_path, path, text, fragment, line
):
    bare, clone = remote
    commit(clone, {path: text}, keys[ALICE])
    push(clone)
    (refusal,) = scanned(bare, tmp_path, policy)
    assert isinstance(refusal, Refusal) and fragment in refusal.reason, refusal
    assert refusal.line == line and refusal.path == path
    assert str(refusal).startswith(f"{path}:{line}: " if line else f"{path}: ")


def test_a_merge_is_judged_by_what_it_adds_against_its_first_parent(remote, keys, policy, tmp_path):
    bare, clone = remote
    sh("git", "checkout", "--quiet", "-b", "side", cwd=clone)
    side = commit(clone, {decision_file(ALICE): "decision: approve\n"}, None, "unsigned")
    sh("git", "checkout", "--quiet", "main", cwd=clone)
    commit(clone, {"runs/r.yaml": "x\n"}, None, "a record")
    signing = ["-c", "gpg.format=ssh", "-c", f"user.signingkey={keys[ALICE]}"]
    sh("git", *signing, "merge", "--quiet", "-S", "--no-ff", "-m", "merge", "side", cwd=clone)
    merge = sh("git", "rev-parse", "HEAD", cwd=clone)
    push(clone)
    refusal, decision = scanned(bare, tmp_path, policy)
    assert isinstance(refusal, Refusal) and refusal.commit == side
    assert isinstance(decision, Decision) and decision.commit == merge
    assert decision.approver == ALICE  # she signed the merge that brought it in


def test_commits_outside_approvals_cost_nothing(remote, keys, policy, tmp_path, monkeypatch):
    """Hundreds of record commits between two decisions: one log, one size check, one read."""
    bare, clone = remote
    commit(clone, {decision_file(ALICE): "decision: approve\n"}, keys[ALICE])
    for i in range(40):
        commit(clone, {f"runs/r{i}.yaml": "x\n"}, None, f"record {i}")
    commit(clone, {decision_file(BOB): "decision: approve\n"}, keys[BOB])
    push(clone)
    calls: list[str] = []
    real = GitRepo.git

    async def counted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(next(a for a in args if not a.startswith("-") and "=" not in a))
        return await real(self, *args, **kwargs)

    async def go() -> list[Decision | Refusal]:
        git = GitRepo(url=str(bare), workdir=tmp_path / "mirror", full_history=True)
        await git.ensure()
        head = await git.fetch()
        assert head is not None
        monkeypatch.setattr(GitRepo, "git", counted)
        return await scan(git, None, head, approvers_signers_file(policy, tmp_path / "s"))

    found = asyncio.run(go())
    assert [d.approver for d in found if isinstance(d, Decision)] == [ALICE, BOB]
    assert calls == ["log", "cat-file", "cat-file"]


def decision(who: str, verdict: str = "approve", sha: str = "c" * 40) -> Decision:
    return Decision(RUN, STEP, who, verdict, "", sha, 0, decision_file(who))


def test_tally_two_of_a_group(policy):
    state = tally(2, ["sre-leads"], policy, [decision(ALICE), decision(CAROL)])
    assert (state.outcome, state.approved_by) == ("waiting", (ALICE,))
    assert [r.reason for r in state.refused] == [f"{CAROL} is not an approver of this step"]
    bobs = decision(BOB, sha="b" * 40)
    state = tally(2, ["sre-leads"], policy, [decision(ALICE), decision(ALICE, "reject"), bobs])
    assert (state.outcome, state.approved_by, state.decided_by) == ("approved", (ALICE, BOB), bobs)
    (duplicate,) = state.refused
    assert duplicate.reason.startswith(f"{ALICE} already decided (approve in commit cccccccccccc)")


def test_tally_a_rejection_settles_it_and_a_settled_outcome_stays(policy):
    assert tally(2, [ALICE, BOB], policy, [decision(ALICE), decision(BOB, "reject")]).outcome == (
        "rejected"
    )
    late = tally(1, ["sre-leads"], policy, [decision(BOB), decision(ALICE, "reject")])
    assert (late.outcome, late.rejected_by) == ("approved", (ALICE,))
    assert tally(1, [ALICE], policy, [decision(BOB)]).outcome == "waiting"  # not his step


def test_check_approval_spec_names_what_is_wrong(policy):
    source = Policy(approvers=policy, source="policy.yaml")
    assert check_approval_spec(2, ["sre-leads"], source) == []
    assert check_approval_spec(1, ["sre-lead"], source) == [
        "approval.approvers: 'sre-lead' is neither a person nor a group under approvers in"
        " policy.yaml; did you mean 'sre-leads'?"
    ]
    (more,) = check_approval_spec(3, ["sre-leads", ALICE], source)
    assert "required is 3, but approval.approvers name only 2 people" in more
    assert "at least 1" in check_approval_spec(0, [ALICE], source)[0]
    assert "is empty" in check_approval_spec(1, [], source)[0]


# --- reconciler approve, end to end against a bare remote


def approve(*args: str) -> int:
    return main(["approve", RUN, STEP, *args])


def test_approve_commits_signs_and_pushes(remote, keys, policy, tmp_path, capsys):
    bare, clone = remote
    sh("git", "config", "user.signingkey", str(keys[ALICE]), cwd=clone)
    assert approve("--repo", str(clone), "-m", 'fine: "go"') == 0
    assert f"approve {RUN}/{STEP} as {ALICE}: commit" in capsys.readouterr().out
    (found,) = scanned(bare, tmp_path, policy)
    assert isinstance(found, Decision)
    assert (found.approver, found.decision, found.comment) == (ALICE, "approve", 'fine: "go"')
    # deciding again is refused, and so is deciding from a clone that is behind
    assert approve("--repo", str(clone)) == 1
    assert "exists already: alice@example.com has decided" in capsys.readouterr().err
    sh("git", "reset", "--quiet", "--hard", "HEAD~1", cwd=clone)
    assert approve("--repo", str(clone)) == 1
    assert "--replace writes yours over it), on origin/main" in capsys.readouterr().err


def test_approve_rebases_and_resigns_when_the_remote_moved_on(remote, keys, policy, tmp_path):
    bare, clone = remote
    other = tmp_path / "other"
    sh("git", "clone", "--quiet", str(bare), str(other), cwd=tmp_path)
    sh("git", "-c", "user.name=B", "-c", f"user.email={BOB}", "commit", "--quiet",
       "--allow-empty", "-m", "meanwhile", cwd=other)  # fmt: skip
    push(other)
    args = ["--repo", str(clone), "--as", BOB, "--signing-key", str(keys[BOB]), "--reject"]
    assert approve(*args) == 0
    (found,) = scanned(bare, tmp_path, policy)
    assert isinstance(found, Decision) and (found.approver, found.decision) == (BOB, "reject")


def test_approve_errors_are_one_line(remote, keys, tmp_path, capsys):
    bare, clone = remote

    def error(*args: str) -> str:
        assert approve(*args) == 1
        (line,) = capsys.readouterr().err.strip().splitlines()
        return line

    nowhere = tmp_path / "nowhere"
    nowhere.mkdir()
    assert "is not a git repository" in error("--repo", str(nowhere))
    assert "could not commit a signed" in error("--repo", str(clone))  # no signing key
    assert "user.signingkey" in error("--repo", str(clone), "--signing-key", "/no/such/key")
    assert not (clone / decision_file(ALICE)).exists()  # nothing left behind
    assert "cannot be an approver's name" in error("--repo", str(clone), "--as", "Alice Smith")
    assert "on branch main: check out live first" in error("--repo", str(clone), "--branch", "live")
    sh("git", "config", "--unset", "user.email", cwd=clone)
    assert "no identity: pass --as" in error("--repo", str(clone))
    sh("git", "config", "user.email", ALICE, cwd=clone)
    commit(clone, {"workflows/w.yaml": "changed\n"}, None, "work in progress")
    assert "change workflows/w.yaml: pushing the decision would push them too" in error(
        "--repo", str(clone), "--signing-key", str(keys[ALICE])
    )
    sh("git", "reset", "--quiet", "--hard", "origin/main", cwd=clone)
    hook = bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'no pushes today' >&2\nexit 1\n")
    hook.chmod(0o755)
    assert "rejected 5 times" in error("--repo", str(clone), "--signing-key", str(keys[ALICE]))
    with pytest.raises(SystemExit) as usage:
        main(["approve", "rotate-nodes", STEP])
    assert usage.value.code == 2
    assert "is not a run id" in capsys.readouterr().err


def test_approve_no_push_commits_only(remote, keys, tmp_path, capsys):
    bare, clone = remote
    assert approve("--repo", str(clone), "--no-push", "--signing-key", str(keys[ALICE])) == 0
    assert "not pushed" in capsys.readouterr().out
    assert sh("git", "log", "-1", "--format=%s", cwd=clone) == f"approve {RUN}/{STEP}"
    assert "-----BEGIN SSH SIGNATURE-----" in sh("git", "cat-file", "commit", "HEAD", cwd=clone)
    assert sh("git", "rev-parse", "main", cwd=bare) != sh("git", "rev-parse", "HEAD", cwd=clone)


def test_approval_file_round_trips_any_comment():
    from reconciler.manifest import yamlsource

    for comment in ["line one\nline: two # 'quoted' \"and\" \\", "😀 ünï\x85", "123", "- a", "~"]:
        text = approvals.approval_file("reject", comment).decode()
        (document,) = yamlsource.parse_documents(text)
        assert document.data == {"decision": "reject", "comment": comment}


def test_a_file_pushed_to_block_an_approver_does_not(remote, keys, policy, tmp_path):
    """Mallory pushes an unsigned alice.yaml first; alice's signed change of it counts."""
    bare, clone = remote
    blocker = commit(clone, {decision_file(ALICE): "decision: reject\n"}, None)
    real = commit(clone, {decision_file(ALICE): "decision: approve\n"}, keys[ALICE])
    push(clone)
    refusal, decision = scanned(bare, tmp_path, policy)
    assert isinstance(refusal, Refusal) and refusal.commit == blocker
    assert isinstance(decision, Decision) and decision.commit == real
    assert decision.approver == ALICE and decision.decision == "approve"
    # scanned in two steps, the caller's claimed paths carry the knowledge across
    claimed: set[str] = set()
    assert isinstance(scanned(bare, tmp_path, policy, claimed=claimed, upto=blocker)[0], Refusal)
    (later,) = scanned(bare, tmp_path, policy, old=blocker, claimed=claimed)
    assert isinstance(later, Decision) and later.commit == real
