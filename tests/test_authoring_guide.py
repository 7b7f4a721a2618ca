"""docs/authoring.md cannot drift: every ``$ `` command of its ```console blocks runs, in order, in a
temporary home folder, and prints what the guide shows (run ids, times and the home folder normalised).

``python tests/test_authoring_guide.py --write`` runs the commands and writes their output into the guide.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "authoring.md"
#: the home folder the guide shows
GUIDE_HOME = "/home/ana"
RUN_ID = re.compile(r"\b[0-9a-f]{32}\b")
#: what changes from one run of the guide to the next, and how it is written when compared
VOLATILE = [
    (re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d(?::\d\d)?(?:\+00:00)?"), "<time>"),
    (re.compile(r"\b\d{8}T\d{6,12}Z\b"), "<timestamp>"),
    (re.compile(r"\b\d+(?:\.\d+)?s\b"), "<seconds>s"),
    (re.compile(r"^(\s*run\.(?:cpu_seconds|peak_rss_mb|wall_seconds)\s+)\S+$", re.M), r"\1<n>"),
]


@dataclass
class Step:
    """One command of the guide and the output it shows."""

    command: str
    expected: str
    block: int  # which console block
    line: int  # the command's line in the guide


def steps(text: str) -> list[Step]:
    """The ``$ `` commands of every ```console block of ``text``, each with the lines up to the next."""
    found: list[Step] = []
    block = 0
    inside = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            inside = line.strip() == "```console"
            block += inside
        elif inside and line.startswith("$ "):
            found.append(Step(line[2:], "", block, number))
        elif inside and found and found[-1].block == block:
            found[-1].expected += line + "\n"
    return found


def normalised(text: str) -> str:
    for pattern, replacement in VOLATILE:
        text = pattern.sub(replacement, text)
    return text


class Walkthrough:
    """Runs the guide's commands one after another, as a shell would, in ``home``."""

    def __init__(self, home: Path):
        self.home = home
        self.cwd = home
        self.ids: dict[str, str] = {}  # the guide's run id -> this walk-through's
        self.env = {key: value for key, value in os.environ.items()
                    if not key.startswith(("BEDROT_", "MLFLOW_")) and key not in {"PYTHONPATH"}}
        self.env.update(HOME=str(home), BEDROT_USER="ana", COLUMNS="100", MLFLOW_DISABLE_TELEMETRY="true",
                        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")

    def run(self, step: Step) -> tuple[int, str]:
        """Run ``step``'s command; its exit code and its output as the guide would show it (stdout,
        or stderr for a command the guide shows failing with ``Error:``)."""
        command = step.command
        for guide_id, real_id in self.ids.items():
            command = command.replace(guide_id, real_id).replace(guide_id[:8], real_id[:8])
        if command.startswith("cd "):
            self.cwd = Path(os.path.expanduser(shlex.split(command)[1].replace("~", str(self.home), 1)))
            return 0, ""
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=self.cwd, env=self.env,
                              timeout=300, check=False)
        output = done.stderr if step.expected.startswith("Error:") else done.stdout
        for guide_id, real_id in zip(RUN_ID.findall(step.expected), RUN_ID.findall(output)):
            self.ids.setdefault(guide_id, real_id)
        for guide_id, real_id in self.ids.items():
            output = output.replace(real_id, guide_id).replace(real_id[:8], guide_id[:8])
        output = output.replace(str(self.home), GUIDE_HOME)
        if done.returncode != 0 and not step.expected.startswith("Error:"):
            output += f"[exit code {done.returncode}]\n{done.stderr}"
        return done.returncode, output


def test_the_guide_has_the_whole_path():
    commands = [step.command.split("#")[0].strip() for step in steps(GUIDE.read_text())]
    for needed in ("bedrot-lab init --sample", "bedrot-lab new-plugin", "bedrot-lab plugins check", "bedrot-lab run",
                   "bedrot-lab runs show", "bedrot-lab register", "bedrot-lab promote"):
        assert any(command.startswith(needed) for command in commands), needed


def test_only_times_and_the_runner_s_own_measures_are_normalised():
    guide = steps("```console\n$ bedrot-lab runs show 2ad91da7\nstarted     2026-11-30 08:09:08, took 12.4s\n"
                  "  run.wall_seconds   12.38\n  countries          26\n```\n")
    assert [(step.command, step.block, step.line) for step in guide] == [("bedrot-lab runs show 2ad91da7", 1, 2)]
    later = guide[0].expected.replace("08:09:08", "09:10:11").replace("12.4s", "3.0s").replace("12.38", "3.1")
    assert normalised(later) == normalised(guide[0].expected)
    assert normalised(later.replace("26", "27")) != normalised(guide[0].expected)


def test_every_command_of_the_guide_prints_what_the_guide_shows(tmp_path):
    walk = Walkthrough(tmp_path)
    for step in steps(GUIDE.read_text()):
        code, output = walk.run(step)
        assert normalised(output) == normalised(step.expected), (
            f"docs/authoring.md:{step.line}: `{step.command}` printed something else "
            f"(python tests/test_authoring_guide.py --write updates the guide)")
        assert (code != 0) == step.expected.startswith("Error:"), f"docs/authoring.md:{step.line}: exit code {code}"


def write(home: Path) -> None:
    """Run the guide's commands in ``home`` and put their output under them in the guide."""
    lines = GUIDE.read_text().splitlines(keepends=True)
    walk = Walkthrough(home)
    outputs = {step.line: walk.run(step)[1] for step in steps("".join(lines))}
    rewritten: list[str] = []
    skipping = False
    for number, line in enumerate(lines, 1):
        if skipping and (line.startswith("$ ") or line.startswith("```")):
            skipping = False
        if skipping:
            continue
        rewritten.append(line)
        if number in outputs:
            rewritten.append(outputs[number])
            skipping = True
    GUIDE.write_text("".join(rewritten))


if __name__ == "__main__":
    import tempfile

    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_authoring_guide.py --write")
    with tempfile.TemporaryDirectory() as folder:
        write(Path(folder))
