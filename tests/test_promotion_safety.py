"""Promotion safety: a killed promotion, a broken contract, a tampered artifact, two
promotions at once, a path out of the zone, a rollback, a repeated or forced promotion
never leave a half-written, unvalidated or unexplained file in 4_curated/.

Everything runs against a real MLflow registry in a temporary lake, without mocks. The
promotions that must die (SIGKILL at each step of ``promote``, set by BEDROT_LAB_CRASH_AT)
or overlap run as separate ``python -m bedrot_lab`` processes, forked by one launcher
process that imported MLflow once (see LAUNCHER), so that a dozen of them cost seconds,
not a minute; the crash scenarios are all prepared and started by one module fixture.
The rest runs in process, the command line through click's runner.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from bedrot_lab import hookimpl
from bedrot_lab.cli import cli
from bedrot_lab.lab import Lab
from bedrot_lab.promotion import PromotionError, promote, read_lineage, register, rollback
from bedrot_lab.testing import ISOLATED_VARIABLES, make_lake, run_experiment

NAME, CURATED_PATH = "curated.demo.table", "demo/table.parquet"
STEPS = ("downloaded", "temp_written", "archived", "replaced")
LOCK_NAME = "promote-demo%2Ftable.parquet.lock"

PLUGIN = """
    import pandas as pd
    from bedrot_lab import experiment, hookimpl

    @experiment("maker", params={"n": 3, "value": 1.5, "fmt": "parquet", "holes": 0, "dup": 0})
    def maker(ctx):
        n, holes, dup = ctx.params["n"], ctx.params["holes"], ctx.params["dup"]
        frame = pd.DataFrame({
            "id": [*range(n - dup), *[0] * dup],
            "value": [None] * holes + [ctx.params["value"]] * (n - holes),
            "label": [None] * holes + [f"row {i}" for i in range(holes, n)],
        })
        ctx.log_output(frame, "table", format=ctx.params["fmt"])

    @experiment("catalog", params={"share": 50.0, "upc": "196871440312", "title": "SUNDIAL"})
    def catalog(ctx):
        frame = pd.DataFrame({
            "artist": ["GLASS ORCHID", "NOVA VANTA"],
            "title": [ctx.params["title"], "STATIC HEARTS"],
            "your_revenue_share": [ctx.params["share"], 100.0],
            "isrc": ["QZGO72500421", "QZNV52400540"],
            "upc": [ctx.params["upc"], ctx.params["upc"]],
            "release_date": ["2025-03-21", "2024-09-20"],
            "release_type": ["single", "single"],
            "royalty_percentage": [100.0, 100.0],
        })
        ctx.log_output(frame, "splits", format="csv")

    @experiment("breaker", params={"n": 2})
    def breaker(ctx):
        ctx.log_output(pd.DataFrame({"id": range(ctx.params["n"])}), "table")
        raise RuntimeError("broke after logging its output")

    @hookimpl
    def register_experiments(register):
        register(maker)
        register(catalog)
        register(breaker)
"""


# -- helpers ------------------------------------------------------------------------------


def new_lake(root: Path, store_template: Path) -> Path:
    """A lake like ``bedrot_lake``'s, with the plugin above."""
    make_lake(root)
    shutil.copy(store_template, root / "mlruns" / "mlflow.db")
    (root / "plugins" / "maker.py").write_text(textwrap.dedent(PLUGIN))
    return root


