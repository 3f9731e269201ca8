"""The daemon's settings, in one table: each row gives the field of DaemonConfig, its
default, its help, and so its command-line flag (`--max-concurrent-workflows`) and its
environment variable (`RECONCILER_MAX_CONCURRENT_WORKFLOWS`; a flag wins over the
variable). commands/daemon.py builds the parser from the table, and nothing else says
what a default is."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from reconciler import DEFAULT_NAMESPACE
from reconciler.cluster.lease import DEFAULT_DURATION
from reconciler.daemon.flagvalues import (
    BadVariable,
    count,
    history,
    lease_seconds,
    seconds,
    switch,
)
from reconciler.gitops.credentials import Credentials
from reconciler.gitops.git import AUTHOR_EMAIL, AUTHOR_NAME, GIT_TIMEOUT
from reconciler.kube.origin import process_identity
from reconciler.manifest.durations import format_duration
from reconciler.manifest.policy import Policy

LOGS = ("json", "text")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class Setting:
    name: str  # the DaemonConfig field (a flag and variable are derived from it)
    default: Any
    help: str
    parse: Callable[[str], Any] = str
    env: str | None = None  # a variable name other than the derived one
    switch: bool = False  # a flag without a value; its variable is true when "1"
    choices: tuple[str, ...] | None = None
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def variable(self) -> str:
        return self.env or "RECONCILER_" + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("repo", None, "local path or URL (file://, ssh://, https://) of the repository"),
    Setting("branch", "main", "the branch whose workflows run"),
    Setting("path", "workflows/", "the folder of workflow manifests"),
    Setting("records_path", "runs/", "where run records are committed"),
    Setting("workdir", Path(".reconciler"), "the git mirror and record spool", Path),
    Setting(
        "interval",
        30.0,
        "time between remote checks, e.g. 30s, 1m (±10%% jitter)",
        seconds,
        metavar="DURATION",
    ),
    Setting("max_concurrent_workflows", 4, "runs at once", count, metavar="N"),
    Setting("max_concurrent_steps", None, "global limit on steps at once", count, metavar="N"),
    Setting("listen", "127.0.0.1:8080", "address of /metrics, /healthz, /readyz, /webhook"),
    Setting("webhook_secret_file", None, "shared secret of signed webhooks", Path),
    Setting("ssh_key", None, "SSH key file for the remote", Path),
    Setting("known_hosts", None, "known_hosts file for the remote", Path),
    Setting("token_file", None, "HTTPS token file for the remote", Path),
    Setting("author_name", AUTHOR_NAME, "author of record commits"),
    Setting("author_email", AUTHOR_EMAIL, "author e-mail of record commits"),
    Setting("signing_key", None, "SSH key file to sign record commits with", Path),
    Setting(
        "verify_signatures",
        None,
        "run only revisions signed by a key of --allowed-signers: a revision whose newest"
        " commit outside the records path is not is refused and recorded in runs/_refused.md",
        choices=("ssh",),
    ),
    Setting("allowed_signers", None, "allowed_signers file for --verify-signatures", Path),
    Setting("leader_elect", False, "elect one leader among replicas (a Lease)", switch=True),
    Setting(
        "lease_namespace", DEFAULT_NAMESPACE, "namespace of the Lease", env="RECONCILER_NAMESPACE"
    ),
    Setting("lease_name", "reconciler", "name of the Lease"),
    Setting(
        "lease_duration",
        DEFAULT_DURATION,
        "how long a leader's Lease lasts unrenewed: a standby takes over this long after the"
        " leader stops renewing",
        lease_seconds,
        metavar="DURATION",
    ),
    Setting(
        "capture_namespace",
        DEFAULT_NAMESPACE,
        "where captured Secret values are kept",
        env="RECONCILER_NAMESPACE",
    ),
    Setting("once", False, "one sync, wait for its runs, exit with their status", switch=True),
    Setting(
        "execution_history",
        10,
        "finished WorkflowExecutions kept per workflow once their record is in git; older"
        " ones are deleted with what they own, so `reconciler rollback` reaches back N runs"
        " ('all': keep every one)",
        history,
        metavar="N",
    ),
    Setting(
        "plan_branches",
        None,
        "branches to plan (validate + server dry-run, committed to the branch), never run",
        metavar="GLOB",
    ),
    Setting(
        "git_timeout",
        GIT_TIMEOUT,
        "the longest any git command may run, e.g. 2m: a hung remote's push is killed (its"
        " whole process group) and tried again",
        seconds,
        metavar="DURATION",
    ),
    Setting(
        "git_client_fetch",
        False,
        "fetch an http(s) remote with the git client every time; by default the daemon"
        " fetches it itself after the first fetch (one connection kept open, two requests)",
        switch=True,
    ),
    Setting("log_format", "json", "json: one JSON object per line; text: for people", choices=LOGS),
    Setting("log_level", "INFO", "the least severe messages logged", str.upper, choices=LEVELS),
    Setting(
        "prometheus_url",
        None,
        "Prometheus that checks query unless a workflow names its own (spec.prometheus)",
    ),
)
BY_NAME = {s.name: s for s in SETTINGS}


def _default(name: str) -> Any:
    return field(default=BY_NAME[name].default)


@dataclass
class DaemonConfig:
    repo: str
    workdir: Path = _default("workdir")
    branch: str = _default("branch")
    path: str = _default("path")
    records_path: str = _default("records_path")
    interval: float = _default("interval")
    max_concurrent_workflows: int = _default("max_concurrent_workflows")
    max_concurrent_steps: int | None = _default("max_concurrent_steps")
    listen: str = _default("listen")
    webhook_secret_file: Path | None = _default("webhook_secret_file")
    credentials: Credentials = field(default_factory=Credentials)
    author_name: str = _default("author_name")
    author_email: str = _default("author_email")
    signing_key: Path | None = _default("signing_key")
    allowed_signers: Path | None = None  # set: only commits signed by these keys run
    own_signers: Path | None = None  # the daemon's own public key, from signing_key
    leader_elect: bool = _default("leader_elect")
    lease_namespace: str = _default("lease_namespace")
    lease_name: str = _default("lease_name")
    lease_duration: float = _default("lease_duration")
    identity: str = field(default_factory=process_identity)
    capture_namespace: str = _default("capture_namespace")
    once: bool = _default("once")
    # finished WorkflowExecutions kept per workflow once their record is in git (None: all)
    execution_history: int | None = _default("execution_history")
    plan_branches: str | None = _default("plan_branches")  # planned, never executed
    git_timeout: float = _default("git_timeout")
    git_client_fetch: bool = _default("git_client_fetch")
    prometheus_url: str | None = _default("prometheus_url")
    policy: Policy = field(default_factory=Policy)


def config_problems(config: DaemonConfig) -> list[str]:
    """What makes a config unsafe to start with, each said so the operator can fix it."""
    problems = []
    workflows = config.path.strip("/") + "/"
    records = config.records_path.strip("/") + "/"
    if workflows == "/" or records == "/":
        problems.append("--path and --records-path must each name a folder, not the root")
    elif records.startswith(workflows) or workflows.startswith(records):
        # The daemon commits under the records path without a signature check on its own
        # commits; nested, its commits would change what runs (or records would be loaded).
        problems.append(
            f"--records-path {config.records_path!r} and --path {config.path!r} overlap:"
            " give them separate folders (e.g. workflows/ and runs/)"
        )
    if config.allowed_signers is not None and config.signing_key is None:
        # unsigned record commits would have to be skipped unjudged: anyone who may push
        # could then pass a commit off as the daemon's own
        problems.append(
            "--verify-signatures needs --signing-key KEY: the daemon signs its record"
            " commits with it, and only commits signed by it are skipped unjudged"
        )
    return problems


def add_arguments(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """One flag per setting, its default taken from its variable, else from the table."""
    for s in SETTINGS:
        value = environ.get(s.variable)
        help_text = f"{s.help} [{s.variable}]"
        if s.switch:
            parser.add_argument(
                s.flag, action="store_true", default=switch(s.variable, value), help=help_text
            )
            continue
        parser.add_argument(
            s.flag,
            type=s.parse,
            default=s.default if value is None else _from_variable(s, value),
            required=s.default is None and s.name == "repo" and value is None,
            choices=s.choices,
            metavar=s.metavar,
            help=help_text + ("" if s.default is None else f" (default: {shown(s)})"),
        )


def shown(s: Setting) -> str:
    """A default as a user would write it: 30s, not 30.0."""
    if s.parse in (seconds, lease_seconds):
        return format_duration(s.default)
    return str(s.default)


def _from_variable(s: Setting, value: str) -> Any:
    try:
        parsed = s.parse(value)
    except (ValueError, argparse.ArgumentTypeError) as err:
        return BadVariable(s.variable, value, str(err))
    if s.choices and parsed not in s.choices:
        return BadVariable(s.variable, value, f"expected one of {', '.join(s.choices)}")
    return parsed


def bad_variables(args: argparse.Namespace) -> list[BadVariable]:
    """The refused environment variables whose flags were not given instead."""
    return [v for v in vars(args).values() if isinstance(v, BadVariable)]


def from_arguments(args: argparse.Namespace, policy: Policy) -> DaemonConfig:
    """The config the parsed flags describe (--verify-signatures checked by the caller)."""
    names = {f.name for f in fields(DaemonConfig)}
    values = {s.name: getattr(args, s.name) for s in SETTINGS if s.name in names}
    values["allowed_signers"] = args.allowed_signers if args.verify_signatures == "ssh" else None
    return DaemonConfig(
        **values,
        credentials=Credentials(args.ssh_key, args.known_hosts, args.token_file),
        policy=policy,
    )
