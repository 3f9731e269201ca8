"""Approvals in git: a decision on a step that waits for `approval` is a commit that adds
approvals/<run-id>/<step>/<identity>.yaml (`decision: approve|reject`, optional `comment`),
SSH-signed by that person. Who decided is who signed: the signer's principal in an
allowed_signers file made from the policy's approvers, never the name the file claims. A
decision is never changed or taken back: a commit that changes or removes one is refused,
and the first one stands (a file no decision came from, such as an unsigned one pushed to
block its approver, is no decision: its approver's signed change of it is). A merge is
judged, by its own signature, on what it adds against its first parent.

`scan` reads a range with one `git log`, limited to approvals/ and with git's signature
verdicts (%G?, %GS) in its format: the commits that touch nothing there (the daemon's
records, hundreds of them) cost nothing, and no process is started per commit (git's own
ssh-keygen per approval commit aside). Then one `cat-file` for sizes, one for the files."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from reconciler.gitops.git import GitRepo
from reconciler.manifest import yamlsource
from reconciler.manifest.checks import suggest
from reconciler.manifest.policy import Approvers
from reconciler.manifest.policy_file import IDENTITY

APPROVALS = "approvals"
MAX_BYTES = 4096  # a decision and a comment; anything larger is not one
FIELDS = ("decision", "comment")
DECISIONS = ("approve", "reject")
RUN_ID = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?-[0-9a-f]{10}")  # identity.run_id
STEP = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # a DNS-1123 label
SHAPE = f"{APPROVALS}/<run-id>/<step>/<identity>.yaml"
# git's %G? letters other than G (good, from a key of the allowed_signers file)
VERDICTS = {
    "N": "unsigned commit: sign it with an approver's SSH key (git commit -S)",
    "U": "signed by key {key}, which is not an approver's in the policy file",
    "B": "bad signature (the commit was changed after it was signed)",
    "E": "signature cannot be checked ({key}): an SSH signature is needed",
}


@dataclass(frozen=True)
class Decision:
    run_id: str
    step: str
    approver: str  # the signer's principal, which the file name matched
    decision: str  # approve | reject
    comment: str
    commit: str
    time: int  # committer time, epoch seconds
    path: str


@dataclass(frozen=True)
class Refusal:
    commit: str
    path: str
    reason: str
    line: int = 0  # in the file, when the reason is about its content

    def __str__(self) -> str:
        at = f"{self.path}:{self.line}" if self.line else self.path
        return f"{at}: {self.reason} (commit {self.commit[:12]})"


def approval_path(run_id: str, step: str, identity: str) -> str:
    return f"{APPROVALS}/{run_id}/{step}/{identity}.yaml"


def approval_file(decision: str, comment: str = "") -> bytes:
    """The decision file. The comment is always double-quoted, with ruamel.yaml's escapes:
    left to choose, it writes a trailing NEL (U+0085) plain, and reads it back as a space."""
    out = io.StringIO()
    yaml = YAML(typ="rt")  # keeps the order: decision first
    quoted = DoubleQuotedScalarString(comment)
    yaml.dump({"decision": decision, **({"comment": quoted} if comment else {})}, out)
    return out.getvalue().encode()


def approvers_signers_file(approvers: Approvers, workdir: Path) -> Path:
    """The allowed_signers file approval commits are verified against: one line per key,
    its principal the person's identity (policy_file.IDENTITY keeps the line unambiguous)."""
    lines = [
        f'{identity} namespaces="git" {key}\n'
        for identity, keys in sorted(approvers.people.items())
        for key in keys
    ]
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "approvers_allowed_signers"
    path.write_text("".join(lines))
    return path


def _verifying(allowed_signers: Path) -> list[str]:
    return ["-c", "gpg.format=ssh", "-c", f"gpg.ssh.allowedSignersFile={allowed_signers.resolve()}"]


async def signer_of(git: GitRepo, commit: str, allowed_signers: Path) -> str | None:
    """The principal whose allowed key signed `commit`; None: unsigned, another key, bad."""
    options = ["-1", "--no-show-signature", "--format=%G?%x00%GS"]
    out = await git.git(*_verifying(allowed_signers), "log", *options, commit)
    verdict, _, principal = out.decode(errors="replace").strip().partition("\0")
    return principal if verdict == "G" and principal else None


@dataclass
class _Change:
    commit: str
    time: int
    verdict: str  # git's %G?
    signer: str
    key: str  # the signing key's fingerprint, if any
    status: str  # A M D T
    mode: str
    blob: str
    path: str


def _parse_log(out: bytes) -> list[_Change]:
    """`log -z --raw` with the format below: a header of 5 fields after \\x01, then pairs
    of ":meta" and path. Read as a sequence, so no path (whatever it holds) can pass for a
    header."""
    tokens = out.split(b"\0")
    changes: list[_Change] = []
    header: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i].lstrip(b"\n")
        if token.startswith(b"\x01"):
            header = [t.decode(errors="replace") for t in [token[1:], *tokens[i + 1 : i + 5]]]
            i += 5
        elif token.startswith(b":") and header and i + 1 < len(tokens):
            _, mode, _, blob, status = token[1:].decode().split()
            path = tokens[i + 1].decode(errors="replace")  # refused unless plain ASCII
            sha, time, verdict, signer, key = header
            changes.append(
                _Change(sha, int(time), verdict, signer, key, status[0], mode, blob, path)
            )
            i += 2
        else:
            i += 1
    return changes


