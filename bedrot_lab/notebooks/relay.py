"""A run's recorder, relayed from the lab's process to a notebook's kernel or a script.

The lab opens the MLflow store and the run; the kernel's ``notebook_context()`` records
through it over a Unix socket (``multiprocessing.connection``, with a key only the handoff
file holds) instead of importing MLflow and opening the store a second time: that took the
kernel longer than most notebooks take to run. One writer per run, too.
"""

from __future__ import annotations

import io
import secrets
import threading
from functools import cached_property
from pathlib import Path
from typing import Any

from ..errors import BedrotLabError

#: the recorder's methods a kernel may call (see :class:`~bedrot_lab.tracking.RunRecorder`)
RELAYED = frozenset({"log_params", "log_metrics", "flush", "set_tags", "log_text", "log_dict", "log_file",
                     "log_table", "log_input", "log_bytes", "run_id"})


class RelayError(BedrotLabError):
    """What the lab's process answered a call it could not carry out."""


class RecorderRelay:
    """Serves ``recorder`` at a Unix socket in ``folder`` until :meth:`close`; :attr:`address`
    and :attr:`authkey` go in the handoff file."""

    def __init__(self, recorder: Any, folder: Path):
        from multiprocessing.connection import Listener

        self.recorder = recorder
        self.address = str(folder / "recorder.sock")
        self.authkey = secrets.token_bytes(32)
        self._listener = Listener(self.address, family="AF_UNIX", authkey=self.authkey)
        self._closed = False
        self._accepting = threading.Thread(target=self._accept, name="bedrot-relay", daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                connection = self._listener.accept()
            except Exception:  # closed, or a caller without the key: the next one may have it
                if self._closed:
                    return
                continue
            threading.Thread(target=self._serve, args=(connection,), name="bedrot-relay-call", daemon=True).start()

    def _serve(self, connection: Any) -> None:
        with connection:
            while True:
                try:
                    method, args, kwargs = connection.recv()
                except (EOFError, OSError):
                    return
                try:
                    connection.send(("ok", self._call(method, args, kwargs)))
                except Exception as exc:
                    connection.send(("error", f"{type(exc).__name__}: {exc}"))

    def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if method not in RELAYED:
            raise RelayError(f"{method!r} is not one of the recorder's calls a notebook may make")
        if method == "run_id":
            return self.recorder.run_id
        if method == "log_bytes":
            from ..context import log_bytes

            return log_bytes(self.recorder, *args, **kwargs)
        if method == "log_table":  # masked again with what this run masked by name (a param's value)
            frame, artifact_file = args
            return self.recorder.log_table(self.recorder.masker.frame(frame, artifact_file), artifact_file)
        return getattr(self.recorder, method)(*args, **kwargs)

    def close(self) -> None:
        self._closed = True
        self._listener.close()


class RelayedRecorder:
    """The recorder of a notebook's or script's context: each call carried out by the lab's
    process (see :class:`RecorderRelay`). Its masker masks tables before they are sent."""

    def __init__(self, address: str, authkey: bytes):
        from multiprocessing.connection import Client

        from ..secrets import Masker

        self._connection = Client(address, family="AF_UNIX", authkey=authkey)
        self._lock = threading.Lock()
        self.masker = Masker()

    @cached_property
    def run_id(self) -> str:
        return self._call("run_id")

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        """Sent as the PNG it draws (a figure does not travel between processes)."""
        image = io.BytesIO()
        figure.savefig(image, format="png")
        self._call("log_bytes", image.getvalue(), artifact_file)

    def __getattr__(self, name: str) -> Any:
        if name not in RELAYED:
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._call(name, *args, **kwargs)

        return call

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            try:
                self._connection.send((method, args, kwargs))
                status, value = self._connection.recv()
            except (EOFError, OSError) as exc:
                raise RelayError(f"the lab's process is gone; the run is no longer recorded ({exc})") from None
        if status == "error":
            raise RelayError(f"the lab could not record {method}: {value}")
        return value
