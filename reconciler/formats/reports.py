"""The files the daemon writes under the records path besides run records: `_errors.md`
(invalid manifests, at file, line, column and field), `_refused.md` (an unsigned revision),
`_approvals.md` (decisions that reached no waiting step), and the plans of plan branches
(`plans/<branch>/<workflow>.md`). The one owner of their paths and content.

None of them names the head revision or a time: the daemon's own record commits move the
head, and a file that changed with every head would commit itself forever.
"""

from __future__ import annotations

from reconciler.formats.escaping import markdown_code, markdown_text
from reconciler.formats.tables import table
from reconciler.manifest.errors import ManifestIssue, format_path

ERRORS_FILE = "_errors.md"
REFUSED_FILE = "_refused.md"
APPROVALS_FILE = "_approvals.md"


def errors_path(records_path: str) -> str:
    return f"{records_path.rstrip('/')}/{ERRORS_FILE}"


def refused_path(records_path: str) -> str:
    return f"{records_path.rstrip('/')}/{REFUSED_FILE}"


def approvals_path(records_path: str) -> str:
    return f"{records_path.rstrip('/')}/{APPROVALS_FILE}"


def own_report_paths(records_path: str) -> set[str]:
    """Files the daemon itself writes and removes under the records path."""
    return {errors_path(records_path), refused_path(records_path), approvals_path(records_path)}


def approvals_markdown(unreached: list[str]) -> bytes:
    """Decisions under approvals/ that reached no waiting step (docs/approvals.md)."""
    lines = [
        "# Approvals that did nothing",
        "",
        "Each was committed for a run or step that is not waiting for it. Decisions on a",
        "waiting step are in that run's record.",
        "",
        *(f"- {markdown_text(line)}" for line in unreached),
        "",
    ]
    return "\n".join(lines).encode()


def plan_dir(records_path: str, branch: str) -> str:
    return f"{records_path.rstrip('/')}/plans/{branch}"


def errors_markdown(issues: list[ManifestIssue]) -> bytes:
    lines = [
        "# Invalid workflow manifests",
        "",
        "These files were not run (every other workflow was).",
        "Fix them and push; this file is rewritten on every revision, removed when all is valid.",
        "",
    ]
    rows = [
        (
            markdown_code(i.file),
            i.line,
            i.column,
            markdown_code(format_path(i.path) or "—"),
            markdown_text(i.message),
        )
        for i in issues
    ]
    lines += table(["file", "line", "column", "field", "problem"], rows)
    return ("\n".join(lines) + "\n").encode()


def errors_commit_message(issues: list[ManifestIssue]) -> str:
    if issues:
        return f"reconciler: {len(issues)} invalid manifest error(s)"
    return "reconciler: all manifests valid"


def refused_markdown(judged: str, branch: str) -> bytes:
    # Names the judged commit, not the head: the head moves with every record commit.
    return (
        f"# Refused revision\n\nCommit {markdown_code(judged)} on {markdown_code(branch)}"
        " is not signed by an allowed key, so nothing in it was executed. Commits that only"
        " touch the records path are not judged; the next signed commit runs.\n"
    ).encode()


def plan_markdown(name: str, order_text: str, branch: str, head: str, dry_run: str) -> bytes:
    return (
        f"# Plan: {markdown_text(name)} on {markdown_code(branch)}\n\n"
        f"What merging {markdown_code(branch)} (at `{head[:12]}`) would run."
        " Nothing here was executed.\n\n"
        f"## Order\n\n```\n{order_text}\n```\n\n## Server-side dry run\n\n```\n{dry_run}\n```\n"
    ).encode()