async def scan(
    git: GitRepo,
    old: str | None,
    new: str,
    allowed_signers: Path,
    claimed: set[str] | None = None,
) -> list[Decision | Refusal]:
    """Every decision file a commit in old..new (all of new's history if old is None) added,
    changed or removed, in commit order (oldest first): a Decision, or a Refusal saying why
    it does not count. `claimed`: the paths a decision may have come from before `old`
    (kept and updated by the caller); without it, a change after `old` is never an add."""
    out = await git.git(
        *_verifying(allowed_signers),
        "log", "-z", "--root", "--no-show-signature", "--reverse", "--date-order",
        "--full-history", "--raw", "--no-abbrev", "--no-renames", "--diff-merges=first-parent",
        "--format=%x01%H%x00%ct%x00%G?%x00%GS%x00%GK",
        new if old is None else f"{old}..{new}", "--", f"{APPROVALS}/",
    )  # fmt: skip
    changes = _parse_log(out)
    known = claimed if claimed is not None else set() if old is None else None
    for change in changes if known is not None else []:
        if change.status == "M" and change.path not in known:
            change.status = "A"  # a file no decision came from does not block its approver
        if change.status == "A" and _judge(change) is None:
            known.add(change.path)
    judged = [(change, _judge(change)) for change in changes]
    wanted = sorted({c.blob for c, why in judged if why is None})
    sizes = await _sizes(git, wanted)
    small = [sha for sha in wanted if sizes.get(sha, MAX_BYTES + 1) <= MAX_BYTES]
    blobs = await git.read_blobs(small)
    results: list[Decision | Refusal] = []
    for change, why in judged:
        if why is None and change.blob not in blobs:
            size = sizes.get(change.blob)
            why = f"over {MAX_BYTES} bytes ({size if size is not None else 'not fetched'})"
        if why is not None:
            results.append(Refusal(change.commit, change.path, why))
        else:
            results.append(_decision(change, blobs[change.blob]))
    return results


def _judge(change: _Change) -> str | None:
    """Why a changed path is not a decision, from what the log says; None: read the file."""
    if change.status == "D":
        return "a decision is never taken back: this commit removes it; the first one stands"
    if change.status != "A":
        return "a decision is never changed: this commit changes it; the first one stands"
    parts = change.path.split("/")
    if (
        len(parts) != 4
        or not RUN_ID.fullmatch(parts[1])
        or not STEP.fullmatch(parts[2])
        or not parts[3].endswith(".yaml")
        or not IDENTITY.fullmatch(parts[3].removesuffix(".yaml"))
    ):
        return f"not a decision file: the path must be {SHAPE}"
    if change.mode not in ("100644", "100755"):
        return "not a regular file (a symlink or a submodule)"
    if change.verdict != "G" or not change.signer:
        other = f"not a good signature by an approver's key (git's verdict: {change.verdict})"
        return VERDICTS.get(change.verdict, other).format(key=change.key)
    claimed = parts[3].removesuffix(".yaml")
    if claimed != change.signer:
        return f"forged: the file name claims {claimed}, but {change.signer} signed the commit"
    return None


async def _sizes(git: GitRepo, shas: Sequence[str]) -> dict[str, int]:
    """Blob sizes, before reading any; a blob a partial mirror never fetched has none."""
    if not shas:
        return {}
    out = await git.git(
        "cat-file",
        "--batch-check=%(objectname) %(objectsize)",
        stdin="".join(f"{sha}\n" for sha in shas).encode(),
    )
    listed = (line.partition(" ") for line in out.decode().splitlines())
    return {sha: int(size) for sha, _, size in listed if size.isdigit()}  # not: "missing"


def _decision(change: _Change, raw: bytes) -> Decision | Refusal:
    def refuse(reason: str, line: int = 0) -> Refusal:
        return Refusal(change.commit, change.path, reason, line)

    example = "write decision: approve (or reject) and, if you like, comment: <text>"
    try:
        documents = list(yamlsource.parse_documents(yamlsource.read_text(raw)))
    except yamlsource.YamlProblem as err:
        return refuse(err.message, err.line)
    if len(documents) != 1 or not isinstance(documents[0].data, dict):
        return refuse(f"not a mapping: {example}")
    document, data = documents[0], documents[0].data
    if unknown := sorted(set(map(str, data)) - set(FIELDS)):
        line = document.locate((unknown[0],))[0]
        hint = suggest(unknown[0], FIELDS)
        return refuse(f"unknown field {unknown[0]}{hint} (known: {', '.join(FIELDS)})", line)
    decision, comment = data.get("decision"), data.get("comment", "")
    if decision not in DECISIONS:
        line = document.locate(("decision",))[0] if "decision" in data else 0
        said = f"{decision!r} is" if "decision" in data else "missing:"
        return refuse(f"decision: {said} neither approve nor reject; {example}", line)
    if not isinstance(comment, str):
        return refuse("comment: must be text (quote it)", document.locate(("comment",))[0])
    run, step, _ = change.path.split("/")[1:]
    at = (change.commit, change.time, change.path)
    return Decision(run, step, change.signer, decision, comment, *at)
