"""``sandbox clean`` and ``sandbox restore`` on real files in temporary folders, with a real
UsageIndex and real settings.

Ages: as in test_sandbox_rules.py, ctime cannot be set, so plans are made at ``LATER``
(100 days after the real now, when every ctime is 100 days old) and files get their
atime and mtime relative to ``LATER``.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import itertools
import json
import os
import re
import stat
import time
from datetime import datetime
from pathlib import Path

import pytest

from bedrot_lab.config import settings_from
from bedrot_lab.fsutil import CHUNK
from bedrot_lab.sandbox import moves
from bedrot_lab.sandbox.archive import LOCK_NAME, CleanupError, Skipped, read_manifest
from bedrot_lab.sandbox.clean import CHANGED, CREDENTIAL, CleanItem, CleanPlan, apply_clean, plan_clean
from bedrot_lab.sandbox.index import UsageIndex
from bedrot_lab.sandbox.moves import LINK
from bedrot_lab.sandbox.restore import EXISTS, restore
from bedrot_lab.sandbox.settings import DAY

NOW = time.time()
LATER = NOW + 100 * DAY  # when plans are made: every ctime is then 100 days old
RUN = "0123456789abcdef0123456789abcdef"
OTHER_RUN = "fedcba9876543210fedcba9876543210"
RULES = {"stale": [{"name": "logs", "glob": "*.log", "days": 30, "action": "delete"}], "keep": ["final"]}
_fresh_names = itertools.count()


# -- helpers ----------------------------------------------------------------------------------


def read(path: Path) -> bytes:
    """A file's bytes, read without touching its atime."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOATIME", 0))
    except PermissionError:
        fd = os.open(path, os.O_RDONLY)
    with open(fd, "rb") as handle:
        return handle.read()


def disk(root: Path) -> dict[str, tuple]:
    """Every file and link below ``root``: bytes, mtime_ns, atime_ns and mode (links: their target)."""
    state: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root):
        for name in [*files, *(d for d in dirs if os.path.islink(os.path.join(folder, d)))]:
            path = Path(folder, name)
            st = path.lstat()
            rel = path.relative_to(root).as_posix()
            if stat.S_ISLNK(st.st_mode):
                state[rel] = ("link", os.readlink(path))
            else:
                state[rel] = (read(path), st.st_mtime_ns, st.st_atime_ns, stat.S_IMODE(st.st_mode))
    return state


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def records(index: UsageIndex) -> dict[str, tuple]:
    return {r.path: (r.size, r.mtime, r.is_link) for r in index.files()}


class Lake:
    """A lake in a temporary folder: its settings (with RULES), its sandbox and an index."""

    def __init__(self, tmp: Path, sandbox: dict | None = None, zones: dict | None = None):
        self.tmp = tmp
        self.root = tmp / "lake"
        self.box = self.root / "sandbox"
        self.box.mkdir(parents=True)
        data = {"sandbox": RULES if sandbox is None else sandbox, **({"zones": zones} if zones else {})}
        self.settings = settings_from(self.root, data, None, env={})
        self.archive = self.settings.zone("archive")
        self._index: UsageIndex | None = None

    def write(self, rel: str, data: bytes | str = b"x", *, days: float = 150) -> Path:
        """A file last used ``days`` before LATER (atime and mtime)."""
        path = self.box / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        os.utime(path, (LATER - days * DAY, LATER - days * DAY))
        return path

    def index(self) -> UsageIndex:
        """The index (a full scan the first time it is asked for)."""
        if self._index is None:
            self._index = UsageIndex(self.tmp / "state" / "sandbox.db", self.box, workers=0)
            self._index.full_scan()
        return self._index

    def rescan(self) -> UsageIndex:
        self.index().full_scan()
        return self.index()

    def plan(self, **options) -> CleanPlan:
        return plan_clean(self.settings, self.index(), now=LATER, **options)

    def clean(self, **options):
        return apply_clean(self.settings, self.plan(**options), self.index())

    def restore(self, manifest: Path, paths=()):
        return restore(self.settings, manifest, paths, index=self.index())

    def assert_index_matches_disk(self) -> None:
        fresh = UsageIndex(self.tmp / "state" / f"fresh-{next(_fresh_names)}.db", self.box, workers=0)
        try:
            fresh.full_scan()
            index = self.index()
            assert records(index) == records(fresh)
            assert sorted(index.folders()) == sorted(fresh.folders())
            assert index.total() == fresh.total()
        finally:
            fresh.close()

    def manifests(self) -> list[Path]:
        return sorted(self.archive.glob("sandbox/*/_manifests/*.jsonl"))

    def close(self) -> None:
        if self._index is not None:
            self._index.close()


