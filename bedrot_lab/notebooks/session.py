"""The run context inside a notebook or a script: :func:`notebook_context`.

When the lab runs a notebook or a script (``bedrot-lab run FILE``), it opens the run and
names a handoff file in :data:`HANDOFF_VARIABLE`; the file names the lake and the relay
through which the lab's process records the run (:mod:`.relay`). Opened by hand (in Jupyter, or ``python script.py``),
:func:`notebook_context` opens a throw-away run of its own, or none.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BedrotLabError
from ..fsutil import replacing

if TYPE_CHECKING:
    from ..context import RunContext

log = logging.getLogger(__name__)

#: the environment variable naming the handoff file of a run the lab started
HANDOFF_VARIABLE = "BEDROT_LAB_RUN"
#: tag of a run a notebook opened by hand
INTERACTIVE_TAG = "bedrot.interactive"

_current: RunContext | None = None


class HandoffError(BedrotLabError):
    """The lab started this notebook or script, but its run cannot be reached."""


@contextmanager
def relayed_run(ctx: RunContext, folder: Path, lake: Path, source: bytes) -> Iterator[dict[str, str]]:
    """Serve run ``ctx``'s recorder to a notebook's kernel or a script for the block (see
    :mod:`.relay`), and yield the environment variables they start with: the handoff file
    (in ``folder``, which only this user can read) naming the lake and the relay, and
    MLflow's settings, so that the code's own ``mlflow.log_*`` calls record to the lake's
    store. Code that uses MLflow (``source`` names it) also gets the run's id, waiting for
    the run to be open; other code starts while the run opens."""
    from .relay import RecorderRelay

    relay = RecorderRelay(ctx.recorder, folder)
    try:
        handoff = folder / "run.json"
        with replacing(handoff, durable=False) as temporary:
            temporary.touch(mode=0o600)
            temporary.write_text(json.dumps({
                "lake": str(lake), "experiment": ctx.experiment.name, "params": ctx.params,
                "relay": relay.address, "authkey": relay.authkey.hex()}))
        values = {HANDOFF_VARIABLE: str(handoff), "MLFLOW_TRACKING_URI": ctx.settings.tracking_uri}
        if b"mlflow" in source:
            values["MLFLOW_RUN_ID"] = ctx.run_id
        yield values
    finally:
        relay.close()


def lake_relative(path: Path, lake: Path) -> str:
    """``path`` as the lake names it: relative to its root when it is inside."""
    return str(path.relative_to(lake)) if path.is_relative_to(lake) else str(path)


def notebook_context(*, track: bool = True, experiment: str | None = None,
                     params: dict[str, Any] | None = None, lake: str | Path | None = None) -> RunContext:
    """The run context of this notebook or script: the ``ctx`` a plugin's experiment gets
    (``ctx.params``, ``ctx.load``, ``ctx.sql``, ``ctx.aggregate``, ``ctx.log_metric``,
    ``ctx.log_table``, ``ctx.log_figure``, ``ctx.log_output``, ``ctx.report``, ``ctx.workdir``).

    Run by the lab (``bedrot-lab run notebook.ipynb``), it records to the lab's run, and
    ``ctx.params`` are the run's params. Opened by hand, it opens a throw-away run in
    experiment ``experiment`` (by default the notebook's or script's file name), tagged
    ``bedrot.interactive``, ended when the kernel or the script exits; ``track=False``
    records nothing (every ``log_*`` is a no-op; data still loads). ``params`` and ``lake``
    apply only when opened by hand. Calling it again returns the same context.
    """
    global _current
    if _current is not None:
        return _current
    handoff = os.environ.get(HANDOFF_VARIABLE)
    if handoff:
        _current = _attached(Path(handoff))
    else:
        _current = _by_hand(track=track, experiment=experiment, params=params or {}, lake=lake)
    _flush_after_each_cell(_current)
    return _current


def _attached(handoff: Path) -> RunContext:
    """The context of the run the lab opened for this process, recording through the lab's process."""
    from ..config import load_settings
    from ..context import RunContext
    from ..lab import Lab
    from .relay import RelayedRecorder

    found = _read_handoff(handoff)
    lab = Lab(load_settings(found["lake"]))
    recorder = RelayedRecorder(found["relay"], bytes.fromhex(found["authkey"]))
    return RunContext(lab, _stand_in(found["experiment"], found["params"]), found["params"], recorder)


