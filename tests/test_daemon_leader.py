"""The leader lock for real: two daemon processes of one lake (two lake folders of the same
name, standing for two hosts) against one PostgreSQL database; only the leader runs jobs."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import bedrot

from bedrot_lab.config import DEFAULT_CONFIG
from bedrot_lab.testing import make_lake

LAKE_NAME = "shared-lake"
POLL = 1

#: each round of `stamp` appends "start PID" and "end PID" lines to one file that both daemons share
STAMP_PLUGIN = """
import os
import time
from bedrot_lab import HousekeepingJob, hookimpl

def stamp(ctx):
    def write(what):
        with open(ctx.options["file"], "a") as handle:
            handle.write(f"{what} {os.getpid()} {time.time()}\\n")
    write("start")
    for _ in range(3):
        if ctx.stopping:
            break
        time.sleep(0.1)
    write("end")
    return "stamped"

def linger(ctx):
    for _ in range(1200):
        ctx.check_stop()
        time.sleep(0.1)
    return "lingered"

def stubborn(ctx):
    time.sleep(60)  # ignores the stop
    return "finished"

@hookimpl
def housekeeping_jobs(register):
    register(HousekeepingJob("stamp", stamp, every="1s", options={"file": ""}))
    register(HousekeepingJob("stubborn", stubborn, every="1h", enabled=False))
    register(HousekeepingJob("linger", linger, every="1h", own_process=True, enabled=False))
"""

#: the built-in jobs stay off: only `stamp` runs
QUIET = "".join(f"[daemon.jobs.{job}]\nenabled = false\n" for job in ("watch", "check", "reconcile", "clean", "report", "reap"))


def two_hosts(root: Path, leader_lock: str, stamps: Path) -> list[Path]:
    """Two lake folders of the same lake name, each with the stamp plugin, sharing ``leader_lock``."""
    lakes = []
    for host in ("host-a", "host-b"):
        lake = make_lake(root / host, config=DEFAULT_CONFIG.format(name=LAKE_NAME))
        (lake / "plugins" / "stamp_job.py").write_text(STAMP_PLUGIN)
        config = lake / "bedrot-lab.toml"
        config.write_text(config.read_text() + f'\n[daemon]\nstop_timeout = 1\nleader_lock = "{leader_lock}"\n'
                          f'leader_poll = {POLL}\n[daemon.jobs.stamp]\nfile = "{stamps}"\n{QUIET}')
        lakes.append(lake)
    return lakes


def start_daemon(lake: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "BEDROT_LAKE": str(lake), "BEDROT_USER": "tester"}
    return subprocess.Popen([sys.executable, "-m", "bedrot_lab", "daemon", "start", "--foreground"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)


def wait_for(condition, timeout: float = 60.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"not within {timeout} s: {condition}")


def lines(stamps: Path) -> list[list[str]]:
    return [line.split() for line in stamps.read_text().splitlines()] if stamps.exists() else []


def starts_by(stamps: Path, pid: int) -> int:
    return sum(1 for line in lines(stamps) if line[0] == "start" and line[1] == str(pid))


def status(lake: Path) -> dict:
    env = {**os.environ, "BEDROT_LAKE": str(lake), "BEDROT_USER": "tester"}
    return json.loads(bedrot("daemon", "status", "--json", env=env).stdout)


def lock_holder_pid(database: str) -> int | None:
    """The pid in the application name of the session that holds the lake's advisory lock, as
    the key is documented (docs/daemon.md): sha256("bedrot-lab daemon " + name), first 8 bytes."""
    import psycopg

    key = int.from_bytes(hashlib.sha256(f"bedrot-lab daemon {LAKE_NAME}".encode()).digest()[:8], "big", signed=True)
    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    with psycopg.connect(database.replace("+psycopg", "")) as connection:
        row = connection.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s::bigint::oid "
            "AND l.objid = %s::bigint::oid AND l.objsubid = 1", (unsigned >> 32, unsigned & 0xFFFF_FFFF)).fetchone()
    return int(row[0].split()[3]) if row else None  # "bedrot-lab daemon pid PID on HOST"


def assert_never_overlapping(stamps: Path) -> None:
    """In the file's order (appends are atomic), every start is followed by its own end before
    any other start; a "killed PID" line written by the test closes that process's open round."""
    running: dict[str, str] = {}
    for number, (what, pid, *_) in enumerate(lines(stamps), 1):
        if what == "killed":
            running.pop(pid, None)
        elif what == "start":
            assert not running, f"line {number}: {pid} started while {running} ran\n{stamps.read_text()}"
            running[pid] = pid
        else:
            assert running.pop(pid, None) == pid, f"line {number}: an end without its start\n{stamps.read_text()}"


