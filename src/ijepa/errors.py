"""Error types that several rooms raise: a bad configuration, and other bad input.

They live here, below every other module, so that raising them imports nothing else (the config
and the trackers both raise :class:`ConfigError`). The command line shows the project's own error
types (these, ``DataSpecError``, ``CheckpointError``, ...; see :func:`ijepa.cli.user_errors`) as
one line and exit code 2. Any other exception, a bare ``ValueError`` from a bug included, keeps
its traceback.
"""

from __future__ import annotations


class UsageError(ValueError):
    """A path, an option or a value given by the user cannot be used; the message says why."""


class ConfigError(ValueError):
    """A configuration problem, with a message that names the offending key or file."""
