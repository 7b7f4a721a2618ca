"""Screenshots of the MLflow UI on a sample lake, for docs/mlflow-ui.md.

    .venv/bin/python docs/tools/screenshots.py OUT_DIR [--port 5077] [--keep]

Makes a sample lake in a temporary folder (``bedrot-lab init --sample``), records a few runs
in it (a run with a param changed, the artist-clustering sweep, and an ETL run whose output is
registered), starts ``bedrot-lab ui`` on it and has headless Chromium take screenshots of the
experiments list, a runs table in its headline view, one run, its artifacts, the data set
drawer, the sweep's parent run and a registered model version. The PNG files go to OUT_DIR,
which must be outside the repository. ``--keep`` leaves the temporary lake in place.

Chromium is driven through its DevTools protocol over a pipe (``--remote-debugging-pipe``),
so that the browser can first be set up as an analyst would leave it: the "Model training"
view chosen and the assistant panel closed (both are remembered per browser, in local storage).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BEDROT_LAB = [sys.executable, "-m", "bedrot_lab"]
#: what the MLflow UI keeps in local storage: the "Model training" view, the assistant panel closed
BROWSER_SETTINGS = {
    "mlflow.workflowType_v1": "machine_learning",
    "mlflow.assistant.panelOpen_v1": False,
    "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1": True,
}
WIDTH, HEIGHT = 1400, 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the PNG files (outside the repository)")
    parser.add_argument("--port", type=int, default=5077, help="port of the MLflow UI")
    parser.add_argument("--keep", action="store_true", help="keep the temporary lake")
    args = parser.parse_args()
    out = args.out.resolve()
    if out == REPO or REPO in out.parents:
        parser.error(f"{out} is inside the repository; give a folder elsewhere (e.g. /tmp/screenshots)")
    out.mkdir(parents=True, exist_ok=True)

    folder = Path(tempfile.mkdtemp(prefix="bedrot-screenshots-"))
    lake = folder / "lake"
    try:
        runs = make_sample_lake(lake)
        with ui(lake, args.port) as base, Chromium() as browser:
            browser.open(base + "/#/experiments")
            browser.set_local_storage(BROWSER_SETTINGS)
            for name, (path, ready, click) in pages(runs).items():
                browser.open(base + path)
                browser.wait_for_text(ready)
                if click:
                    browser.click(click)
                (out / f"{name}.png").write_bytes(browser.screenshot())
                print(f"wrote {out / name}.png")
    finally:
        if args.keep:
            print(f"lake kept at {lake}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


def bedrot_lab(lake: Path, *args: str) -> str:
    """Run ``bedrot-lab --lake LAKE ARGS`` and return what it printed; stop at a failure."""
    done = subprocess.run([*BEDROT_LAB, "--lake", str(lake), *args], capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"bedrot-lab {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def run_json(lake: Path, *args: str) -> dict:
    return json.loads(bedrot_lab(lake, "run", *args, "--json"))


def make_sample_lake(lake: Path) -> dict[str, str]:
    """A sample lake with a few runs; the ids of the runs and experiments the screenshots show."""
    subprocess.run([*BEDROT_LAB, "init", "--sample", str(lake)], capture_output=True, check=True)
    print(f"sample lake at {lake}; recording runs ...")
    run_json(lake, "revenue-per-stream")
    one = run_json(lake, "artist-clustering", "-P", "n_clusters=5")
    sweep = run_json(lake, "experiments/artist-clustering-sweep.toml")
    run_json(lake, "distrokid-staging2curated", "--register", "tidy_daily_streams=tidy_daily_streams.csv")
    from bedrot_lab.lab import Lab

    experiment = Lab.open(lake).store.client.get_run(one["run_id"]).info.experiment_id
    return {"run": one["run_id"], "sweep": sweep["run_id"], "experiment": experiment}


def pages(runs: dict[str, str]) -> dict[str, tuple[str, str, str]]:
    """Screenshot name -> (path of the page, a text shown once it is drawn, a text to click then)."""
    experiment, run, sweep = runs["experiment"], runs["run"], runs["sweep"]
    return {
        "1-experiments": ("/#/experiments", "artist-clustering", ""),
        "2-runs-headline-view": (f"/#/experiments/{experiment}/runs?viewStateShareKey=headline",
                                 "silhouette_score", ""),
        "3-run": (f"/#/experiments/{experiment}/runs/{run}", "Parameters", ""),
        "4-run-artifacts": (f"/#/experiments/{experiment}/runs/{run}/artifacts", "report.md", "report.md"),
        "5-run-dataset-profile": (f"/#/experiments/{experiment}/runs/{run}", "dk_bank_details", "dk_bank_details"),
        "6-sweep-parent": (f"/#/experiments/{experiment}/runs/{sweep}", "choosing k", ""),
        "7-registered-version": ("/#/models/curated.tidy_daily_streams/versions/1", "Version 1", ""),
    }


class ui:
    """``bedrot-lab ui`` on ``lake`` for the block; its base URL once it answers."""

    def __init__(self, lake: Path, port: int):
        self.lake, self.port = lake, port

    def __enter__(self) -> str:
        self.process = subprocess.Popen([*BEDROT_LAB, "--lake", str(self.lake), "ui", "--port", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"bedrot-lab ui exited ({self.process.returncode}); is port {self.port} free?")
            try:
                with urllib.request.urlopen(base + "/health", timeout=2):
                    return base
            except OSError:
                time.sleep(1)
        sys.exit("the MLflow UI did not answer within 90 s")

    def __exit__(self, *exc: object) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)  # the server and the workers it started
        self.process.wait(timeout=30)


class Chromium:
    """Headless Chromium, one page, driven through the DevTools protocol over a pipe: Chromium
    reads commands (JSON, each ended by a NUL byte) on its fd 3 and answers on fd 4."""

    def __init__(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="bedrot-chromium-")
        self.next_id = 0
        self.session = ""
        self.buffer = b""

    def __enter__(self) -> Chromium:
        to_chrome, self.commands = os.pipe()
        self.answers, from_chrome = os.pipe()

        def pipe_fds() -> None:
            # copies first: an end that is already fd 3 or 4 is copied before it is overwritten
            read, write = os.dup(to_chrome), os.dup(from_chrome)
            os.dup2(read, 3)
            os.dup2(write, 4)

        self.process = subprocess.Popen(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             f"--user-data-dir={self.profile}", f"--window-size={WIDTH},{HEIGHT}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=False, preexec_fn=pipe_fds)
        os.close(to_chrome)
        os.close(from_chrome)
        page = next(t for t in self.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        self.send("Page.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False)
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        os.close(self.commands)
        os.close(self.answers)
        shutil.rmtree(self.profile, ignore_errors=True)

    def send(self, method: str, **params: object) -> dict:
        """Call ``method`` and return its result (events that arrive meanwhile are dropped)."""
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self.buffer:
                chunk = os.read(self.answers, 1 << 20)
                if not chunk:
                    sys.exit("Chromium closed its DevTools pipe")
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\0", 1)
            answer = json.loads(line)
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def run(self, script: str) -> object:
        return self.send("Runtime.evaluate", expression=script, returnByValue=True).get("result", {}).get("value")

    def open(self, url: str) -> None:
        """Load ``url`` afresh (a blank page first: within the UI, a new hash is not a new page)."""
        self.send("Page.navigate", url="about:blank")
        self.send("Page.navigate", url=url)

    def set_local_storage(self, values: dict[str, object]) -> None:
        self.run("; ".join(f"localStorage.setItem({json.dumps(k)}, {json.dumps(json.dumps(v))})"
                           for k, v in values.items()))

    def wait_for_text(self, text: str, seconds: float = 30) -> None:
        """Wait until the page shows ``text`` (then a moment more, for what loads after it)."""
        deadline = time.monotonic() + seconds
        while not self.run(f"document.body && document.body.innerText.includes({json.dumps(text)})"):
            if time.monotonic() > deadline:
                print(f"  (the page did not show {text!r} within {seconds:g} s)")
                break
            time.sleep(0.5)
        time.sleep(2)

    def click(self, text: str) -> None:
        """Click the innermost element whose text starts with ``text``, as a mouse would."""
        where = self.run(f"""(() => {{
            const found = [...document.querySelectorAll('body *')].filter(e =>
                e.textContent.trim().startsWith({json.dumps(text)}) && e.getClientRects().length).pop();
            if (!found) return null;
            const box = found.getBoundingClientRect();
            return [box.x + box.width / 2, box.y + box.height / 2];
        }})()""")
        if not where:
            print(f"  (nothing to click shows {text!r})")
            return
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=where[0], y=where[1], button="left", clickCount=1)
        time.sleep(2)

    def screenshot(self) -> bytes:
        return base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])


if __name__ == "__main__":
    sys.exit(main())
