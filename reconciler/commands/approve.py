"""`reconciler approve RUN STEP`: decide on a step waiting for approval, as an SSH-signed
commit that adds approvals/RUN/STEP/<identity>.yaml, pushed to the workflows repository.

It runs git in the user's clone with the user's own environment and config (their agent,
credential helpers, signing key), unlike the daemon's isolated mirror. It needs no cluster
and does not check that the run exists: the daemon records a refusal for a decision on an
unknown run or step, or one signed by a key the policy does not give that identity.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from reconciler.commands.common import Subcommands, add_git_timeout_flag
from reconciler.gitops.approvals import (
    APPROVALS,
    MAX_BYTES,
    RUN_ID,
    STEP,
    approval_file,
    approval_path,
)
from reconciler.gitops.gitcommand import stderr_detail
from reconciler.manifest.policy_file import IDENTITY

SIGNING_HINT = (
    "git needs an SSH key to sign with: git config user.signingkey ~/.ssh/id_ed25519.pub"
    " (or pass --signing-key KEY)"
)


Git = Callable[..., str]  # one git command in the clone: its output, or GitFailed


class ApproveError(Exception):
    """Why no decision was committed or pushed: one line, with the fix."""


class GitFailed(Exception):
    """One git command failed; the message is git's own."""


def run_id(text: str) -> str:
    if not RUN_ID.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a run id: <workflow-name>-<10 hex digits>, e.g."
            " rotate-nodes-0123abcd45 (reconciler status lists them)"
        )
    return text


def step_name(text: str) -> str:
    if not STEP.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a step name (a DNS-1123 label)")
    return text


def register(sub: Subcommands) -> None:
    p = sub.add_parser(
        "approve",
        help="approve (or --reject) a step waiting for approval, as a signed commit",
        description="Commit approvals/RUN/STEP/<identity>.yaml, signed with your SSH key, and"
        " push it. Needs a clone of the workflows repository, not a cluster: it does not check"
        " that the run or step exists (the daemon records a refusal for an unknown one). Only"
        " a commit signed by a key the policy file gives to <identity> counts.",
    )
    p.add_argument(
        "run_id", metavar="RUN", type=run_id, help="the run id, e.g. rotate-nodes-0123abcd45"
    )
    p.add_argument("step", metavar="STEP", type=step_name, help="the step waiting for approval")
    p.add_argument("--reject", action="store_true", help="record a rejection instead")
    p.add_argument("-m", "--message", default="", help="a comment kept with the decision")
    p.add_argument(
        "--repo", type=Path, default=Path("."), metavar="DIR", help="the clone (default: .)"
    )
    p.add_argument(
        "--as",
        dest="identity",
        metavar="IDENTITY",
        help="your name under approvers.people in the policy file (default: git config user.email)",
    )
    p.add_argument(
        "--signing-key",
        metavar="KEY",
        help="the SSH key to sign with, a file or key::<public key> in your agent"
        " (default: git config user.signingkey)",
    )
    p.add_argument("--remote", default="origin", help="where to push (default: origin)")
    p.add_argument(
        "--branch", help="the branch the daemon follows (default: the current one; check it out)"
    )
    p.add_argument("--no-push", action="store_true", help="commit only; push it yourself later")
    p.add_argument(
        "--replace",
        action="store_true",
        help="write over a file at your decision's path that was not your decision (e.g. one"
        " someone pushed unsigned to block you); if it was yours, your first decision stands",
    )
    add_git_timeout_flag(p)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    try:
        print(approve(args))
    except ApproveError as err:
        print(f"reconciler approve: {err}", file=sys.stderr)
        return 1
    return 0


