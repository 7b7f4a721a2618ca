"""One family of errors: each is a mistake or a refusal the user can act on, with its exit code."""

from __future__ import annotations


class BedrotLabError(Exception):
    """A problem reported as one line (the message says what to do), with no traceback
    unless ``--debug``. ``exit_code`` is what the command exits with: 2 for a usage or
    configuration mistake, 1 for a refusal or a failure."""

    exit_code = 1


class UsageError(BedrotLabError):
    """A mistake in what was asked: a name, a param, a configuration key (exit code 2)."""

    exit_code = 2
