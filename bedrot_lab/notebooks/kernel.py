"""One notebook executed by papermill in a process of its own, which also renders it as HTML.

The lab's process opens and records the MLflow run; this process (``python -m
bedrot_lab.notebooks.kernel JOB``) starts the kernel (ipykernel in the lab's own Python,
over Unix sockets), imports papermill while the kernel starts, runs the cells and renders
the executed notebook with nbconvert. Two processes, so that the run's bookkeeping and the
notebook's execution use two cores instead of taking turns on one; and the lab's process
keeps its own signal handling, which nbclient would take over (a stopped run ends KILLED).

It tells the lab what it does on its stdout, one line each: ``kernel PID`` once the kernel
runs, ``cell N`` as cell N (from 0) starts; the outcome is written to the job's ``result``
file: ``{"cell_error": {...} or null, "error": "..." or null}``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..processes import end_with_parent

#: the kernel bedrot-lab runs notebooks on: ipykernel in the lab's own Python
KERNEL_NAME = "bedrot-lab-python"
#: seconds the kernel gets to start
START_TIMEOUT = 120
#: seconds between two looks at the notebook's process
POLL_SECONDS = 0.2


def html_of(executed: Path) -> Path:
    """Where the HTML rendering of executed notebook ``executed`` is written: beside it."""
    return executed.with_suffix(".html")


class NotebookProcess:
    """The process executing one notebook: ``notebook`` into ``executed`` (and ``executed`` with
    ``.html``), ``parameters`` injected, the kernel started with ``env`` in the notebook's folder."""

    def __init__(self, notebook: Path, executed: Path, parameters: Mapping[str, Any], *, folder: Path,
                 env: Mapping[str, str]):
        self.log = folder / "kernel.log"
        self._result = folder / "result.json"
        self._job = folder / "job.json"
        self._job.write_text(json.dumps({
            "notebook": str(notebook), "executed": str(executed), "html": str(html_of(executed)),
            "parameters": dict(parameters), "folder": str(folder), "env": dict(env), "result": str(self._result)}))
        self._process: subprocess.Popen[bytes] | None = None
        self._kernel_pid: int | None = None

    def start(self) -> None:
        with self.log.open("w") as log:
            # a session of its own: Ctrl-C reaches the lab only, which stops this process
            self._process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(self._job)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=log, start_new_session=True, preexec_fn=end_with_parent)  # never unrecorded

    def cells(self) -> Iterator[int]:
        """The index of each cell as it starts, until the notebook ends."""
        for line in self._lines():
            what, _, number = line.partition(" ")
            if what == "kernel":
                self._kernel_pid = int(number)
            elif what == "cell":
                yield int(number)

    def _lines(self) -> Iterator[str]:
        """The process's lines. Read in short waits, never one blocking read: a signal that the
        kernel hands to another thread of this process runs its handler only when the main
        thread next runs Python, and a stop must not wait for the notebook's next line."""
        assert self._process is not None and self._process.stdout is not None
        fd = self._process.stdout.fileno()
        pending = b""
        while True:
            if not select.select([fd], [], [], POLL_SECONDS)[0]:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            pending += chunk
            *lines, pending = pending.split(b"\n")
            yield from (line.decode("utf-8", "replace").strip() for line in lines)

    def wait(self) -> dict[str, Any] | None:
        """Wait for the process to end; papermill's account of a cell that raised, None when every
        cell ran. Any other failure raises, naming what the process said last."""
        assert self._process is not None
        for _ in self.cells():
            pass
        code = self._process.wait()
        try:
            result = json.loads(self._result.read_text())
        except (OSError, ValueError):
            result = {"error": f"the notebook's process exited with code {code}: {_last_line(self.log)}"}
        if result.get("error"):
            from .errors import NotebookError

            raise NotebookError(result["error"])
        return result.get("cell_error")

    def stop(self) -> None:
        """Kill the kernel and the process at once (the run was stopped)."""
        for pid in (self._kernel_pid, self._process.pid if self._process else None):
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self._process is not None:
            self._process.wait()


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else "(it said nothing)"


# -- the notebook's process -----------------------------------------------------------------------