def isolate(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ISOLATED_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("BEDROT_LAB_CRASH_AT", raising=False)
    monkeypatch.setenv("BEDROT_USER", "tester")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


def cli_environment(lake: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ISOLATED_VARIABLES and k != "BEDROT_LAB_CRASH_AT"}
    return {**env, "BEDROT_LAKE": str(lake), "BEDROT_USER": "tester", "MLFLOW_DISABLE_TELEMETRY": "true", **extra}


#: A Python process that imports bedrot-lab and MLflow once, then runs each `bedrot-lab`
#: command it is sent (one JSON line: args, env, cwd, stdout and stderr files) as
#: `python -m bedrot_lab ARGS` in a forked child of its own, and reports each child's
#: pid when it starts and its exit status (negative: killed by that signal) when it ends.
#: A child is a real, separate process, killed for real by SIGKILL; it just does not pay
#: the ~3 s of importing MLflow again.
LAUNCHER = r"""
import json, os, runpy, select, sys, traceback
import mlflow, mlflow.store.tracking.sqlalchemy_store, mlflow.store.model_registry.sqlalchemy_store
import pandas, pyarrow.parquet, bedrot_lab.cli, bedrot_lab.cli.promote, bedrot_lab.lab, bedrot_lab.promotion
import bedrot_lab.contracts

def report(**message):
    os.write(1, (json.dumps(message) + "\n").encode())

def child(job):
    code = 70
    try:
        os.chdir(job["cwd"])
        os.environ.clear()
        os.environ.update(job["env"])
        for fd, path in ((0, os.devnull), (1, job["stdout"]), (2, job["stderr"])):
            handle = os.open(path, os.O_RDONLY if fd == 0 else os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(handle, fd)
            os.close(handle)
        sys.argv = ["bedrot-lab", *job["args"]]
        try:
            runpy.run_module("bedrot_lab", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

children, pending, reading = {}, b"", True
while reading or children:
    ready = select.select([0] if reading else [], [], [], 0.02)[0]
    if ready:
        chunk = os.read(0, 1 << 16)
        reading = bool(chunk)
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            job = json.loads(line)
            pid = os.fork()
            if pid == 0:
                child(job)
            children[pid] = job["id"]
            report(started=job["id"], pid=pid)
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            break
        report(ended=children.pop(pid), returncode=os.waitstatus_to_exitcode(status))
"""


class Launcher:
    """Starts `bedrot-lab` commands through :data:`LAUNCHER`."""

    def __init__(self, scratch: Path):
        self.scratch = scratch
        self.errors = scratch / "launcher.err"
        with open(self.errors, "wb") as errors:
            self.process = subprocess.Popen([sys.executable, "-c", LAUNCHER], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=errors, env=cli_environment(scratch),
                                            cwd=scratch)
        self.pids: dict[int, int] = {}
        self.returncodes: dict[int, int] = {}
        self._buffer = b""

    def start(self, lake: Path, *args: str, **extra_env: str) -> Command:
        job_id = max([*self.pids, *self.returncodes, 0]) + 1
        command = Command(self, job_id, self.scratch / f"{job_id}.out", self.scratch / f"{job_id}.err")
        job = {"id": job_id, "args": list(args), "env": cli_environment(lake, **extra_env), "cwd": str(lake),
               "stdout": str(command.stdout_file), "stderr": str(command.stderr_file)}
        self.process.stdin.write((json.dumps(job) + "\n").encode())
        self.process.stdin.flush()
        self._read_until(lambda: job_id in self.pids or job_id in self.returncodes, 30)
        command.pid = self.pids[job_id]
        return command

    def _read_until(self, done, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the bedrot-lab command did not end in time")
            if select.select([self.process.stdout], [], [], remaining)[0]:
                chunk = os.read(self.process.stdout.fileno(), 1 << 16)
                if not chunk:
                    raise RuntimeError(f"the launcher died ({self.process.wait()}): {self.errors.read_text()}")
                self._buffer += chunk
                while b"\n" in self._buffer:
                    line, self._buffer = self._buffer.split(b"\n", 1)
                    message = json.loads(line)
                    if "started" in message:
                        self.pids[message["started"]] = message["pid"]
                    else:
                        self.returncodes[message["ended"]] = message["returncode"]

    def close(self) -> None:
        for job_id, pid in self.pids.items():
            if job_id not in self.returncodes:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()


@dataclass
class Command:
    """One `bedrot-lab` command started by a :class:`Launcher`."""

    launcher: Launcher
    job_id: int
    stdout_file: Path
    stderr_file: Path
    pid: int = 0

    def running(self) -> bool:
        return self.job_id not in self.launcher.returncodes

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        """Wait for the command: (returncode, stdout, stderr)."""
        self.launcher._read_until(lambda: not self.running(), timeout)
        return (self.launcher.returncodes[self.job_id], self.stdout_file.read_text(), self.stderr_file.read_text())


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory):
    started = Launcher(tmp_path_factory.mktemp("launcher"))
    yield started
    started.close()


def invoke(lake: Path, *args: str):
    """The real ``bedrot-lab`` command line, in process."""
    return CliRunner().invoke(cli, ["--lake", str(lake), *args], catch_exceptions=False)


def artifact_file(lake: Path, run_id: str, artifact: str = "registered/table/table.parquet") -> Path:
    """A file of the run's artifacts in the lake's local store; by default the registered
    output's, which is what the version's source holds and what promotions read."""
    found = list(lake.glob(f"mlruns/artifacts/*/{run_id}/artifacts/{artifact}"))
    assert len(found) == 1, found
    return found[0]


def made(lab: Lab, experiment: str = "maker", **params) -> str:
    result = run_experiment(lab, experiment, **params)
    assert result.status == "FINISHED", result.error
    return result.run_id


@dataclass
class Version:
    number: str
    run_id: str
    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def new_version(lab: Lab, curated_path: str = CURATED_PATH, name: str | None = None, output: str = "table",
                experiment: str = "maker", **params) -> Version:
    """Run an experiment, register its output for ``curated_path``, return the version and its bytes."""
    run_id = made(lab, experiment, **params)
    registered = register(lab, run_id, output, curated_path, name)
    file = artifact_file(lab.settings.root, run_id, registered["artifact"])
    return Version(registered["version"], run_id, file.read_bytes())


def alias(lab: Lab, name: str = NAME, which: str = "curated") -> str | None:
    """The version number alias ``which`` of model ``name`` points at, None when it is not set."""
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient(lab.settings.tracking_uri).get_model_version_by_alias(name, which).version)
    except MlflowException:
        return None


def target_of(lake: Path, curated_path: str = CURATED_PATH) -> Path:
    return lake / "4_curated" / curated_path


