"""Shell completion (argcomplete): the scripts, and completions from the real parser."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.cli import main


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_each_shell_gets_a_completion_script(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", shell]) == 0
    assert "reconciler" in capsys.readouterr().out


def complete(line: str, tmp_path: Path) -> list[str]:
    """What the shell would offer for `line`, as argcomplete answers the bash script."""
    answer = tmp_path / "answer"
    env = {
        **os.environ,
        "_ARGCOMPLETE": "1",
        "_ARGCOMPLETE_IFS": "\n",
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
        "_ARGCOMPLETE_STDOUT_FILENAME": str(answer),
    }
    subprocess.run([sys.executable, "-m", "reconciler"], env=env, timeout=60, check=True)
    return answer.read_text().split("\n")


def test_commands_and_flags_complete(tmp_path: Path) -> None:
    assert complete("reconciler vali", tmp_path) == ["validate "]
    flags = complete("reconciler daemon --lease-", tmp_path)
    assert {f.strip() for f in flags} >= {"--lease-namespace", "--lease-name", "--lease-duration"}
