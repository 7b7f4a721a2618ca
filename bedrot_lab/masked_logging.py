"""Log lines with every credential-shaped value masked, and every value of the environment's
credentials (the tracking server's password), tracebacks included (an error's message may
quote one): the command line's and the daemon's log handlers use it."""

from __future__ import annotations

import logging


class MaskingFormatter(logging.Formatter):
    """A formatter whose lines pass through :func:`bedrot_lab.secrets.scrub`. The detectors
    are imported with the first line logged, not when a command starts."""

    def format(self, record: logging.LogRecord) -> str:
        from .secrets import MASK, environment_credentials, scrub

        line = super().format(record)
        for value in sorted(environment_credentials(), key=len, reverse=True):
            line = line.replace(value, MASK)
        return scrub(line)[0]
