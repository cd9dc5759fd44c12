"""Which errors the command line shows as one line: the project's own types only."""

from __future__ import annotations

import argparse

import pytest

from ijepa import cli
from ijepa.checkpoint import CheckpointError
from ijepa.config import ConfigError
from ijepa.errors import UsageError


def _run_with(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> int:
    """``ijepa train ...`` whose handler raises ``error``."""

    def handler(args: argparse.Namespace) -> int:
        raise error

    real = cli.build_parser

    def parser() -> argparse.ArgumentParser:
        p = real()
        p.set_defaults(func=handler)
        for action in p._subparsers._group_actions:  # type: ignore[union-attr]
            for sub in action.choices.values():
                sub.set_defaults(func=handler)
        return p

    monkeypatch.setattr(cli, "build_parser", parser)
    return cli.main(["train"])


@pytest.mark.parametrize(
    "error", [ConfigError("bad key x"), UsageError("bad option y"), CheckpointError("bad file z")]
)
def test_project_errors_are_one_line_and_exit_2(monkeypatch, capsys, error):
    assert _run_with(monkeypatch, error) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"ijepa train: error: {error}"


@pytest.mark.parametrize("error", [ValueError("a bug"), FileNotFoundError("a bug"), KeyError("k")])
def test_internal_errors_keep_their_traceback(monkeypatch, error):
    with pytest.raises(type(error)):
        _run_with(monkeypatch, error)


def test_user_errors_are_the_projects_own_types():
    errors = cli.user_errors()
    assert ValueError not in errors and FileNotFoundError not in errors
    assert all(e.__module__.startswith("ijepa.") for e in errors)
