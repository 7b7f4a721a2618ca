"""Log lines with every credential-shaped value masked, tracebacks included (an error's
message may quote one): the command line's and the daemon's log handlers use it."""

from __future__ import annotations

import logging


class MaskingFormatter(logging.Formatter):
    """A formatter whose lines pass through :func:`bedrot_lab.secrets.scrub`. The detectors
    are imported with the first line logged, not when a command starts."""

    def format(self, record: logging.LogRecord) -> str:
        from .secrets import scrub

        return scrub(super().format(record))[0]
