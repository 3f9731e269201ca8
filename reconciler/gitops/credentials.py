"""How git authenticates to the remote: files as a mounted Secret provides them (an SSH key
and known_hosts, or an HTTPS token), passed to git without their contents ever appearing in
a command line, an environment dump or a log."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ASKPASS = (
    '#!/bin/sh\ncase "$1" in\n  Username*) echo x-access-token ;;\n'
    '  *) cat "$RECONCILER_TOKEN_FILE" ;;\nesac\n'
)


@dataclass(frozen=True)
class Credentials:
    ssh_key: Path | None = None
    known_hosts: Path | None = None
    token_file: Path | None = None


def git_environment(credentials: Credentials, workdir: Path) -> dict[str, str]:
    """The environment of every git command: no inherited GIT_* variable, no prompt, no
    system config, the C locale (we parse its messages), and the credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_TERMINAL_PROMPT="0", GIT_CONFIG_NOSYSTEM="1", LC_ALL="C")
    if credentials.ssh_key is not None:
        parts = ["ssh", "-i", str(credentials.ssh_key), "-o", "IdentitiesOnly=yes"]
        parts += ["-o", "BatchMode=yes"]
        if credentials.known_hosts is not None:
            parts += ["-o", f"UserKnownHostsFile={credentials.known_hosts}"]
            parts += ["-o", "StrictHostKeyChecking=yes"]
        env["GIT_SSH_COMMAND"] = " ".join(parts)
    if credentials.token_file is not None:
        env["GIT_ASKPASS"] = str(askpass_script(workdir))
        env["RECONCILER_TOKEN_FILE"] = str(credentials.token_file)
    return env


def askpass_script(workdir: Path) -> Path:
    """git's askpass hook reads the token from its file when git asks for it."""
    script = workdir / "askpass.sh"
    if not script.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        script.write_text(ASKPASS)
        script.chmod(0o700)
    return script