@pytest.mark.server
def test_only_the_leader_runs_jobs_and_a_standby_takes_over(tmp_path, postgres, postgres_database):
    stamps = tmp_path / "stamps.txt"
    lake_a, lake_b = two_hosts(tmp_path, postgres_database, stamps)
    first = start_daemon(lake_a)
    second = None
    try:
        wait_for(lambda: starts_by(stamps, first.pid) >= 1)  # the first started leads
        second = start_daemon(lake_b)
        standby = wait_for(lambda: (found := status(lake_b))["role"] == "standby" and found)
        assert standby["running"] and f"pid {first.pid}" in standby["leader"]
        assert status(lake_a)["role"] == "leader" and lock_holder_pid(postgres_database) == first.pid
        wait_for(lambda: starts_by(stamps, first.pid) >= 4)
        assert starts_by(stamps, second.pid) == 0
        assert "standby: leader is bedrot-lab daemon" in (lake_b / ".bedrot-lab" / "daemon.log").read_text()

        # the database goes away under both (a restart, a network cut): the leader stops its jobs, both wait
        import psycopg

        database = postgres_database.rsplit("/", 1)[1]
        with psycopg.connect(postgres.replace("+psycopg", ""), autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))
        wait_for(lambda: "lost the leader lock" in (lake_a / ".bedrot-lab" / "daemon.log").read_text())
        for lake in (lake_a, lake_b):
            wait_for(lambda lake=lake: "the leader lock's database does not answer" in (
                lake / ".bedrot-lab" / "daemon.log").read_text() and status(lake)["role"] == "standby")
        stamped = len(lines(stamps))
        time.sleep(2 * POLL)
        assert len(lines(stamps)) == stamped  # nobody holds the lock: no job runs
        with psycopg.connect(postgres.replace("+psycopg", ""), autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        leader = wait_for(lambda: lock_holder_pid(postgres_database))
        wait_for(lambda: len(lines(stamps)) >= stamped + 4)  # jobs run again, by whichever took it

        # SIGKILL of the leader: PostgreSQL ends its session, the standby takes the lock at its next try
        killed, survivor = (first, second) if leader == first.pid else (second, first)
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=10)
        with stamps.open("a") as handle:
            handle.write(f"killed {killed.pid} {time.time()}\n")
        ran = starts_by(stamps, survivor.pid)
        wait_for(lambda: lock_holder_pid(postgres_database) == survivor.pid, timeout=30)
        wait_for(lambda: starts_by(stamps, survivor.pid) >= ran + 2, timeout=30)
        survivor_lake = lake_a if survivor is first else lake_b
        assert status(survivor_lake)["role"] == "leader"
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(timeout=15) == 0
    finally:
        for process in (first, second):
            if process is not None:
                process.kill()
                process.wait()
    assert_never_overlapping(stamps)
    assert lines(stamps)[-1][0] == "end"  # the survivor's SIGTERM let its last round finish