@pytest.fixture
def lake(tmp_path: Path):
    lake = Lake(tmp_path)
    yield lake
    lake.close()


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the lake, with a file that nothing may touch."""
    folder = tmp_path / "outside"
    folder.mkdir()
    secret = folder / "secret.txt"
    secret.write_bytes(b"not the sandbox's")
    os.utime(secret, (NOW - 200 * DAY, NOW - 200 * DAY))
    return folder


def item_for(path: Path, rel: str, rule: str = "default", action: str = "archive") -> CleanItem:
    """A hand-made plan item for ``path`` (its lstat as the index would record it)."""
    st = path.lstat()
    return CleanItem(rel, st.st_size, st.st_mtime, rule, action, 100.0)


def paths(plan: CleanPlan) -> set[str]:
    return {item.path for item in plan.items}


# -- the plan ----------------------------------------------------------------------------------


def test_plan_lists_stale_files_with_rule_and_action_and_changes_nothing(lake: Lake):
    lake.write("users/ana/p/report.csv", b"r" * 10, days=150)  # 100 days (ctime) > default 90
    lake.write("users/ana/p/run.log", b"l" * 20, days=40)  # 40 > logs' 30: delete
    lake.write("users/ana/p/scratch.tmp", b"t", days=10)  # 10 > tmp's 7
    lake.write("users/ana/p/fresh.csv", days=2)
    lake.write("users/ana/p/recent.log", days=5)
    lake.write("analysis/q3/old.html", b"h" * 5, days=120)
    before = disk(lake.box)
    plan = lake.plan()
    assert {i.path: (i.rule, i.action, round(i.age_days)) for i in plan.items} == {
        "users/ana/p/report.csv": ("default", "archive", 100),
        "users/ana/p/run.log": ("logs", "delete", 40),
        "users/ana/p/scratch.tmp": ("tmp", "archive", 10),
        "analysis/q3/old.html": ("default", "archive", 100),
    }
    assert plan.skipped == []
    assert plan.bytes == 10 + 20 + 1 + 5
    report = next(i for i in plan.items if i.path == "users/ana/p/report.csv")
    assert (report.size, report.mtime) == (10, (lake.box / report.path).stat().st_mtime)
    assert json.loads(json.dumps(plan.to_dict()))["files"] == 4
    assert disk(lake.box) == before  # not even an atime: the secrets check reads with O_NOATIME
    assert not lake.archive.exists()


def test_plan_scoped_to_a_user_and_with_older_than(lake: Lake):
    lake.write("users/ana/p/old.csv", days=150)
    lake.write("users/ana/p/ten.csv", days=10)
    lake.write("users/ana/p/three.csv", days=3)
    lake.write("users/anabel/p/old.csv", days=150)
    lake.write("users/bob/p/old.csv", days=150)
    lake.write("analysis/old.csv", days=150)
    assert paths(lake.plan(user="ana")) == {"users/ana/p/old.csv"}
    assert paths(lake.plan(user="ana", older_than=5)) == {"users/ana/p/old.csv", "users/ana/p/ten.csv"}
    assert paths(lake.plan(user="an")) == set()
    assert paths(lake.plan(older_than=5)) == {"users/ana/p/old.csv", "users/ana/p/ten.csv", "users/anabel/p/old.csv",
                                              "users/bob/p/old.csv", "analysis/old.csv"}
    for bad in ("../bob", "ana/p", ""):
        with pytest.raises(CleanupError):
            lake.plan(user=bad)


# -- clean ------------------------------------------------------------------------------------


def test_apply_archives_into_dated_folders_with_a_manifest(lake: Lake):
    big = os.urandom(2 * CHUNK + 12345)
    lake.write("users/ana/p/report.csv", b"report v1", days=150)
    lake.write("users/ana/p/sub/big.bin", big, days=150)
    lake.write("users/ana/p/fresh.csv", days=2)
    originals = {rel: (lake.box / rel).stat() for rel in ("users/ana/p/report.csv", "users/ana/p/sub/big.bin")}
    result = lake.clean()

    assert result.skipped == [] and result.deleted == []
    assert result.bytes == len(b"report v1") + len(big)
    assert re.fullmatch(r"clean-\d{6}-[0-9a-f]{6}\.jsonl", result.manifest.name)
    assert result.manifest.parent.name == "_manifests"
    header, entries = read_manifest(result.manifest)
    day = datetime.fromisoformat(header["created"]).strftime("%Y-%m-%d")
    assert result.manifest.parent.parent == lake.archive / "sandbox" / day
    assert (header["kind"], header["version"], header["user"]) == ("bedrot-lab sandbox clean", 1, lake.settings.user)
    assert header["sandbox"] == str(lake.box)
    assert entries == result.archived
    contents = {"users/ana/p/report.csv": b"report v1", "users/ana/p/sub/big.bin": big}
    for entry in entries:
        rel, st = entry["path"], originals[entry["path"]]
        assert entry["archived"] == f"sandbox/{day}/{rel}"
        assert entry["sha256"] == sha(contents[rel])
        assert (entry["size"], entry["mtime"], entry["mtime_ns"], entry["atime_ns"], entry["mode"]) == (
            st.st_size, st.st_mtime, st.st_mtime_ns, st.st_atime_ns, stat.S_IMODE(st.st_mode))
        assert (entry["rule"], entry["action"]) == ("default", "archive")
        archived = lake.archive / entry["archived"]
        assert read(archived) == contents[rel]
        assert archived.stat().st_mtime_ns == st.st_mtime_ns
        assert not (lake.box / rel).exists()
    assert (lake.box / "users/ana/p/fresh.csv").exists()
    lake.assert_index_matches_disk()

    # a second clean the same day does not overwrite what the first archived
    lake.write("users/ana/p/report.csv", b"report v2", days=150)
    lake.rescan()
    second = lake.clean()
    [entry] = second.archived
    second_day = datetime.fromisoformat(read_manifest(second.manifest)[0]["created"]).strftime("%Y-%m-%d")
    suffix = ".~1~" if second_day == day else ""  # (unless midnight fell between the two)
    assert entry["archived"] == f"sandbox/{second_day}/users/ana/p/report.csv{suffix}"
    assert read(lake.archive / entry["archived"]) == b"report v2"
    assert read(lake.archive / f"sandbox/{day}/users/ana/p/report.csv") == b"report v1"
    assert second.manifest != result.manifest
    assert lake.restore(second.manifest).restored == ["users/ana/p/report.csv"]
    assert read(lake.box / "users/ana/p/report.csv") == b"report v2"


def test_clean_then_restore_gives_back_identical_files_and_times(lake: Lake):
    lake.write("users/ana/p/a.csv", b"alpha", days=150)
    lake.write("users/ana/p/deep/er/b.bin", os.urandom(CHUNK + 1), days=200)
    private = lake.write("users/bob/q/private.txt", b"mine", days=120)
    private.chmod(0o600)
    lake.write("analysis/cache/x.bin", b"cached", days=20)
    lake.write("users/ana/p/fresh.csv", b"fresh", days=1)
    before = disk(lake.box)
    index = lake.index()

    result = apply_clean(lake.settings, lake.plan(), index)
    assert {e["path"] for e in result.archived} == set(before) - {"users/ana/p/fresh.csv"}
    assert set(disk(lake.box)) == {"users/ana/p/fresh.csv"}
    lake.assert_index_matches_disk()

    restored = lake.restore(result.manifest)
    assert sorted(restored.restored) == sorted(e["path"] for e in result.archived)
    assert restored.skipped == []
    assert disk(lake.box) == before  # bytes, mtime_ns, atime_ns and mode
    lake.assert_index_matches_disk()
    leftovers = [p for p in lake.archive.rglob("*") if p.is_file() and p != result.manifest]
    assert leftovers == []

    again = lake.restore(result.manifest)
    assert again.restored == []
    assert {(s.reason, s.failed) for s in again.skipped} == {("already restored", False)}


def test_restore_a_subset_by_path_or_folder(lake: Lake):
    for rel in ("users/ana/p/a/1.csv", "users/ana/p/a/2.csv", "users/ana/p/a2/3.csv", "analysis/x.csv"):
        lake.write(rel, rel, days=150)
    manifest = lake.clean().manifest

    assert lake.restore(manifest, ["users/ana/p/a2/3.csv"]).restored == ["users/ana/p/a2/3.csv"]
    assert sorted(lake.restore(manifest, ["users/ana/p/a/"]).restored) == ["users/ana/p/a/1.csv",
                                                                           "users/ana/p/a/2.csv"]
    assert not (lake.box / "analysis/x.csv").exists()
    for nothing in (["users/ana/p/a/1"], ["users/ana/p/nothing"], ["analysis/x.csv", "users/zed"]):
        with pytest.raises(CleanupError, match="no entry"):
            lake.restore(manifest, nothing)
    rest = lake.restore(manifest)
    assert rest.restored == ["analysis/x.csv"]
    assert sorted(s.path for s in rest.skipped if s.reason == "already restored") == [
        "users/ana/p/a/1.csv", "users/ana/p/a/2.csv", "users/ana/p/a2/3.csv"]
    assert read(lake.box / "analysis/x.csv") == b"analysis/x.csv"
    lake.assert_index_matches_disk()


def test_restore_rejects_what_is_not_a_manifest(lake: Lake, tmp_path: Path):
    with pytest.raises(CleanupError, match="no manifest"):
        lake.restore(tmp_path / "missing.jsonl")
    for text in ("", "a,b\n1,2\n", '{"kind": "something else", "version": 1}\n', "[1, 2]\n"):
        (tmp_path / "bad.jsonl").write_text(text)
        with pytest.raises(CleanupError, match="not a sandbox clean manifest"):
            lake.restore(tmp_path / "bad.jsonl")


def test_restore_never_overwrites_a_file_in_the_sandbox(lake: Lake):
    lake.write("users/ana/p/a.csv", b"old", days=150)
    result = lake.clean()
    newer = lake.write("users/ana/p/a.csv", b"new work", days=0)
    outcome = lake.restore(result.manifest)
    assert outcome.restored == []
    assert outcome.skipped == [Skipped("users/ana/p/a.csv", EXISTS)]
    assert read(newer) == b"new work"
    assert read(lake.archive / result.archived[0]["archived"]) == b"old"

    newer.rename(newer.with_name("a.new.csv"))
    assert lake.restore(result.manifest).restored == ["users/ana/p/a.csv"]
    assert read(newer) == b"old"


def test_restore_skips_a_tampered_archive(lake: Lake):
    lake.write("users/ana/p/a.csv", b"original", days=150)
    result = lake.clean()
    archived = lake.archive / result.archived[0]["archived"]
    archived.write_bytes(b"0riginal")  # same size, other bytes
    outcome = lake.restore(result.manifest)
    assert outcome.restored == []
    [skipped] = outcome.skipped
    assert "does not match the manifest" in skipped.reason
    assert not (lake.box / "users/ana/p/a.csv").exists()
    assert read(archived) == b"0riginal"


def test_restore_refuses_hand_edited_entries_that_leave_the_zones(lake: Lake, outside: Path):
    lake.write("users/ana/p/a.csv", b"alpha", days=150)
    lake.write("users/ana/p/b.csv", b"beta", days=150)
    result = lake.clean()
    header, entries = read_manifest(result.manifest)
    a, b = sorted(entries, key=lambda e: e["path"])
    secret = outside / "secret.txt"
    secret_entry = {**a, "sha256": sha(secret.read_bytes()), "size": secret.stat().st_size}
    day_folder = result.manifest.parent.parent
    (day_folder / "evil").symlink_to(outside, target_is_directory=True)
    edited = [
        {**a, "path": "../../outside/escaped.csv"},
        {**a, "path": "users/ana/../../../outside/escaped.csv"},
        {**a, "path": str(outside / "escaped.csv")},
        {**secret_entry, "path": "users/ana/p/stolen.txt", "archived": "../../outside/secret.txt"},
        {**secret_entry, "path": "users/ana/p/stolen.txt", "archived": str(secret)},
        {**secret_entry, "path": "users/ana/p/stolen.txt",
         "archived": f"sandbox/{day_folder.name}/evil/secret.txt"},  # through a link in the archive
        {**a, "path": "users/ana/p/c.csv", "size": "5"},
        b,
    ]
    hand = lake.tmp / "edited.jsonl"
    hand.write_text("".join(json.dumps(record) + "\n" for record in [header, *edited]))
    outside_before = disk(outside)

    outcome = lake.restore(hand)
    assert outcome.restored == ["users/ana/p/b.csv"]
    reasons = [s.reason for s in outcome.skipped]
    assert reasons[:3] == ["outside the sandbox"] * 3
    assert reasons[3] == reasons[4] == "the archived file is not in the archive zone's sandbox area"
    assert "reached through the link" in reasons[5] and f"{day_folder.name}/evil" in reasons[5]
    assert reasons[6] == "not a valid manifest entry"
    assert disk(outside) == outside_before
    assert not (lake.box / "users/ana/p/stolen.txt").exists()
    assert read(lake.archive / a["archived"]) == b"alpha"  # still archived, untouched
    assert not list(lake.tmp.glob("**/escaped.csv"))


def test_delete_rules_delete_only_their_files_and_record_them(lake: Lake):
    lake.write("users/ana/p/run.log", b"log lines", days=40)
    lake.write("users/ana/p/report.csv", b"report", days=150)
    kept = lake.write("users/ana/p/other.csv", b"other", days=150)
    plan = lake.plan()
    plan.items[:] = [i for i in plan.items if i.path != "users/ana/p/other.csv"]
    # a hand-made item may not delete a file whose rule says archive
    plan.items.append(item_for(kept, "users/ana/p/other.csv", "default", "delete"))
    result = apply_clean(lake.settings, plan, lake.index())

    [deleted] = result.deleted
    assert deleted["path"] == "users/ana/p/run.log"
    assert (deleted["archived"], deleted["rule"], deleted["action"]) == (None, "logs", "delete")
    assert (deleted["sha256"], deleted["size"]) == (sha(b"log lines"), 9)
    assert not (lake.box / "users/ana/p/run.log").exists()
    assert not list(lake.archive.rglob("run.log*"))
    assert [e["path"] for e in result.archived] == ["users/ana/p/report.csv"]
    assert result.skipped == [Skipped("users/ana/p/other.csv", "its rule (default) does not say delete; left in place")]
    assert read(kept) == b"other"
    _, entries = read_manifest(result.manifest)
    assert [e["path"] for e in entries] == ["users/ana/p/report.csv", "users/ana/p/run.log"]
    assert result.bytes == 9 + 6
    lake.assert_index_matches_disk()

    outcome = lake.restore(result.manifest)
    assert outcome.restored == ["users/ana/p/report.csv"]
    assert outcome.skipped == [Skipped("users/ana/p/run.log", "deleted by rule logs; nothing to restore", failed=False)]


def test_pins_are_checked_again_on_disk(lake: Lake):
    pinned = lake.write("users/ana/p/pinned/a.csv", b"a", days=150)
    loose = lake.write("users/ana/p/loose.csv", b"b", days=150)
    final = lake.write("users/ana/p/final/model.pt", b"m", days=150)
    plan = lake.plan()
    assert paths(plan) == {"users/ana/p/pinned/a.csv", "users/ana/p/loose.csv"}  # the keep glob pins final/
    (pinned.parent / ".keep").touch()  # after the index was built
    plan.items.append(item_for(final, "users/ana/p/final/model.pt"))
    result = apply_clean(lake.settings, plan, lake.index())
    assert sorted(result.skipped, key=lambda s: s.path) == [
        Skipped("users/ana/p/final/model.pt", "pinned by keep glob 'final'"),
        Skipped("users/ana/p/pinned/a.csv", "pinned by users/ana/p/pinned/.keep"),
    ]
    assert [e["path"] for e in result.archived] == ["users/ana/p/loose.csv"]
    assert read(pinned) == b"a" and read(final) == b"m" and not loose.exists()


def test_files_changed_or_gone_since_the_plan_are_left_alone(lake: Lake):
    grown = lake.write("users/ana/p/grown.csv", b"1234", days=150)
    touched = lake.write("users/ana/p/touched.csv", b"1234", days=150)
    gone = lake.write("users/ana/p/gone.csv", b"1234", days=150)
    plan = lake.plan()
    assert len(plan.items) == 3
    with grown.open("ab") as handle:
        handle.write(b"5")
    os.utime(touched, (LATER - 150 * DAY, LATER - 149 * DAY))  # mtime only; same size and bytes
    gone.unlink()
    result = apply_clean(lake.settings, plan, lake.index())
    assert sorted(result.skipped, key=lambda s: s.path) == [
        Skipped("users/ana/p/gone.csv", "gone"),
        Skipped("users/ana/p/grown.csv", CHANGED),
        Skipped("users/ana/p/touched.csv", CHANGED),
    ]
    assert result.archived == [] and result.manifest is None
    assert read(grown) == b"12345" and read(touched) == b"1234"
    assert lake.manifests() == []


def test_nothing_to_do_writes_no_manifest(lake: Lake):
    lake.write("users/ana/p/fresh.csv", days=1)
    plan = lake.plan()
    assert plan.items == []
    result = apply_clean(lake.settings, plan, lake.index())
    assert (result.manifest, result.archived, result.bytes) == (None, [], 0)
    assert lake.manifests() == []


# -- links and the sandbox's edges --------------------------------------------------------------


def test_a_link_to_a_file_outside_is_never_followed_nor_moved(lake: Lake, outside: Path):
    secret = outside / "secret.txt"
    link = lake.box / "users/ana/p/link.csv"
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)
    os.utime(link, (LATER - 150 * DAY, LATER - 150 * DAY), follow_symlinks=False)
    before = disk(outside)
    plan = lake.plan()
    assert paths(plan) == set()
    assert plan.skipped == [Skipped("users/ana/p/link.csv", LINK)]
    plan.items.append(item_for(link, "users/ana/p/link.csv"))  # as if the plan had listed it
    result = apply_clean(lake.settings, plan, lake.index())
    assert result.skipped == [Skipped("users/ana/p/link.csv", LINK)]
    assert result.manifest is None
    assert link.is_symlink() and os.readlink(link) == str(secret)
    assert disk(outside) == before


def test_files_reached_through_a_linked_folder_are_never_moved(lake: Lake, outside: Path):
    data = outside / "data.bin"
    data.write_bytes(b"outside data")
    os.utime(data, (LATER - 150 * DAY, LATER - 150 * DAY))
    (lake.box / "users/ana/p").mkdir(parents=True)
    (lake.box / "users/ana/p/tmp").symlink_to(outside, target_is_directory=True)
    real = lake.write("users/ana/p/real/r.csv", b"real", days=150)
    (lake.box / "users/ana/p/alias").symlink_to(real.parent, target_is_directory=True)  # a link within the sandbox
    before = disk(outside)
    plan = lake.plan()
    assert paths(plan) == {"users/ana/p/real/r.csv"}  # the index never follows links
    assert {s.path for s in plan.skipped} == {"users/ana/p/tmp", "users/ana/p/alias"}

    by_hand = CleanPlan([item_for(data, "users/ana/p/tmp/data.bin", "tmp"),
                         item_for(real, "users/ana/p/alias/r.csv")], [], LATER)
    result = apply_clean(lake.settings, by_hand, lake.index())
    assert result.manifest is None
    assert result.skipped == [
        Skipped("users/ana/p/tmp/data.bin", "reached through the link users/ana/p/tmp; links are never followed"),
        Skipped("users/ana/p/alias/r.csv", "reached through the link users/ana/p/alias; links are never followed"),
    ]
    assert disk(outside) == before
    assert read(real) == b"real"
    assert not lake.archive.exists() or not any(p.is_file() for p in lake.archive.rglob("*"))


def test_paths_that_leave_the_sandbox_are_refused(lake: Lake, outside: Path):
    secret = outside / "secret.txt"
    before = disk(outside)
    plan = CleanPlan([item_for(secret, "../outside/secret.txt"), item_for(secret, str(secret)),
                      item_for(secret, "users/./x")], [], LATER)
    result = apply_clean(lake.settings, plan)
    assert [s.reason for s in result.skipped] == ["outside the sandbox"] * 3
    assert disk(outside) == before


def test_an_archive_zone_inside_the_sandbox_is_refused(tmp_path: Path):
    lake = Lake(tmp_path, zones={"archive": "sandbox/5_archive"})
    try:
        with pytest.raises(CleanupError, match="must not lie inside"):
            apply_clean(lake.settings, CleanPlan([], [], LATER))
    finally:
        lake.close()


def test_files_of_running_runs_are_left_alone(lake: Lake):
    running = lake.write(f"users/ana/p/runs/{RUN}/ckpt/w.pt", b"w", days=150)
    lake.write(f"users/ana/p/runs/{OTHER_RUN}/ckpt/w.pt", b"v", days=150)
    plan = lake.plan(running_runs={RUN})
    assert paths(plan) == {f"users/ana/p/runs/{OTHER_RUN}/ckpt/w.pt"}
    assert plan.skipped == [Skipped(f"users/ana/p/runs/{RUN}/ckpt/w.pt", f"run {RUN} is still RUNNING")]

    plan = lake.plan()  # the run started after the plan was made
    assert len(plan.items) == 2
    result = apply_clean(lake.settings, plan, lake.index(), running_runs={RUN})
    assert result.skipped == [Skipped(f"users/ana/p/runs/{RUN}/ckpt/w.pt", f"run {RUN} is still RUNNING")]
    assert [e["path"] for e in result.archived] == [f"users/ana/p/runs/{OTHER_RUN}/ckpt/w.pt"]
    assert read(running) == b"w"


def test_files_holding_credentials_stay_where_the_secrets_rule_sees_them(lake: Lake):
    key = "AKIA" + "Z" * 16  # a fake AWS-style key, built here
    lake.write("users/ana/p/old-notes.txt", f"aws_access_key_id = {key}\n", days=150)
    lake.write("users/ana/p/old-data.csv", "a,b\n1,2\n", days=150)
    plan = lake.plan()
    assert paths(plan) == {"users/ana/p/old-data.csv"}
    assert plan.skipped == [Skipped("users/ana/p/old-notes.txt", CREDENTIAL)]
    assert key not in json.dumps(plan.to_dict())  # the plan names the file, never the key

    quiet = Lake(lake.tmp / "no-secrets", sandbox={**RULES, "secrets": False})
    try:
        quiet.write("users/ana/p/old-notes.txt", f"aws_access_key_id = {key}\n", days=150)
        assert paths(quiet.plan()) == {"users/ana/p/old-notes.txt"}  # the rule is off: cleaned like any file
    finally:
        quiet.close()


def test_one_clean_at_a_time(lake: Lake):
    lake.write("users/ana/p/a.csv", days=150)
    plan = lake.plan()
    lock = lake.settings.state_dir / "locks" / LOCK_NAME
    lock.parent.mkdir(parents=True)
    with open(lock, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        with pytest.raises(CleanupError, match="another sandbox clean or restore is running"):
            apply_clean(lake.settings, plan)
    assert apply_clean(lake.settings, plan).archived


# -- across file systems and interruptions ------------------------------------------------------


def test_across_file_systems_a_verified_copy_replaces_the_move(lake: Lake, monkeypatch):
    monkeypatch.setattr(moves, "_cross_device", lambda device, folder: True)
    lake.write("users/ana/p/a.csv", b"alpha", days=150)
    lake.write("users/ana/p/b.bin", os.urandom(CHUNK * 2 + 7), days=160)
    before = disk(lake.box)
    inodes = {rel: (lake.box / rel).stat().st_ino for rel in before}
    result = lake.clean()
    assert {e["path"] for e in result.archived} == set(before)
    for entry in result.archived:
        archived = lake.archive / entry["archived"]
        assert read(archived) == before[entry["path"]][0]
        assert entry["sha256"] == sha(before[entry["path"]][0])
        assert archived.stat().st_mtime_ns == before[entry["path"]][1]
        assert archived.stat().st_ino != inodes[entry["path"]]  # a copy, not a rename
    assert disk(lake.box) == {}
    assert not list(lake.archive.rglob(".bedrot-clean-*"))
    lake.assert_index_matches_disk()

    outcome = lake.restore(result.manifest)
    assert sorted(outcome.restored) == sorted(before)
    assert disk(lake.box) == before
    assert not list(lake.box.rglob(".bedrot-clean-*"))
    lake.assert_index_matches_disk()


def test_a_rename_that_fails_across_devices_falls_back_to_the_copy(lake: Lake, monkeypatch):
    real_move = moves._move_name
    calls = []

    def exdev_once(*args):
        calls.append(args[:2])
        if len(calls) == 1:
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        return real_move(*args)

    monkeypatch.setattr(moves, "_move_name", exdev_once)
    source = lake.write("users/ana/p/a.csv", b"alpha", days=150)
    inode = source.stat().st_ino
    [entry] = lake.clean().archived
    archived = lake.archive / entry["archived"]
    assert read(archived) == b"alpha" and archived.stat().st_ino != inode
    assert not source.exists()
    assert len(calls) == 2  # the refused rename, then the copy's rename into place


@pytest.mark.parametrize(("cross_device", "reason"), [
    (True, "changed while being copied; left in place"),
    (False, "changed while being read; left in place"),
])
def test_a_file_written_while_it_is_moved_stays(lake: Lake, monkeypatch, cross_device, reason):
    monkeypatch.setattr(moves, "_cross_device", lambda device, folder: cross_device)
    victim = lake.write("users/ana/p/busy.csv", b"first part", days=150)
    real_copy = moves.copy_and_hash_fd

    def copy_then_write(source, target=None):
        digest = real_copy(source, target)
        if os.fstat(source).st_ino == victim.stat().st_ino:
            with victim.open("ab") as handle:
                handle.write(b", second part")
        return digest

    monkeypatch.setattr(moves, "copy_and_hash_fd", copy_then_write)
    result = lake.clean()
    assert result.skipped == [Skipped("users/ana/p/busy.csv", reason)]
    assert (result.archived, result.manifest) == ([], None)
    assert read(victim) == b"first part, second part"
    assert not lake.archive.exists() or not any(p.is_file() for p in lake.archive.rglob("*"))


def test_a_clean_stopped_half_way_leaves_a_manifest_of_what_moved(lake: Lake):
    contents = {f"users/ana/p/{name}.csv": name.encode() * 3 for name in ("a", "b", "c")}
    for rel, data in contents.items():
        lake.write(rel, data, days=150)
    before = disk(lake.box)

    class Killed(Exception):
        pass

    def progress(done: int, nbytes: int) -> None:
        if done == 1:
            raise Killed

    with pytest.raises(Killed):
        apply_clean(lake.settings, lake.plan(), lake.index(), progress=progress)
    [manifest] = lake.manifests()
    _, entries = read_manifest(manifest)
    assert [e["path"] for e in entries] == ["users/ana/p/a.csv"]
    assert set(disk(lake.box)) == {"users/ana/p/b.csv", "users/ana/p/c.csv"}
    assert read(lake.archive / entries[0]["archived"]) == b"aaa"
    lake.assert_index_matches_disk()

    assert lake.restore(manifest).restored == ["users/ana/p/a.csv"]
    assert disk(lake.box) == before
    lake.assert_index_matches_disk()


def test_progress_counts_items_and_their_bytes(lake: Lake):
    lake.write("users/ana/p/a.csv", b"12", days=150)
    lake.write("users/ana/p/b.csv", b"345", days=150)
    seen = []
    apply_clean(lake.settings, lake.plan(), progress=lambda files, nbytes: seen.append((files, nbytes)))
    assert seen == [(1, 2), (2, 5)]


def test_names_that_are_not_utf8_round_trip(lake: Lake):
    name = os.fsdecode(b"caf\xe9 \xff.csv")
    lake.write(f"users/ana/p/{name}", b"bytes", days=150)
    before = disk(lake.box)
    result = lake.clean()
    assert [e["path"] for e in result.archived] == [f"users/ana/p/{name}"]
    assert lake.restore(result.manifest).restored == [f"users/ana/p/{name}"]
    assert disk(lake.box) == before
    lake.assert_index_matches_disk()


def test_a_manifest_line_cut_short_by_a_kill_is_ignored(lake: Lake):
    lake.write("users/ana/p/a.csv", b"alpha", days=150)
    result = lake.clean()
    with result.manifest.open("a") as handle:
        handle.write('{"path": "users/ana/p/b.csv", "archi')
    assert lake.restore(result.manifest).restored == ["users/ana/p/a.csv"]
    with result.manifest.open("a") as handle:
        handle.write("\n{}\n")
    with pytest.raises(CleanupError, match="line 3: not a manifest entry"):
        read_manifest(result.manifest)


def test_a_fifo_is_never_opened(lake: Lake):
    fifo = lake.box / "users/ana/p/pipe"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    os.utime(fifo, (LATER - 150 * DAY, LATER - 150 * DAY))
    plan = lake.plan()
    assert paths(plan) == {"users/ana/p/pipe"}
    result = apply_clean(lake.settings, plan, lake.index())
    assert result.skipped == [Skipped("users/ana/p/pipe", "not a regular file")]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


# -- one set of effective rules ------------------------------------------------------------------


def test_a_plugins_stale_rule_decides_what_check_reports_and_clean_archives(lake: Lake):
    """A plugin replacing the built-in stale rule changes what ``sandbox clean`` plans and
    applies, not only what ``sandbox check`` reports."""
    from bedrot_lab import hookimpl
    from bedrot_lab.plugins import PluginHost
    from bedrot_lab.sandbox.rules import StaleRule, effective_rules, evaluate
    from bedrot_lab.sandbox.settings import GlobSet, StaleSpec

    lake.write("users/ana/p/old.csv", days=150)
    lake.write("users/ana/p/old.parquet", days=150)
    only_csv = StaleRule([StaleSpec("csv", GlobSet(["**.csv"]), 90, "archive", "soft")], GlobSet([]))

    class CsvOnly:
        @hookimpl
        def sandbox_rules(self):
            return [only_csv]

    host = PluginHost()
    host.pm.register(CsvOnly(), name="csv_only")
    rules = effective_rules(lake.settings, host.hook)
    assert rules.named("stale") is only_csv
    reported = evaluate(rules.rules, lake.index(), LATER).violations
    assert {v.rule for v in reported if v.rule.startswith("stale")} == {"stale.csv"}
    plan = plan_clean(lake.settings, lake.index(), now=LATER, rules=rules)
    assert paths(plan) == {"users/ana/p/old.csv"}
    assert paths(lake.plan()) == {"users/ana/p/old.csv", "users/ana/p/old.parquet"}  # the built-in rule
    result = apply_clean(lake.settings, plan, lake.index(), rules=rules)
    assert [e["path"] for e in result.archived] == ["users/ana/p/old.csv"]