def contents(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


def litter(lake: Path) -> list[Path]:
    """Temporary or pending files a promotion may leave behind."""
    zones = [*(lake / "4_curated").rglob("*.tmp"), *(lake / "5_archive").rglob("*.tmp")]
    return zones + list((lake / ".bedrot-lab").rglob("*.pending.json"))


def archived_files(lake: Path, curated_path: str = CURATED_PATH) -> list[Path]:
    folder = lake / "5_archive" / "curated" / curated_path
    return sorted(folder.iterdir()) if folder.is_dir() else []


def write_contract(lake: Path, text: str, curated_path: str = CURATED_PATH) -> Path:
    path = lake / "4_curated" / "_contracts" / f"{curated_path}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def lab(bedrot_lake: Path, write_plugin) -> Lab:
    write_plugin("maker", PLUGIN)
    return Lab.open(bedrot_lake)


# -- 1. fault injection ---------------------------------------------------------------------


@dataclass
class Crash:
    """A lake where ``bedrot-lab promote`` was started with BEDROT_LAB_CRASH_AT set."""

    lake: Path
    old: Version | None  # promoted before the crash (None: a first-ever promotion)
    new: Version  # the version being promoted when it was killed
    command: Command
    extra: dict[str, Version] = field(default_factory=dict)


@pytest.fixture(scope="module")
def crashes(tmp_path_factory: pytest.TempPathFactory, bedrot_store_template: Path, launcher: Launcher):
    """Every fault-injection scenario, its crashing promotion already started."""
    scenarios: dict[object, Crash] = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        isolate(monkeypatch)
        for step in STEPS:
            for existing in (True, False):
                lake = new_lake(tmp_path_factory.mktemp(f"crash-{step}-{existing}") / "lake", bedrot_store_template)
                lab = Lab.open(lake)
                old = None
                if existing:
                    old = new_version(lab, n=3)
                    promote(lab, NAME)
                new = new_version(lab, n=5)
                crashing = launcher.start(lake, "promote", NAME, BEDROT_LAB_CRASH_AT=step)
                scenarios[step, existing] = Crash(lake, old, new, crashing)
        # an unrelated curated file whose lock/journal slug is the same as demo/table.parquet's
        lake = new_lake(tmp_path_factory.mktemp("crash-slug") / "lake", bedrot_store_template)
        lab = Lab.open(lake)
        old = new_version(lab, n=3)
        promote(lab, NAME)
        new = new_version(lab, n=5)
        other = new_version(lab, "demo__table.parquet", n=4)
        crashing = launcher.start(lake, "promote", NAME, BEDROT_LAB_CRASH_AT="replaced")
        scenarios["slug"] = Crash(lake, old, new, crashing, extra={"other": other})
        # v1 then v2 promoted, v3 killed after its rename: a rollback should go back to v2
        lake = new_lake(tmp_path_factory.mktemp("crash-rollback") / "lake", bedrot_store_template)
        lab = Lab.open(lake)
        first = new_version(lab, n=3)
        promote(lab, NAME)
        old = new_version(lab, n=4)
        promote(lab, NAME)
        new = new_version(lab, n=5)
        crashing = launcher.start(lake, "promote", NAME, BEDROT_LAB_CRASH_AT="replaced")
        scenarios["rollback"] = Crash(lake, old, new, crashing, extra={"first": first})
    return scenarios


@pytest.mark.parametrize("existing", [True, False], ids=["replacing-v1", "first-ever"])
@pytest.mark.parametrize("step", STEPS)
def test_a_promotion_killed_at_any_step_leaves_old_or_new_and_the_next_one_finishes(crashes, step, existing,
                                                                                     bedrot_env):
    crash = crashes[step, existing]
    code, _, err = crash.command.finish()
    assert code == -signal.SIGKILL, err
    lake, old, new = crash.lake, crash.old, crash.new
    target = target_of(lake)
    lab = Lab.open(lake)

    # after the kill: the old file or the new one, whole; the lineage and the alias only claim what is on disk
    on_disk = contents(target)
    assert on_disk in ([old.data, new.data] if old else [None, new.data])  # never a mix or a part
    assert on_disk == (new.data if step == "replaced" else old.data if old else None)
    history = read_lineage(lab, CURATED_PATH)
    if on_disk != new.data:
        assert new.number not in [e["version"] for e in history]
        assert alias(lab) != new.number
    assert [e["version"] for e in history] == ([old.number] if old else [])

    # a second promotion finishes the job
    result = promote(lab, NAME)
    if step == "replaced":
        assert result.recovered.startswith(f"finished the interrupted promotion of {NAME} v{new.number}")
        assert result.status == "already current"
    else:
        assert result.status == "promote"
    assert target.read_bytes() == new.data
    history = read_lineage(lab, CURATED_PATH)
    assert [e["version"] for e in history] == ([old.number, new.number] if old else [new.number])
    assert history[-1]["sha256"] == new.sha256 and history[-1]["run_id"] == new.run_id
    assert alias(lab) == new.number
    tags = MlflowClient(lab.settings.tracking_uri).get_model_version(NAME, new.number).tags
    assert tags["promoted_by"] == "tester" and tags["promoted_at"] == history[-1]["promoted_at"]
    if old:
        assert history[-1]["replaced"]["version"] == old.number
        assert (lake / history[-1]["replaced"]["archived_to"]).read_bytes() == old.data
        assert archived_files(lake) and all(p.read_bytes() == old.data for p in archived_files(lake))
    else:
        assert history[-1]["replaced"] is None and not archived_files(lake)
    assert sorted(p.name for p in target.parent.iterdir()) == ["table.parquet"]
    assert litter(lake) == []
    # and the one after that has nothing left to do
    assert promote(lab, NAME).status == "already current"
    assert len(read_lineage(lab, CURATED_PATH)) == len(history)


def test_an_interrupted_promotion_survives_the_promotion_of_another_file(crashes, bedrot_env):
    crash = crashes["slug"]
    code, _, err = crash.command.finish()
    assert code == -signal.SIGKILL, err
    lab = Lab.open(crash.lake)
    other = promote(lab, "curated.demo__table")
    assert (other.status, other.version) == ("promote", crash.extra["other"].number)
    assert target_of(crash.lake, "demo__table.parquet").read_bytes() == crash.extra["other"].data

    promote(lab, NAME)  # raises PromotionError: "... was changed outside bedrot-lab ..."
    assert target_of(crash.lake).read_bytes() == crash.new.data
    assert [e["version"] for e in read_lineage(lab, CURATED_PATH)] == [crash.old.number, crash.new.number]
    assert alias(lab) == crash.new.number


def test_a_rollback_after_an_interrupted_promotion_goes_back_one_step(crashes, bedrot_env):
    crash = crashes["rollback"]
    code, _, err = crash.command.finish()
    assert code == -signal.SIGKILL, err
    lab = Lab.open(crash.lake)
    assert target_of(crash.lake).read_bytes() == crash.new.data  # v3 is in place, its lineage entry is not

    back = rollback(lab, NAME)
    assert back.recovered.startswith(f"finished the interrupted promotion of {NAME} v{crash.new.number}")
    assert back.version == crash.old.number  # v2; it is v1
    assert target_of(crash.lake).read_bytes() == crash.old.data


# -- 2. contracts ---------------------------------------------------------------------------

RULES = {
    "missing column": ('[columns]\nid = "int"\nartist = "string"\n', {},
                       "column 'artist' is missing"),
    "wrong type": ('[columns]\nid = "int"\nvalue = "int"\n', {},
                   "column 'value' should be int, but is double"),
    "null": ('not_null = ["id", "value"]\n', {"holes": 1},
             "column 'value' has 1 empty values"),
    "duplicate key": ('unique = ["id"]\n', {"dup": 1},
                      "key (id) has 1 duplicate rows"),
    "out of range": ('[ranges]\nvalue = ["", 1]\nid = [0, ""]\n', {},
                     "column 'value' has values above 1.0 (largest 1.5)"),
    "too few rows": ("min_rows = 10\n", {},
                     "has 3 rows, fewer than the 10 required"),
}


@pytest.mark.parametrize("rule", RULES)
def test_each_contract_rule_refuses_a_promotion(lab, bedrot_lake, rule):
    text, params, problem = RULES[rule]
    contract = write_contract(bedrot_lake, text)
    version = new_version(lab, **params)

    with pytest.raises(PromotionError) as refused:
        promote(lab, NAME)
    assert refused.value.problems == [f"contract ({contract}): {problem}"]
    assert problem in str(refused.value)
    cli = invoke(bedrot_lake, "promote", NAME)
    assert cli.exit_code == 1
    assert problem in cli.stderr and f"{NAME} v{version.number} not promoted" in cli.stderr
    assert not target_of(bedrot_lake).exists()
    assert read_lineage(lab, CURATED_PATH) == [] and alias(lab) is None
    assert litter(bedrot_lake) == []


def test_a_contract_breach_prints_every_reason_and_leaves_the_curated_file_alone(lab, bedrot_lake, launcher):
    v1 = new_version(lab, n=3)
    promote(lab, NAME)
    before = (target_of(bedrot_lake).stat().st_mtime_ns, read_lineage(lab, CURATED_PATH))
    contract = write_contract(bedrot_lake, """
        not_null = ["value"]
        unique = ["id"]
        min_rows = 10
        [columns]
        id = "int"
        value = "int"
        artist = "string"
        [ranges]
        value = [0, 1]
    """)
    v2 = new_version(lab, n=4, holes=1, dup=1)

    code, out, err = launcher.start(bedrot_lake, "promote", NAME).finish()  # a real `bedrot-lab promote`
    assert code == 1, err
    problems = ["column 'value' should be int, but is double", "column 'artist' is missing",
                "has 4 rows, fewer than the 10 required", "column 'value' has 1 empty values",
                "column 'value' has values above 1.0 (largest 1.5)", "key (id) has 1 duplicate rows"]
    assert err.splitlines() == [f"Error: {NAME} v{v2.number} not promoted to {CURATED_PATH}:",
                                *(f"  - contract ({contract}): {problem}" for problem in problems)]
    assert out == ""
    assert target_of(bedrot_lake).read_bytes() == v1.data
    assert (target_of(bedrot_lake).stat().st_mtime_ns, read_lineage(lab, CURATED_PATH)) == before
    assert alias(lab) == v1.number and archived_files(bedrot_lake) == [] and litter(bedrot_lake) == []


def test_the_catalog_contract_refuses_a_share_above_100_percent(lab, bedrot_lake):
    catalog_path = "track_catalog_royalty_splits.csv"
    version = new_version(lab, catalog_path, output="splits", experiment="catalog", share=150.0, upc="UPC-0001")
    name = "curated.track_catalog_royalty_splits"

    with pytest.raises(PromotionError) as refused:
        promote(lab, name)
    assert refused.value.problems == [
        "contract (data set 'track_catalog'): column 'your_revenue_share' has values above 100 (largest 150.0)"]
    cli = invoke(bedrot_lake, "promote", name, "--json")
    assert cli.exit_code == 1
    assert json.loads(cli.stdout) == {"status": "refused", "error": f"{name} v{version.number} not promoted to "
                                      f"{catalog_path}:", "problems": refused.value.problems}
    assert not target_of(bedrot_lake, catalog_path).exists()


def test_a_valid_catalog_csv_with_all_digit_upcs_is_promoted(lab, bedrot_lake):
    """The sample lake's UPCs are all digits: a text column must not be read as a number."""
    catalog_path = "track_catalog_royalty_splits.csv"
    version = new_version(lab, catalog_path, output="splits", experiment="catalog", share=50.0)
    assert promote(lab, "curated.track_catalog_royalty_splits").status == "promote"
    assert target_of(bedrot_lake, catalog_path).read_bytes() == version.data


def test_a_text_value_that_looks_like_null_is_not_empty(lab, bedrot_lake):
    new_version(lab, "track_catalog_royalty_splits.csv", output="splits", experiment="catalog", title="NULL")
    assert promote(lab, "curated.track_catalog_royalty_splits").status == "promote"


def test_an_empty_text_cell_in_a_csv_breaks_not_null(lab, bedrot_lake):
    contract = write_contract(bedrot_lake, 'not_null = ["label"]\n', "demo/table.csv")
    new_version(lab, "demo/table.csv", fmt="csv", holes=1)
    with pytest.raises(PromotionError) as refused:
        promote(lab, NAME)
    assert refused.value.problems == [f"contract ({contract}): column 'label' has 1 empty values"]
    assert not target_of(bedrot_lake, "demo/table.csv").exists()


# -- 3. digests -----------------------------------------------------------------------------


def test_an_artifact_changed_after_register_is_refused_with_a_digest_mismatch(lab, bedrot_lake):
    v1 = new_version(lab, n=3)
    promote(lab, NAME)
    v2 = new_version(lab, n=5)
    artifact_file(bedrot_lake, v2.run_id).write_bytes(v1.data)  # valid parquet, other bytes

    with pytest.raises(PromotionError) as refused:
        promote(lab, NAME)
    assert "digest mismatch" in str(refused.value)
    assert refused.value.problems == [f"digest mismatch: the bytes hash to {v1.sha256}, the version says {v2.sha256}"]
    assert target_of(bedrot_lake).read_bytes() == v1.data
    assert [e["version"] for e in read_lineage(lab, CURATED_PATH)] == [v1.number]
    assert alias(lab) == v1.number and archived_files(bedrot_lake) == [] and litter(bedrot_lake) == []
    cli = invoke(bedrot_lake, "promote", NAME, "--dry-run")
    assert cli.exit_code == 1 and "digest mismatch" in cli.stderr


# -- 4. concurrency -------------------------------------------------------------------------


def holds_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open (it is inside the promotion lock's wait loop)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                return True
        except OSError:
            continue
    return False


def test_concurrent_promotions_of_one_file_fail_clearly_or_wait_their_turn(lab, bedrot_lake, launcher):
    versions = {v.number: v for v in (new_version(lab, n=3), new_version(lab, n=5), new_version(lab, n=7))}
    promote(lab, NAME, version="1")
    target = target_of(bedrot_lake)
    lock = (lab.settings.state_dir / "locks" / LOCK_NAME).resolve()
    lock.parent.mkdir(parents=True, exist_ok=True)

    with open(lock, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another promotion of demo/table.parquet is running
        held.write("held by the test")
        held.flush()
        patient = [launcher.start(bedrot_lake, "promote", NAME, "--version", number, "--wait", "90")
                   for number in ("2", "3")]
        try:
            impatient = invoke(bedrot_lake, "promote", NAME, "--version", "3", "--wait", "0")
            assert impatient.exit_code == 1, impatient.output
            assert impatient.stderr.strip() == ("Error: another promotion of demo/table.parquet is running "
                                                "(held by the test); try again when it ends")
            deadline = time.monotonic() + 90
            while not all(holds_open(p.pid, lock) for p in patient):  # both are waiting for the lock now
                assert all(p.running() for p in patient), [p.finish() for p in patient]
                assert time.monotonic() < deadline, "the promotions never reached the lock"
                time.sleep(0.05)
            assert target.read_bytes() == versions["1"].data
            assert [e["version"] for e in read_lineage(lab, CURATED_PATH)] == ["1"]
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)
    outcomes = [p.finish() for p in patient]

    assert [code for code, _, _ in outcomes] == [0, 0], outcomes
    history = read_lineage(lab, CURATED_PATH)
    order = [e["version"] for e in history]
    assert order[0] == "1" and sorted(order[1:]) == ["2", "3"]
    assert history[2]["replaced"]["version"] == history[1]["version"]
    for entry in history[1:]:
        assert (bedrot_lake / entry["replaced"]["archived_to"]).read_bytes() == versions[entry["replaced"]["version"]].data
    assert target.read_bytes() == versions[order[-1]].data
    assert alias(lab) == order[-1]
    assert litter(bedrot_lake) == [] and lock.read_text() == ""


def test_the_promotion_lock_covers_every_spelling_of_a_curated_path(lab, bedrot_lake):
    v1 = new_version(lab, n=3)
    promote(lab, NAME)
    respelled = new_version(lab, "demo/./table.parquet", n=5)
    lock = lab.settings.state_dir / "locks" / LOCK_NAME
    with open(lock, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        try:
            with pytest.raises(PromotionError, match="another promotion"):
                promote(lab, NAME, version=respelled.number, wait=0)
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)
    assert target_of(bedrot_lake).read_bytes() == v1.data


# -- 5. path safety -------------------------------------------------------------------------


def test_curated_paths_outside_the_zone_are_refused(lab, bedrot_lake, tmp_path):
    run_id = made(lab)
    outside = tmp_path / "outside"
    outside.mkdir()
    curated = bedrot_lake / "4_curated"
    os.symlink(outside, curated / "link")
    os.symlink(outside / "x.parquet", curated / "file-link.parquet")
    before = sorted(p for p in tmp_path.rglob("*") if bedrot_lake not in p.parents)

    for path in ("../x.parquet", "/abs/x.parquet", str(tmp_path / "x.parquet"), "a/../../x.parquet",
                 "demo/../x.parquet", "link/x.parquet", "file-link.parquet", "_contracts/x.parquet",
                 "_lineage/x.parquet", ""):
        with pytest.raises(PromotionError):
            register(lab, run_id, "table", path)
        cli = invoke(bedrot_lake, "register", run_id, "table", "--as", path)
        assert cli.exit_code == 1, (path, cli.output)
        assert "curated path" in cli.stderr and "Traceback" not in cli.output

    assert sorted(p for p in tmp_path.rglob("*") if bedrot_lake not in p.parents) == before
    assert list(outside.iterdir()) == []
    assert not (bedrot_lake / "x.parquet").exists() and not Path("/abs/x.parquet").exists()
    with pytest.raises(PromotionError):  # nothing was registered
        promote(lab, "curated.x")


def test_a_folder_swapped_for_a_link_after_register_is_refused_at_promote(lab, bedrot_lake, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = bedrot_lake / "4_curated" / "swap"
    folder.mkdir()
    new_version(lab, "swap/x.parquet")
    folder.rmdir()
    os.symlink(outside, folder)

    with pytest.raises(PromotionError) as refused:
        promote(lab, "curated.swap.x")
    assert "outside" in str(refused.value)
    assert list(outside.iterdir()) == []
    assert read_lineage(lab, "swap/x.parquet") == [] and alias(lab, "curated.swap.x") is None


# -- 6. rollback ----------------------------------------------------------------------------


def test_rollback_restores_the_previous_or_a_chosen_version_from_its_archive(lab, bedrot_lake):
    versions = {}
    for n in (3, 5, 7):
        version = new_version(lab, n=n)
        versions[version.number] = version
        promote(lab, NAME)
    target = target_of(bedrot_lake)

    back = rollback(lab, NAME)
    assert (back.status, back.version, back.replaced["version"]) == ("rollback", "2", "3")
    assert target.read_bytes() == versions["2"].data and alias(lab) == "2"

    artifact_file(bedrot_lake, versions["1"].run_id).unlink()  # v1 now only exists as an archived copy
    cli = invoke(bedrot_lake, "rollback", NAME, "--to-version", "1")
    assert cli.exit_code == 0, cli.output
    assert f"rolled back to {NAME} v1 -> 4_curated/{CURATED_PATH}" in cli.stdout
    assert target.read_bytes() == versions["1"].data and alias(lab) == "1"

    history = read_lineage(lab, CURATED_PATH)
    assert [(e["action"], e["version"]) for e in history] == [
        ("promote", "1"), ("promote", "2"), ("promote", "3"), ("rollback", "2"), ("rollback", "1")]
    assert [e["replaced"] and e["replaced"]["version"] for e in history] == [None, "1", "2", "3", "2"]
    for entry in history[1:]:  # every replaced file was archived as it was
        archived = bedrot_lake / entry["replaced"]["archived_to"]
        assert archived.read_bytes() == versions[entry["replaced"]["version"]].data
        assert archived.name.endswith(f"-v{entry['replaced']['version']}.parquet")
        assert entry["replaced"]["sha256"] == versions[entry["replaced"]["version"]].sha256
    assert len(archived_files(bedrot_lake)) == 4 and litter(bedrot_lake) == []


def test_rollback_with_nothing_to_go_back_to_is_a_clear_error(lab, bedrot_lake):
    v1 = new_version(lab)
    with pytest.raises(PromotionError, match="has no alias 'curated'"):
        rollback(lab, NAME)
    promote(lab, NAME)
    mtime = target_of(bedrot_lake).stat().st_mtime_ns

    with pytest.raises(PromotionError) as refused:
        rollback(lab, NAME)
    assert str(refused.value) == f"{NAME} has only ever had v1 in the curated zone; nothing to roll back to"
    cli = invoke(bedrot_lake, "rollback", NAME)
    assert cli.exit_code == 1 and "nothing to roll back to" in cli.stderr
    cli = invoke(bedrot_lake, "rollback", NAME, "--to-version", "9")
    assert cli.exit_code == 1 and f"{NAME} v9 was never promoted" in cli.stderr
    assert target_of(bedrot_lake).read_bytes() == v1.data
    assert target_of(bedrot_lake).stat().st_mtime_ns == mtime
    assert len(read_lineage(lab, CURATED_PATH)) == 1 and alias(lab) == "1"


# -- 7. idempotency and refusals ----------------------------------------------------------


def test_promoting_the_current_version_again_changes_nothing(lab, bedrot_lake):
    new_version(lab)
    promote(lab, NAME)
    target, lineage = target_of(bedrot_lake), bedrot_lake / "4_curated" / "_lineage" / f"{CURATED_PATH}.json"
    before = (target.stat().st_mtime_ns, target.stat().st_ino, lineage.read_bytes(), lineage.stat().st_mtime_ns)
    heard = []

    class Listener:
        @hookimpl
        def after_promotion(self, result, lab):
            heard.append(result.status)

    lab.plugins.pm.register(Listener(), name="listener")
    try:
        assert promote(lab, NAME).status == "already current"
        assert promote(lab, NAME, version="1").status == "already current"
    finally:
        lab.plugins.pm.unregister(name="listener")
    cli = invoke(bedrot_lake, "promote", NAME)
    assert cli.exit_code == 0
    assert cli.stdout.strip() == f"{NAME} v1 is already current in 4_curated/{CURATED_PATH}; nothing to do"
    assert (target.stat().st_mtime_ns, target.stat().st_ino, lineage.read_bytes(), lineage.stat().st_mtime_ns) \
        == before
    assert heard == [] and archived_files(bedrot_lake) == []


def test_a_curated_file_changed_by_hand_needs_force_and_is_archived_as_unknown(lab, bedrot_lake):
    v1 = new_version(lab, n=3)
    promote(lab, NAME)
    target = target_of(bedrot_lake)
    target.write_bytes(b"edited by hand in a spreadsheet")
    v2 = new_version(lab, n=5)

    cli = invoke(bedrot_lake, "promote", NAME)
    assert cli.exit_code == 1
    assert "was changed outside bedrot-lab since its last promotion" in cli.stderr and "--force" in cli.stderr
    assert target.read_bytes() == b"edited by hand in a spreadsheet"
    assert [e["version"] for e in read_lineage(lab, CURATED_PATH)] == [v1.number] and alias(lab) == v1.number

    cli = invoke(bedrot_lake, "promote", NAME, "--force")
    assert cli.exit_code == 0, cli.output
    assert target.read_bytes() == v2.data and alias(lab) == v2.number
    [archived] = archived_files(bedrot_lake)
    assert archived.name.endswith("-unknown.parquet")
    assert archived.read_bytes() == b"edited by hand in a spreadsheet"
    last = read_lineage(lab, CURATED_PATH)[-1]
    assert last["version"] == v2.number and last["replaced"]["version"] is None
    assert last["replaced"]["sha256"] == hashlib.sha256(b"edited by hand in a spreadsheet").hexdigest()
    assert f"replaced file archived as {last['replaced']['archived_to']}" in cli.stdout


def test_register_refuses_failed_runs_unknown_outputs_and_a_format_mismatch_and_takes_a_short_run_id(lab, bedrot_lake):
    failed = run_experiment(lab, "breaker")
    assert failed.status == "FAILED"
    with pytest.raises(PromotionError, match=f"run {failed.run_id} is FAILED; only FINISHED runs can be registered"):
        register(lab, failed.run_id, "table", CURATED_PATH)

    run_id = made(lab)
    with pytest.raises(PromotionError) as unknown:
        register(lab, run_id, "tabel", CURATED_PATH)
    assert str(unknown.value) == f"run {run_id} has no output 'tabel'; its outputs: table"
    with pytest.raises(PromotionError, match=r"output 'table' is parquet but 'demo/table.csv' ends in \.csv"):
        register(lab, run_id, "table", "demo/table.csv")
    with pytest.raises(PromotionError, match="no run 'not-a-run'"):
        register(lab, "not-a-run", "table", CURATED_PATH)

    cli = invoke(bedrot_lake, "register", failed.run_id, "table", "--as", CURATED_PATH)
    assert cli.exit_code == 1 and "only FINISHED runs can be registered" in cli.stderr
    cli = invoke(bedrot_lake, "register", run_id, "tabel", "--as", CURATED_PATH)
    assert cli.exit_code == 1 and "its outputs: table" in cli.stderr
    cli = invoke(bedrot_lake, "register", run_id[:4], "table", "--as", CURATED_PATH)
    assert cli.exit_code == 2 and "too short: give at least 6 characters" in cli.stderr
    assert MlflowClient(lab.settings.tracking_uri).search_registered_models() == []
    cli = invoke(bedrot_lake, "register", run_id[:8], "table", "--as", CURATED_PATH)  # a short id, as runs list shows
    assert cli.exit_code == 0 and f"registered {NAME} v1" in cli.stdout, cli.output


def test_a_dry_run_checks_everything_and_changes_nothing(lab, bedrot_lake):
    v1 = new_version(lab)
    cli = invoke(bedrot_lake, "promote", NAME, "--dry-run")
    assert cli.exit_code == 0, cli.output
    assert cli.stdout.strip() == f"dry run: {NAME} v1 would be promoted to 4_curated/{CURATED_PATH} (all checks pass)"
    assert not target_of(bedrot_lake).exists()
    assert read_lineage(lab, CURATED_PATH) == [] and alias(lab) is None and alias(lab, which="candidate") == "1"
    promote(lab, NAME)
    assert target_of(bedrot_lake).read_bytes() == v1.data


def test_a_dry_run_or_a_refused_promotion_leaves_no_new_folder(lab, bedrot_lake):
    new_version(lab, "brand_new/deeper/x.parquet")
    assert promote(lab, "curated.brand_new.deeper.x", dry_run=True).status == "dry run"
    assert not (bedrot_lake / "4_curated" / "brand_new").exists()
    write_contract(bedrot_lake, "min_rows = 10\n", "brand_new/deeper/x.parquet")
    with pytest.raises(PromotionError):
        promote(lab, "curated.brand_new.deeper.x")
    assert not (bedrot_lake / "4_curated" / "brand_new").exists()


def test_two_curated_paths_never_share_a_registered_model(lab):
    first = new_version(lab, CURATED_PATH)
    try:
        second = register(lab, first.run_id, "table", "demo.table.parquet")
    except PromotionError:
        return  # refusing is fine too
    assert second["name"] != NAME


# -- 8. history -----------------------------------------------------------------------------


def test_promotions_list_and_show_as_json(lab, bedrot_lake):
    v1 = new_version(lab, n=3)
    promote(lab, NAME)
    v2 = new_version(lab, n=5)
    promote(lab, NAME)
    rollback(lab, NAME)
    other = new_version(lab, "other/x.parquet", n=2)
    promote(lab, "curated.other.x")

    cli = invoke(bedrot_lake, "promotions", "list", "--json")
    assert cli.exit_code == 0, cli.output
    rows = json.loads(cli.stdout)
    assert [(r["curated_path"], r["model"], r["version"], r["action"], r["run_id"]) for r in rows] == [
        (CURATED_PATH, NAME, "1", "rollback", v1.run_id), ("other/x.parquet", "curated.other.x", "1", "promote",
                                                           other.run_id)]
    assert all(r["promoted_by"] == "tester" and r["promoted_at"] for r in rows)

    cli = invoke(bedrot_lake, "promotions", "list", NAME, "--json")
    assert [(r["action"], r["version"], r["run_id"]) for r in json.loads(cli.stdout)] == [
        ("promote", "1", v1.run_id), ("promote", "2", v2.run_id), ("rollback", "1", v1.run_id)]

    cli = invoke(bedrot_lake, "promotions", "show", NAME, "--json")
    assert cli.exit_code == 0, cli.output
    shown = json.loads(cli.stdout)
    assert shown == {"curated_path": CURATED_PATH, "history": read_lineage(lab, CURATED_PATH)}
    assert [e["sha256"] for e in shown["history"]] == [v1.sha256, v2.sha256, v1.sha256]
    assert shown["history"][1]["experiment"] == "maker" and shown["history"][1]["params"]["n"] == "5"
    assert shown["history"][2]["replaced"]["version"] == "2"

    cli = invoke(bedrot_lake, "promotions", "show", "curated.nothing", "--json")
    assert cli.exit_code == 2 and "has no candidate or curated version" in cli.stderr


def unwrapped(text: str) -> str:
    """Output with its line breaks undone: a path cut after a slash joined again."""
    return " ".join(text.split()).replace("/ ", "/")


def test_promotions_show_wraps_to_the_terminal_and_names_each_paths_zone(lab, bedrot_lake):
    deep, name = "reports/quarterly/streaming/by_territory/table.parquet", \
        "curated.reports.quarterly.streaming.by_territory.table"
    first = new_version(lab, deep, n=3)
    promote(lab, name)
    second = new_version(lab, deep, n=5)
    promote(lab, name)
    rollback(lab, name)
    history = read_lineage(lab, deep)

    wide = CliRunner().invoke(cli, ["--lake", str(bedrot_lake), "promotions", "show", name], env={"COLUMNS": "250"})
    assert wide.exit_code == 0, wide.output
    assert max(len(line) for line in wide.stdout.splitlines()) > 100  # so the narrower ones below had to wrap
    for columns in (100, 60):
        shown = CliRunner().invoke(cli, ["--lake", str(bedrot_lake), "promotions", "show", name],
                                   env={"COLUMNS": str(columns)})
        assert shown.exit_code == 0, shown.output
        lines = shown.stdout.splitlines()
        assert max(len(line) for line in lines) <= columns, shown.stdout
        assert unwrapped(shown.stdout) == unwrapped(wide.stdout)  # the same words, cut nowhere else
    assert wide.stdout.splitlines()[0] == f"{name} -> 4_curated/{deep}"
    assert wide.stdout.splitlines()[1:] == [
        f"  {history[2]['promoted_at']}  rollback v1 by tester",
        f"    run {first.run_id} (maker), 3 rows, sha256 {first.sha256[:12]}",
        f"    replaced v2, archived as {history[2]['replaced']['archived_to']}",
        f"  {history[1]['promoted_at']}  promote v2 by tester",
        f"    run {second.run_id} (maker), 5 rows, sha256 {second.sha256[:12]}",
        f"    replaced v1, archived as {history[1]['replaced']['archived_to']}",
        f"  {history[0]['promoted_at']}  promote v1 by tester",
        f"    run {first.run_id} (maker), 3 rows, sha256 {first.sha256[:12]}",
    ]
    assert history[2]["replaced"]["archived_to"].startswith(f"5_archive/curated/{deep}/")


def test_promotions_list_fits_the_terminal_and_names_each_files_zone(lab, bedrot_lake):
    deep, name = "reports/quarterly/streaming/by_territory/table.parquet", \
        "curated.reports.quarterly.streaming.by_territory.table"
    made = new_version(lab, deep, n=3)
    promote(lab, name)
    for columns in (100, 80):
        shown = CliRunner().invoke(cli, ["--lake", str(bedrot_lake), "promotions", "list"],
                                   env={"COLUMNS": str(columns)})
        assert shown.exit_code == 0, shown.output
        header, row = shown.stdout.splitlines()
        assert header.split() == ["FILE", "MODEL", "VERSION", "ACTION", "RUN", "WHEN", "BY"]
        assert max(len(header), len(row)) <= columns, shown.stdout
        assert row.startswith("4_c") and made.run_id[:12] in row and row.endswith("tester")
        if columns == 100:
            assert row.startswith("4_curated/reports/")