@pytest.mark.server
def test_a_leader_that_loses_the_lock_while_a_job_ignores_the_stop_ends(tmp_path, postgres_database):
    """A job in a thread cannot be ended but with the process: the daemon exits 1 rather than
    let it run on without the lock (systemd's Restart=on-failure brings it back as a standby)."""
    import psycopg

    lake = two_hosts(tmp_path, postgres_database, tmp_path / "stamps.txt")[0]
    config = lake / "bedrot-lab.toml"
    config.write_text(config.read_text().replace("[daemon.jobs.stamp]\n", "[daemon.jobs.stamp]\nenabled = false\n")
                      + "[daemon.jobs.stubborn]\nenabled = true\n")
    env = {**os.environ, "BEDROT_LAKE": str(lake), "BEDROT_USER": "tester"}
    daemon = subprocess.Popen([sys.executable, "-m", "bedrot_lab", "daemon", "start", "--foreground"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: any(job["name"] == "stubborn" and job["running"] for job in status(lake)["jobs"]))
        with psycopg.connect(postgres_database.replace("+psycopg", ""), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE %s",
                          (f"bedrot-lab daemon pid {daemon.pid} %",))
        _, stderr = daemon.communicate(timeout=30)
    finally:
        daemon.kill()
        daemon.wait()
    assert daemon.returncode == 1, stderr
    assert stderr.splitlines()[-1] == ("Error: lost the leader lock while stubborn ran on past the stop deadline: the "
                                       "daemon ends so that it cannot run on without it")


PASSWORD = "pw-" + secrets.token_hex(8)  # fake, made here


@pytest.mark.parametrize(("uri", "code", "says"), [
    (f"postgresql+psycopg://nobody:{PASSWORD}@127.0.0.1:1/nothing", 1,
     "cannot reach the leader lock's database postgresql://nobody:****@127.0.0.1:1/nothing: "),
    (f"mysql://nobody:{PASSWORD}@127.0.0.1/nothing", 2, "daemon.leader_lock: expected a PostgreSQL URI"),
], ids=["unreachable", "not-postgresql"])  # ids without the password: each test process makes its own
def test_a_leader_lock_that_cannot_be_used_is_one_line_at_start(tmp_path, uri, code, says):
    pytest.importorskip("psycopg")
    lake = two_hosts(tmp_path, uri, tmp_path / "stamps.txt")[0]
    env = {**os.environ, "BEDROT_LAKE": str(lake), "BEDROT_USER": "tester"}
    for args in (["--foreground"], []):
        result = bedrot("daemon", "start", *args, env=env)
        assert result.returncode == code, result.stderr
        assert says in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert PASSWORD not in result.stderr + result.stdout
    assert not (tmp_path / "stamps.txt").exists()
    for path in (lake / ".bedrot-lab").glob("daemon.*"):
        assert PASSWORD.encode() not in path.read_bytes(), path


def test_a_job_in_its_own_process_ends_when_its_daemon_is_killed(tmp_path):
    """Else a killed leader's job would run on beside the next leader's."""
    from bedrot_lab.daemon.history import JobHistory

    lake = two_hosts(tmp_path, "postgresql://unused@127.0.0.1/unused", tmp_path / "stamps.txt")[0]
    config = lake / "bedrot-lab.toml"
    config.write_text(config.read_text().replace("leader_lock =", "# leader_lock =")
                      .replace("[daemon.jobs.stamp]\n", "[daemon.jobs.stamp]\nenabled = false\n")
                      + "[daemon.jobs.linger]\nenabled = true\n")

    def lingering() -> list[dict]:
        with JobHistory.for_state(lake / ".bedrot-lab") as history:
            return history.runs("linger")

    daemon = start_daemon(lake)
    try:
        job = wait_for(lingering)[0]
        assert job["ended"] is None
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=10)
    finally:
        daemon.kill()
        daemon.wait()
    ended = wait_for(lambda: (run := lingering()[0])["ended"] and run, timeout=30)
    assert ended["result"] == "stopped half way: the daemon was stopping"
    wait_for(lambda: not Path(f"/proc/{job['pid']}").exists(), timeout=10)


def test_the_leader_lock_settings_and_key():
    from bedrot_lab.config import ConfigError
    from bedrot_lab.daemon.leader import lock_key
    from bedrot_lab.daemon.settings import DaemonSettings

    assert DaemonSettings.from_table({}).leader_lock is None
    settings = DaemonSettings.from_table({"leader_lock": "postgresql+psycopg://lab@db:5432/locks", "leader_poll": 3})
    assert (settings.leader_lock, settings.leader_poll) == ("postgresql://lab@db:5432/locks", 3.0)
    assert DaemonSettings.from_table({"leader_lock": "postgres://lab@db/locks"}).leader_poll == 10.0
    for table, key in [({"leader_lock": "sqlite:///x.db"}, "daemon.leader_lock"), ({"leader_lock": 5}, "daemon.leader_lock"),
                       ({"leader_poll": 0.5}, "daemon.leader_poll"), ({"leader_poll": "10s"}, "daemon.leader_poll")]:
        with pytest.raises(ConfigError, match=key):
            DaemonSettings.from_table(table)
    assert lock_key(LAKE_NAME) == int.from_bytes(hashlib.sha256(b"bedrot-lab daemon shared-lake").digest()[:8], "big",
                                                 signed=True)
    assert lock_key(LAKE_NAME) != lock_key("another-lake") and -(2**63) <= lock_key("another-lake") < 2**63
