"""`rgrid completion SHELL`: the script that lets bash, zsh or fish complete
rgrid's commands and options (argcomplete answers from rgrid's own parser,
so the completion never falls behind the commands).

    eval "$(rgrid completion bash)"        # ~/.bashrc
    eval "$(rgrid completion zsh)"         # ~/.zshrc
    rgrid completion fish | source         # ~/.config/fish/config.fish
"""

from __future__ import annotations

from rgrid.cli.parser import Commands

SHELLS = ("bash", "zsh", "fish")


def completion(shell: str) -> int:
    """Print the completion script for SHELL (bash, zsh or fish)."""
    import argcomplete

    print(argcomplete.shellcode(["rgrid"], shell=shell), end="")
    return 0


def add_commands(commands: Commands) -> None:
    p = commands.add("completion", completion)
    p.add_argument("shell", metavar="SHELL", choices=SHELLS, help="bash, zsh or fish.")
