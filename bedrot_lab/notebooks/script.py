"""A Python script as an experiment: run in a process of its own, in the run's workdir,
recorded as one run (its output, its exit code, the files it writes)."""

from __future__ import annotations

import ast
import os
import shlex
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

from ..experiments import Experiment, Param
from ..fsutil import file_sha256
from .errors import NotebookError, ScriptFailed
from .session import lake_relative, relayed_run

#: the one param of a script: its command-line arguments, as a shell would split them
ARGS = "args"
#: seconds a script gets to end after SIGTERM before it is killed
STOP_GRACE = 10.0


def script_experiment(path: Path, lake: Path) -> Experiment:
    """The experiment that runs script ``path``: named by its file name, described by its
    docstring, with one param, ``args`` (``bedrot-lab run script.py -- --year 2025``)."""
    try:
        docstring = ast.get_docstring(ast.parse(path.read_bytes(), str(path))) or ""
    except (OSError, SyntaxError, ValueError) as exc:
        raise NotebookError(f"{path}: not a Python script ({exc})") from None

    def run_script(ctx: Any) -> None:
        execute(ctx, path, lake)

    params = {ARGS: Param(str, "", "the script's arguments (after -- on the command line)", name=ARGS)}
    return Experiment(name=path.name, func=run_script, description=docstring, params=params)


def execute(ctx: Any, path: Path, lake: Path) -> None:
    """Run script ``path`` with ``ctx.params['args']`` in the run's workdir: its output goes to
    the terminal's stderr as it comes and to ``script/stdout.txt`` and ``script/stderr.txt``;
    the files it leaves in the workdir become artifacts under ``workdir/``; a non-zero exit
    code fails the run with the last line of its stderr."""
    workdir = ctx.workdir
    before = _files(workdir)
    with tempfile.TemporaryDirectory(prefix="bedrot-script-") as scratch:
        folder = Path(scratch)
        stdout, stderr = folder / "stdout.txt", folder / "stderr.txt"
        command = [sys.executable, str(path), *shlex.split(ctx.params.get(ARGS) or "")]
        try:
            with relayed_run(ctx, folder, lake, path.read_bytes()) as run:
                code = _run(command, workdir, {**os.environ, **run, "PYTHONUNBUFFERED": "1"}, stdout, stderr)
        finally:
            ctx.recorder.set_tags({"bedrot.script": lake_relative(path, lake), "bedrot.script.sha256": file_sha256(path)},
                                  by_name=False)
            for output in (stdout, stderr):
                if output.is_file():
                    ctx.log_text(output.read_text(encoding="utf-8", errors="replace"), f"script/{output.name}")
            for file in sorted(_files(workdir) - before):
                ctx.recorder.log_file(file, "/".join(("workdir", *file.parent.relative_to(workdir).parts)))
        ctx.log_metric("script.exit_code", code)
        if code != 0:
            last = _last_line(stderr)
            raise ScriptFailed(f"{path.name} exited with code {code}" + (f": {last}" if last else ""))


def _run(command: list[str], workdir: Path, env: dict[str, str], stdout: Path, stderr: Path) -> int:
    """Run ``command``, teeing its output to files and this process's stderr; stop it (SIGTERM,
    then SIGKILL) if this process is interrupted."""
    process = subprocess.Popen(command, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    tees = [threading.Thread(target=_tee, args=(pipe, file), daemon=True)
            for pipe, file in ((process.stdout, stdout), (process.stderr, stderr))]
    for tee in tees:
        tee.start()
    try:
        code = process.wait()
    except BaseException:
        process.terminate()
        try:
            process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        raise
    finally:
        for tee in tees:
            tee.join()
    return code


def _tee(pipe: IO[bytes], file: Path) -> None:
    with pipe, file.open("wb") as out:
        for chunk in iter(lambda: pipe.read1(65536), b""):
            out.write(chunk)
            sys.stderr.buffer.write(chunk)
            sys.stderr.flush()


def _files(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file() and not path.is_symlink()}


def _last_line(path: Path) -> str:
    lines = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
             if line.strip()] if path.is_file() else []
    return lines[-1][:300] if lines else ""
