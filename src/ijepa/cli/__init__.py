"""The ``ijepa`` command line: parse, build the config, configure logging, call the library.

Each subcommand lives in its own module exposing ``register(subparsers)``; the handler it sets
(``func``) returns a process exit code. The project's own errors (config, data, checkpoint, ...:
:func:`user_errors`) end with one clear line on stderr and exit code 2; any other exception is a
bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from ijepa import __version__

# subcommand modules, in the order their commands appear in --help
_COMMAND_MODULES = ("train", "evaluate", "search", "viz", "convert", "launch")

logger = logging.getLogger("ijepa")


def user_errors() -> tuple[type[BaseException], ...]:
    """The project's own error types: bad input or a failed run, reported as one line.

    Only these: an internal error (a bare ``ValueError`` or ``KeyError`` from a bug) keeps its
    traceback and exit code 1.
    """
    from ijepa.checkpoint import CheckpointError
    from ijepa.config import ConfigError
    from ijepa.data import DataSpecError
    from ijepa.dist import DistributedError
    from ijepa.errors import UsageError
    from ijepa.eval.cache import StaleFeatureCacheError
    from ijepa.masks import MaskSamplingError
    from ijepa.search.index import SearchError
    from ijepa.train.batches import DataLoaderError
    from ijepa.train.guards import TrainingDiverged
    from ijepa.train.local_launch import LaunchError

    return (
        ConfigError,
        DataSpecError,
        CheckpointError,
        DataLoaderError,
        MaskSamplingError,
        TrainingDiverged,
        DistributedError,
        LaunchError,
        StaleFeatureCacheError,
        SearchError,
        UsageError,
    )


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="ijepa",
        description="I-JEPA: pretrain, evaluate, inspect and convert image JEPA models.",
    )
    parser.add_argument("--version", action="version", version=f"ijepa {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"ijepa.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"ijepa.cli.{name}":
                continue  # that command group is not part of this build
            raise
        module.register(sub)
    return parser


def configure_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Console logging for the CLI (library code never configures logging)."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``ijepa`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    try:
        return int(args.func(args) or 0)
    except user_errors() as err:
        logger.debug("details", exc_info=True)  # the traceback, with -v
        print(f"ijepa {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ijepa {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