def main(job_file: str) -> None:
    """Execute the job of ``job_file`` (see :class:`NotebookProcess`)."""
    job = json.loads(Path(job_file).read_text())
    result: dict[str, Any] = {"cell_error": None, "error": None}
    renderer = _Renderer()
    kernel = None
    try:
        kernel = _start_kernel(Path(job["notebook"]), Path(job["folder"]), job["env"])
        _say(f"kernel {kernel.provisioner.process.pid}")
        import papermill
        from papermill.exceptions import PapermillExecutionError

        try:
            papermill.execute_notebook(
                job["notebook"], job["executed"], parameters=job["parameters"], kernel_name=KERNEL_NAME, km=kernel,
                progress_bar=False, log_output=False, start_timeout=START_TIMEOUT,
                on_cell_start=_on_cell_start(renderer))
        except PapermillExecutionError as exc:
            result["cell_error"] = {"cell_index": exc.cell_index, "exec_count": exc.exec_count, "source": exc.source,
                                    "ename": exc.ename, "evalue": exc.evalue, "traceback": exc.traceback}
    except Exception as exc:
        result["error"] = f"the notebook could not be run: {type(exc).__name__}: {exc}"
    finally:
        stopping = threading.Thread(target=_shut_down, args=(kernel,)) if kernel is not None else None
        if stopping is not None:
            stopping.start()  # the kernel shuts down while the notebook is rendered
        executed = Path(job["executed"])
        if executed.is_file():
            try:
                Path(job["html"]).write_text(renderer.html(executed.read_text(encoding="utf-8")), encoding="utf-8")
            except Exception as exc:
                result["error"] = result["error"] or f"the notebook could not be rendered as HTML: {exc}"
        if stopping is not None:
            stopping.join()
        Path(job["result"]).write_text(json.dumps(result))


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _start_kernel(notebook: Path, folder: Path, env: Mapping[str, str]) -> Any:
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_core.utils import run_sync

    specs = folder / "kernels"
    (specs / KERNEL_NAME).mkdir(parents=True, exist_ok=True)
    (specs / KERNEL_NAME / "kernel.json").write_text(json.dumps({
        # the kernel's log says nothing the run's record does not (a cell's error comes back as a
        # reply), but notes its own shutdown as "KeyboardInterrupt caught in kernel"
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 "--IPKernelApp.log_level=CRITICAL"],
        "display_name": "bedrot-lab (Python)", "language": "python", "metadata": {"debugger": False},
    }))
    # Unix sockets in the run's own folder: over TCP on loopback any local user could connect
    kernel = _manager_class()(kernel_name=KERNEL_NAME, transport="ipc", ip=str(folder / "kernel"),
                              kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(specs)]))
    run_sync(kernel.start_kernel)(env={**os.environ, **env, "PYDEVD_DISABLE_FILE_VALIDATION": "1"},
                                  cwd=str(notebook.parent))
    return kernel


def _on_cell_start(renderer: _Renderer) -> Callable[..., None]:
    def on_cell_start(cell: Any, cell_index: int) -> None:
        renderer.prepare()  # while the cells run: the kernel does the work, this process waits
        _say(f"cell {cell_index}")

    return on_cell_start


def _shut_down(kernel: Any) -> None:
    from jupyter_core.utils import run_sync

    for client in kernel.clients:
        client.stop_channels()
    try:
        run_sync(kernel.shutdown_kernel)(now=False)
    except Exception:  # gone already
        pass


def _manager_class() -> type:
    """jupyter_client's kernel manager, keeping the clients it makes: papermill leaves the one it
    uses open when the kernel is not its own (the manager is given), so they are closed here."""
    from jupyter_client.manager import AsyncKernelManager

    class KeepingClients(AsyncKernelManager):
        def __init__(self, **kwargs: Any):
            super().__init__(**kwargs)
            self.clients: list[Any] = []

        def client(self, **kwargs: Any) -> Any:
            made = super().client(**kwargs)
            self.clients.append(made)
            return made

    return KeepingClients


class _Renderer:
    """Renders a notebook as HTML with nbconvert, made ready (imported, templates loaded) on a
    thread of its own while the cells run: it would take a second after them otherwise."""

    def __init__(self) -> None:
        self._exporter: Any = None
        self._ready = threading.Thread(target=self._prepare, name="bedrot-html", daemon=True)

    def prepare(self) -> None:
        """Start making ready, once."""
        if self._ready.ident is None:
            self._ready.start()

    def _prepare(self) -> None:
        import nbformat
        from nbconvert import HTMLExporter

        exporter = HTMLExporter()
        exporter.from_notebook_node(nbformat.v4.new_notebook())
        self._exporter = exporter

    def html(self, notebook: str) -> str:
        import nbformat

        if self._ready.ident is not None:
            self._ready.join()
        if self._exporter is None:  # never made ready, or that failed: here its error shows
            self._prepare()
        return self._exporter.from_notebook_node(nbformat.reads(notebook, as_version=4))[0]


if __name__ == "__main__":
    main(sys.argv[1])

