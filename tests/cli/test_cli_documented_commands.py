"""Every ``ijepa train --preset ...`` line in the README and docs builds a valid config.

A documented command that stops with a ConfigError is the first thing a new user meets (the
variants list once showed ``--preset demo mask.pad=true``, refused since the demo preset took the
shared-context predictor). Lines with placeholders (``DIR``, ``<...>``) or a ``--config`` file are
skipped; everything else is parsed as the CLI parses it and validated, without training.
"""

import re
import shlex
from pathlib import Path

import pytest

from ijepa.cli import build_parser
from ijepa.cli.train import _config
from ijepa.config import validate

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_LINE = re.compile(r"^\s*(ijepa train --preset .*?)\s*(?:#.*)?$")


def documented_train_commands() -> list[tuple[str, str]]:
    """``(file name, command)`` for each ``ijepa train --preset`` line of a fenced code block."""
    found = []
    for path in DOCS:
        fenced = False
        for line in path.read_text().splitlines():
            if line.lstrip().startswith("```"):
                fenced = not fenced
                continue
            match = _LINE.match(line) if fenced else None
            if match and not re.search(r"<|DIR|\.\.\.|\\$|--config", match.group(1)):
                found.append((path.name, match.group(1)))
    return found


COMMANDS = documented_train_commands()


def test_the_docs_document_train_commands():
    assert len(COMMANDS) >= 8, COMMANDS  # the README's quick start and the variants list at least


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[c for _, c in COMMANDS])
def test_documented_train_command_is_a_valid_config(where, command):
    args = build_parser().parse_args(shlex.split(command)[1:])
    validate(_config(args))  # raises ConfigError with the offending keys
