"""Jobs in a process of their own: the daemon runs an ``own_process`` job as
``bedrot-lab daemon run-job --log-json NAME``, whose log records come back as JSON lines
on its stderr and are logged by the daemon as if they were its own."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import IO

#: the child's logger whose records go back to the daemon
LOGGER = "bedrot_lab"


class JsonLines(logging.Handler):
    """Each record as one JSON line on stderr: what :func:`forward` turns back into a record."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            exc_text = logging.Formatter().formatException(record.exc_info) if record.exc_info else record.exc_text
            line = json.dumps({"name": record.name, "levelno": record.levelno, "levelname": record.levelname,
                               "msg": record.getMessage(), "created": record.created, "msecs": record.msecs,
                               "exc_text": exc_text, "process": record.process})
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def log_as_json() -> None:
    """Send this process's ``bedrot_lab`` records, from INFO up, to stderr as JSON lines."""
    logger = logging.getLogger(LOGGER)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    logger.addHandler(JsonLines())


def start(lake: Path, job: str) -> subprocess.Popen[bytes]:
    """Start ``run-job`` of ``job`` for ``lake`` in a session of its own (the daemon passes a
    stop on as SIGTERM; a Ctrl-C in the daemon's terminal reaches the daemon only)."""
    return subprocess.Popen(
        [sys.executable, "-m", "bedrot_lab", "--lake", str(lake), "daemon", "run-job", "--log-json", job],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def forward(stream: IO[bytes], job: str) -> str:
    """Log what a child wrote on ``stream`` until it closes it: its JSON records as they were
    made, any other line (a crash before its logging was set up) as a warning of ``job``.
    Returns the last line that was not a record (the likeliest reason for a crash), or ""."""
    fallback = logging.getLogger(f"{LOGGER}.daemon.{job}")
    last = ""
    for raw in stream:
        line = raw.decode("utf-8", "replace").rstrip()
        try:
            fields = json.loads(line)
            record = logging.makeLogRecord(fields if isinstance(fields, dict) and "name" in fields else {})
        except ValueError:
            record = None
        if record is not None and record.name.startswith(LOGGER):
            logging.getLogger(record.name).handle(record)
        elif line:
            last = line
            fallback.warning("%s", line)
    return last
