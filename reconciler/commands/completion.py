"""`reconciler completion bash|zsh|fish`: the shell's completion script, from argcomplete
(completions come from the same parser that checks the flags, so they never drift)."""

from __future__ import annotations

import argparse

from reconciler.commands.common import Subcommands

SHELLS = ("bash", "zsh", "fish")


def register(sub: Subcommands) -> None:
    p = sub.add_parser(
        "completion",
        help="print the shell completion script",
        description="bash: source <(reconciler completion bash); zsh: the same in ~/.zshrc;"
        " fish: reconciler completion fish > ~/.config/fish/completions/reconciler.fish",
    )
    p.add_argument("shell", choices=SHELLS)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import argcomplete

    print(argcomplete.shellcode(["reconciler"], shell=args.shell))
    return 0
