"""One notebook executed by papermill on a thread of its own, on a kernel started first.

The kernel (ipykernel in the lab's own Python, over Unix sockets) is launched before
papermill is imported, so that the kernel's start-up and the lab's imports overlap. The
thread is what keeps the run's signals working: nbclient takes over SIGINT and SIGTERM
while it runs in the main thread, so there a stopped run would not end as KILLED.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

#: the kernel bedrot-lab runs notebooks on: ipykernel in the lab's own Python
KERNEL_NAME = "bedrot-lab-python"
#: seconds the kernel gets to start
START_TIMEOUT = 120


class NotebookExecution(threading.Thread):
    """Executes ``notebook`` into ``executed`` with ``parameters`` injected; :meth:`wait` returns
    papermill's error for a cell that raised (None when every cell ran), and raises any other
    error; :meth:`stop` ends the kernel at once."""

    def __init__(self, notebook: Path, executed: Path, parameters: Mapping[str, Any], *, folder: Path,
                 env: Mapping[str, str], on_cell_start: Callable[..., None] | None = None):
        super().__init__(name="bedrot-notebook", daemon=True)
        self.notebook, self.executed, self.parameters = notebook, executed, dict(parameters)
        self.folder, self.env, self.on_cell_start = folder, dict(env), on_cell_start
        self.cell_error: BaseException | None = None
        self.error: BaseException | None = None
        self._kernel: Any = None
        self._stopped = threading.Event()
        self._done = threading.Event()

    def run(self) -> None:
        try:
            self._kernel = self._start_kernel()
            import papermill
            from papermill.exceptions import PapermillExecutionError

            try:
                papermill.execute_notebook(
                    str(self.notebook), str(self.executed), parameters=self.parameters, kernel_name=KERNEL_NAME,
                    km=self._kernel, progress_bar=False, log_output=False, start_timeout=START_TIMEOUT,
                    on_cell_start=self.on_cell_start)
            except PapermillExecutionError as exc:
                self.cell_error = exc
        except BaseException as exc:
            self.error = exc
        finally:
            self._done.set()  # the run goes on recording while the kernel shuts down
            if self._kernel is not None and not self._stopped.is_set():
                self._shut_down()

    def _shut_down(self) -> None:
        from jupyter_core.utils import run_sync

        for client in self._kernel.clients:
            client.stop_channels()
        try:
            run_sync(self._kernel.shutdown_kernel)(now=False)
        except Exception as exc:  # the kernel is gone already; say so, do not hide the run's error
            self.error = self.error or exc

    def _start_kernel(self) -> Any:
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_core.utils import run_sync

        specs = self.folder / "kernels"
        (specs / KERNEL_NAME).mkdir(parents=True, exist_ok=True)
        (specs / KERNEL_NAME / "kernel.json").write_text(json.dumps({
            # the kernel's log says nothing the run's record does not (a cell's error comes back as a
            # reply), but notes its own shutdown as "KeyboardInterrupt caught in kernel"
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                     "--IPKernelApp.log_level=CRITICAL"],
            "display_name": "bedrot-lab (Python)", "language": "python", "metadata": {"debugger": False},
        }))
        # Unix sockets in the run's own folder: over TCP on loopback any local user could connect
        kernel = _manager_class()(kernel_name=KERNEL_NAME, transport="ipc", ip=str(self.folder / "kernel"),
                                  kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(specs)]))
        env = {**os.environ, **self.env, "PYDEVD_DISABLE_FILE_VALIDATION": "1"}
        run_sync(kernel.start_kernel)(env=env, cwd=str(self.notebook.parent))
        return kernel

    def wait(self) -> BaseException | None:
        """Wait for the notebook's last cell (interruptible: a signal's exception reaches the caller)."""
        while not self._done.wait(0.2):
            pass
        if self.error is not None:
            raise self.error
        return self.cell_error

    def stop(self) -> None:
        """Kill the kernel (the run was stopped), and wait a little for the thread to see it."""
        self._stopped.set()
        kernel = self._kernel
        process = getattr(getattr(kernel, "provisioner", None), "process", None)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self.join(10)


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
