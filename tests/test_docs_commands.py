"""Every `vggjit ...` command written in README.md and docs/ parses with today's CLI.

The commands themselves run in the feature tests (classify, stylize, demo, quantize, weights,
drivers, warmup) and in the bench; this test makes sure the docs never mention a sub-command
or an option that does not exist (argparse exits with status 2 on those).
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from vggjit.cli import COMMANDS as SUB_COMMANDS
from vggjit.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_FENCES = ("", "sh", "bash", "console", "shell")
ENV_PREFIX = re.compile(r"^(\$\s+)?([A-Z_]+=\S+\s+)*")


def _command(text: str) -> str | None:
    text = ENV_PREFIX.sub("", text.split(" #")[0].strip()).strip()
    if not text.startswith("vggjit ") or "..." in text or "[" in text:
        return None
    words = text.split()
    return text if words[1] in SUB_COMMANDS or words[1].startswith("-") else None


def documented_commands():
    found, fence = [], None
    for path in DOCS:
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.lstrip().startswith("```"):
                fence = None if fence is not None else line.strip()[3:].strip()
                continue
            if fence is not None:
                spans = [line] if fence in SHELL_FENCES else []
            else:
                spans = re.findall(r"`([^`]+)`", line)
            for span in spans:
                command = _command(span)
                if command:
                    found.append(pytest.param(command, id=f"{path.name}:{number}"))
    return found


COMMANDS = documented_commands()


def test_the_docs_show_every_sub_command():
    assert set(SUB_COMMANDS) <= {str(p.values[0]).split()[1] for p in COMMANDS}


@pytest.mark.parametrize("command", COMMANDS)
def test_documented_command_parses(command):
    argv = [a for a in shlex.split(command.replace("$COMMON", "")) if not a.startswith("$")][1:]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # A bare mention in prose (`vggjit classify`) names a command without its arguments.
        mention = all(not a.startswith("-") and "." not in a and "/" not in a for a in argv)
        assert exc.code == 0 or mention, f"`{command}` does not parse with the current CLI"
        return
    assert args.command == argv[0]