def _read_handoff(handoff: Path) -> dict[str, Any]:
    try:
        return json.loads(handoff.read_text())
    except (OSError, ValueError) as exc:
        raise HandoffError(f"{HANDOFF_VARIABLE}={handoff}: cannot read it ({exc}); unset it to run this by "
                           "hand, or run it again with bedrot-lab run") from None


def _by_hand(*, track: bool, experiment: str | None, params: dict[str, Any], lake: str | Path | None) -> RunContext:
    """A context for a notebook or script opened by hand: a throw-away run, or none."""
    from ..context import RunContext
    from ..lab import Lab

    lab = Lab.open(lake)
    name = experiment or _own_file_name()
    stand_in = _stand_in(name, params)
    if not track:
        return RunContext(lab, stand_in, params, UntrackedRecorder())
    from ..runner import RunRequest, default_run_name, run_tags
    from ..secrets import Masker

    request = RunRequest(stand_in, params, note="opened by hand: a throw-away run")
    tags = {**run_tags(lab, request), INTERACTIVE_TAG: "true", "mlflow.source.name": name}
    recorder = lab.store.start_run(name, run_name=default_run_name(stand_in, params) + " (by hand)", tags=tags,
                                   masker=Masker(), description=request.description(), parent_run_id=None,
                                   active=False, start_time=None)
    if params:
        recorder.log_params(params)
    context = RunContext(lab, stand_in, params, recorder)
    atexit.register(_end, context)
    print(f"bedrot-lab: recording to a throw-away run {recorder.run_id[:8]} in experiment {name!r} "
          "(notebook_context(track=False) records nothing)", file=sys.stderr)
    return context


def _end(context: RunContext) -> None:
    """End a run opened by hand when its process exits."""
    try:
        context.close()
        context.recorder.end("FINISHED")
    except Exception as exc:  # the process is exiting: say it, never raise
        print(f"bedrot-lab: could not end run {context.recorder.run_id}: {exc}", file=sys.stderr)


def _stand_in(name: str, params: dict[str, Any]) -> Any:
    """An :class:`~bedrot_lab.experiments.Experiment` naming the notebook or script the context belongs to."""
    from ..experiments import Experiment, Param

    declared = {key: Param(type(value) if type(value) in (str, int, float, bool) else str,
                           value if type(value) in (str, int, float, bool) else None, name=key)
                for key, value in params.items()}
    return Experiment(name=name, func=_never_called, params=declared, plugin="notebooks")


def _never_called(ctx: Any) -> None:
    """The function of a stand-in experiment: the notebook or script is what runs."""


def _own_file_name() -> str:
    """This notebook's file name (Jupyter names it in ``JPY_SESSION_NAME``), or the script's."""
    session = os.environ.get("JPY_SESSION_NAME")
    if session:
        return Path(session).name
    main = getattr(sys.modules.get("__main__"), "__file__", None)
    return Path(main).name if main and not main.endswith("ipykernel_launcher.py") else "interactive"


def _flush_after_each_cell(context: RunContext) -> None:
    """Send what the context buffered after every cell (in a notebook) and at exit, so that
    a kernel that dies or is stopped loses nothing logged by a finished cell."""
    def flush(*_: Any) -> None:
        try:
            context.flush()
        except Exception as exc:
            log.error("bedrot-lab could not record what this cell logged: %s", exc)

    shell = _ipython()
    if shell is not None:
        shell.events.register("post_run_cell", flush)
    atexit.register(flush)


def _ipython() -> Any:
    ipython = sys.modules.get("IPython")
    return ipython.get_ipython() if ipython is not None else None


class UntrackedRecorder:
    """A recorder that records nothing: the context of ``notebook_context(track=False)``."""

    run_id = "untracked"

    def __init__(self) -> None:
        from ..secrets import Masker

        self.masker = Masker()

    def __getattr__(self, name: str) -> Any:
        if name.startswith(("log_", "set_", "flush", "end")):
            return _nothing
        raise AttributeError(name)


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None