def approve(args: argparse.Namespace) -> str:
    def git(*argv: str) -> str:
        try:
            done = subprocess.run(
                ["git", *argv], cwd=top, capture_output=True, timeout=args.git_timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise GitFailed(f"git {argv[0]}: no answer within {args.git_timeout:g}s") from None
        if done.returncode != 0:
            raise GitFailed(stderr_detail(done.stderr, done.returncode))
        return done.stdout.decode(errors="replace").strip()

    top = args.repo
    try:
        top = Path(git("rev-parse", "--show-toplevel"))
    except (GitFailed, OSError) as err:
        raise ApproveError(
            f"{args.repo} is not a git repository ({err}); pass --repo DIR"
        ) from None
    identity = args.identity or _quietly(git, "config", "user.email")
    if not identity:
        raise ApproveError("no identity: pass --as IDENTITY or set git config user.email")
    if not IDENTITY.fullmatch(identity):
        raise ApproveError(
            f"{identity!r} cannot be an approver's name (letters, digits and . _ + @ - only):"
            " pass --as with your name under approvers.people in the policy file"
        )
    current = _quietly(git, "symbolic-ref", "--quiet", "--short", "HEAD")
    branch = args.branch or current
    if not current or current != branch:
        where = f"on branch {current}" if current else "HEAD is detached"
        raise ApproveError(f"{where}: check out {branch or 'the branch the daemon follows'} first")
    decision = "reject" if args.reject else "approve"
    content = approval_file(decision, args.message)
    if len(content) > MAX_BYTES:
        raise ApproveError(f"-m: over {MAX_BYTES} bytes, which the daemon refuses; shorten it")
    path = approval_path(args.run_id, args.step, identity)
    decided = (
        f"{path} exists already: {identity} has decided on this step (decisions stand; if"
        " that file was not your decision, --replace writes yours over it)"
    )
    if not args.replace and ((top / path).exists() or _quietly(git, "ls-files", "--", path)):
        raise ApproveError(decided)
    if not args.no_push:
        _check_remote(git, args.remote, branch, path, None if args.replace else decided)
    signing = ["-c", "gpg.format=ssh"]
    if args.signing_key:
        key = Path(args.signing_key).expanduser()
        signing += ["-c", f"user.signingkey={key.resolve() if key.exists() else args.signing_key}"]
    (top / path).parent.mkdir(parents=True, exist_ok=True)
    (top / path).write_bytes(content)
    subject = f"{decision} {args.run_id}/{args.step}"
    comment = ["-m", args.message] if args.message else []
    try:
        git("add", "--force", "--", path)  # even where a .gitignore would hide it
        git(*signing, "commit", "--quiet", "-S", "-m", subject, *comment, "--", path)
    except GitFailed as err:
        _quietly(git, "rm", "--cached", "--quiet", "--ignore-unmatch", "--", path)
        (top / path).unlink(missing_ok=True)
        raise ApproveError(f"could not commit a signed {path}: {err}; {SIGNING_HINT}") from None
    commit = git("rev-parse", "--short=12", "HEAD")
    if args.no_push:
        return f"{subject} as {identity}: commit {commit} on {branch}, not pushed"
    _push(git, signing, args.remote, branch)
    return f"{subject} as {identity}: commit {commit} pushed to {args.remote}/{branch}"


def _check_remote(git: Git, remote: str, branch: str, path: str, decided: str | None) -> None:
    """The remote's branch has no decision of ours yet, and pushing HEAD would push nothing
    but decisions: an approval must not carry someone's unfinished workflow change along."""
    try:
        git("fetch", "--quiet", remote, f"refs/heads/{branch}")
    except GitFailed as err:
        raise ApproveError(f"cannot fetch {branch} from {remote}: {err}") from None
    if decided is not None and _quietly(git, "cat-file", "-t", f"FETCH_HEAD:{path}"):
        raise ApproveError(f"{decided}, on {remote}/{branch}")
    # against the merge base: what pushing HEAD would add, merged branches included
    ahead = _quietly(git, "diff", "--name-only", "--no-renames", "-z", "FETCH_HEAD...HEAD")
    others = [p for p in ahead.split("\0") if p and not p.startswith(f"{APPROVALS}/")]
    if others:
        raise ApproveError(
            f"{branch} has commits not on {remote} that change {others[0]}: pushing the"
            " decision would push them too; push or drop them first (or use --no-push)"
        )


PUSH_TRIES = 5  # a remote the daemon commits records to moves on between pull and push


def _push(git: Git, signing: list[str], remote: str, branch: str) -> None:
    """Push; while the remote moved on, rebase (re-signing: a rebased commit is a new one)
    and push again, a few times."""
    target = f"HEAD:refs/heads/{branch}"
    try:
        git("push", "--quiet", remote, target)
        return
    except GitFailed as first:
        err = first
    for attempt in range(1, PUSH_TRIES):
        try:
            git(*signing, "pull", "--quiet", "--rebase", "--autostash", "-S", remote, branch)
            git("push", "--quiet", remote, target)
            return
        except GitFailed as again:
            err = again
            _quietly(git, "rebase", "--abort")
            time.sleep(0.2 * attempt)
    raise ApproveError(
        f"push to {remote}/{branch} rejected {PUSH_TRIES} times ({err}); the signed commit"
        f" stays on {branch}: git pull --rebase -S and git push when {remote} takes it"
    ) from None


def _quietly(git: Git, *argv: str) -> str:
    """Its output, or empty when git says no (an unset config, a path not there)."""
    try:
        return git(*argv)
    except GitFailed:
        return ""
