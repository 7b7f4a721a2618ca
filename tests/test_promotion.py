"""Register, promote, roll back: the path from a run's output to the curated zone."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode

import pytest
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient

from bedrot_lab import hookimpl
from bedrot_lab.cli import cli
from bedrot_lab.lab import Lab
from bedrot_lab.promotion import PromotionError, promote, read_lineage, register, rollback
from bedrot_lab.testing import run_experiment

MAKER = """
    import pandas as pd
    from bedrot_lab import experiment, hookimpl

    @experiment("maker", params={"n": 3, "fmt": "parquet", "value": 1.5})
    def maker(ctx):
        frame = pd.DataFrame({"id": range(ctx.params["n"]), "value": [ctx.params["value"]] * ctx.params["n"]})
        ctx.log_output(frame, "table", format=ctx.params["fmt"])

    @hookimpl
    def register_experiments(register):
        register(maker)
"""


@pytest.fixture
def lab(bedrot_lake, write_plugin):
    write_plugin("maker", MAKER)
    return Lab.open(bedrot_lake)


def made(lab, **params):
    result = run_experiment(lab, "maker", **params)
    assert result.status == "FINISHED", result.error
    return result.run_id


def test_register_promote_change_promote_again_and_roll_back(lab, bedrot_lake):
    first = register(lab, made(lab), "table", "demo/table.parquet")
    assert (first["name"], first["version"], first["rows"], first["format"]) == ("curated.demo.table", "1", "3", "parquet")
    client = MlflowClient(lab.settings.tracking_uri)
    assert str(client.get_model_version_by_alias("curated.demo.table", "candidate").version) == "1"

    target = bedrot_lake / "4_curated" / "demo" / "table.parquet"
    promoted = promote(lab, "curated.demo.table")
    assert promoted.status == "promote" and promoted.replaced is None
    v1_bytes = target.read_bytes()
    assert str(client.get_model_version_by_alias("curated.demo.table", "curated").version) == "1"
    assert promote(lab, "curated.demo.table").status == "already current"

    register(lab, made(lab, n=5), "table", "demo/table.parquet")
    second = promote(lab, "curated.demo.table")
    assert second.version == "2" and second.replaced["version"] == "1"
    archived = bedrot_lake / second.replaced["archived_to"]
    assert archived.read_bytes() == v1_bytes and archived.parent.name == "table.parquet"

    back = rollback(lab, "curated.demo.table")
    assert (back.status, back.version) == ("rollback", "1")
    assert target.read_bytes() == v1_bytes
    assert str(client.get_model_version_by_alias("curated.demo.table", "curated").version) == "1"
    history = read_lineage(lab, "demo/table.parquet")
    assert [(e["action"], e["version"]) for e in history] == [("promote", "1"), ("promote", "2"), ("rollback", "1")]
    assert history[1]["experiment"] == "maker" and history[1]["params"]["n"] == "5"
    tags = client.get_model_version("curated.demo.table", "1").tags
    assert tags["promoted_by"] == "tester" and tags["promoted_at"]
    lineage_on_disk = json.loads((bedrot_lake / "4_curated" / "_lineage" / "demo" / "table.parquet.json").read_text())
    assert len(lineage_on_disk["history"]) == 3


def test_plugins_can_veto_and_hear_about_promotions(lab):
    heard = []

    class Gatekeeper:
        @hookimpl
        def validate_promotion(self, name, version, curated_path, path, tags):
            return [f"too small: {tags['rows']} rows"] if int(tags["rows"]) < 4 else []

        @hookimpl
        def after_promotion(self, result, lab):
            heard.append((result.name, result.version, result.status))

    lab.plugins.pm.register(Gatekeeper(), name="gatekeeper")
    try:
        register(lab, made(lab), "table", "demo/table.parquet")
        with pytest.raises(PromotionError) as refused:
            promote(lab, "curated.demo.table")
        assert refused.value.problems == ["veto: too small: 3 rows"]
        assert not (lab.settings.zone("curated") / "demo" / "table.parquet").exists()
        register(lab, made(lab, n=4), "table", "demo/table.parquet")
        promote(lab, "curated.demo.table")
    finally:
        lab.plugins.pm.unregister(name="gatekeeper")
    assert heard == [("curated.demo.table", "2", "promote")]


def test_run_register_registers_when_the_run_finishes(lab, cli_env):
    from conftest import bedrot

    done = bedrot("run", "maker", "-P", "n=4", "--register", "table=demo/table.parquet", "--json", env=cli_env)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["registered"][0]["name"] == "curated.demo.table" and record["registered"][0]["rows"] == "4"
    refused = bedrot("run", "maker", "--register", "table=../outside.parquet", env=cli_env)
    assert refused.returncode == 1 and "may not contain '..'" in refused.stderr
    assert "running maker" not in refused.stderr  # refused before any run was created


# -- what the registry says ----------------------------------------------------------


def described(lab, version, name="curated.demo.table"):
    return MlflowClient(lab.settings.tracking_uri).get_model_version(name, version).description


def on(entry):
    """A lineage entry's moment as the descriptions write it."""
    return datetime.fromisoformat(entry["promoted_at"]).strftime("%Y-%m-%d %H:%M UTC")


def test_each_version_describes_its_file_source_run_and_fate_in_the_registry(lab):
    client = MlflowClient(lab.settings.tracking_uri)
    first_run = made(lab)
    sha256 = register(lab, first_run, "table", "demo/table.parquet")["sha256"]
    first = described(lab, "1")
    lines = first.splitlines()
    assert lines[0] == f"Data set for `4_curated/demo/table.parquet`: 3 rows, sha256 `{sha256[:12]}`"
    assert lines[1] == "" and all(line.startswith("- **") for line in lines[2:])  # a paragraph, then a list
    assert "- **Status:** registered, not promoted" in lines
    run_name = client.get_run(first_run).info.run_name
    assert f"- **Source run:** `{run_name}` in experiment `maker` (run id `{first_run}`), output `table`" in lines
    assert re.fullmatch(r"- \*\*Registered:\*\* \d{4}-\d\d-\d\d \d\d:\d\d UTC by tester", lines[4])

    promote(lab, "curated.demo.table")
    history = read_lineage(lab, "demo/table.parquet")
    first = described(lab, "1").splitlines()
    assert f"- **Status:** in the curated zone since {on(history[0])} (alias `curated`)" in first
    assert first[-1] == f"- **Promoted:** {on(history[0])} by tester"

    register(lab, made(lab, n=12_345), "table", "demo/table.parquet")
    assert described(lab, "2").splitlines()[0].startswith("Data set for `4_curated/demo/table.parquet`: 12,345 rows")
    promote(lab, "curated.demo.table")
    history = read_lineage(lab, "demo/table.parquet")
    first = described(lab, "1").splitlines()
    assert f"- **Status:** superseded by version 2 on {on(history[1])}" in first
    assert first[-2:] == [f"- **Promoted:** {on(history[0])} by tester",
                          f"- **Superseded:** by version 2 on {on(history[1])}"]

    rollback(lab, "curated.demo.table")
    history = read_lineage(lab, "demo/table.parquet")
    second = described(lab, "2").splitlines()
    assert (f"- **Status:** rolled back on {on(history[2])} by tester; version 1 was put back in its place"
            in second)
    first = described(lab, "1").splitlines()
    assert f"- **Status:** in the curated zone since {on(history[2])} (alias `curated`)" in first
    assert first[-1] == f"- **Put back:** by a rollback on {on(history[2])} by tester"
    model = client.get_registered_model("curated.demo.table").description
    assert "`4_curated/demo/table.parquet`" in model and "*Promote model* button is not that" in model


def test_the_description_names_the_lakes_own_curated_folder(lab, bedrot_env):
    bedrot_env.setenv("CURATED_ZONE", "gold")
    gold, lake = Lab.open(lab.settings.root), str(lab.settings.root)
    registered = CliRunner().invoke(cli, ["--lake", lake, "register", made(gold), "table", "--as", "demo/table.parquet"])
    assert registered.exit_code == 0, registered.output
    assert "for gold/demo/table.parquet; alias candidate -> v1" in registered.stdout
    promoted = CliRunner().invoke(cli, ["--lake", lake, "promote", "curated.demo.table"])
    assert promoted.stdout.strip() == "promoted curated.demo.table v1 -> gold/demo/table.parquet"
    assert (lab.settings.root / "gold" / "demo" / "table.parquet").is_file()
    assert described(gold, "1").startswith("Data set for `gold/demo/table.parquet`: 3 rows")


def test_a_version_carries_its_schema_where_mlflow_shows_it(lab, bedrot_lake):
    contract = bedrot_lake / "4_curated" / "_contracts" / "demo" / "table.parquet.toml"
    contract.parent.mkdir(parents=True)
    contract.write_text('not_null = ["id"]\n')
    run_id = made(lab)
    version = register(lab, run_id, "table", "demo/table.parquet")
    client = MlflowClient(lab.settings.tracking_uri)
    run = client.get_run(run_id)
    assert version["source"] == f"{run.info.artifact_uri}/registered/table"

    # what the registry page fetches: MLmodel at the version's storage location, its signature as JSON text
    folder = client.download_artifacts(run_id, "registered/table", str(bedrot_lake / "downloaded"))
    mlmodel = yaml.safe_load((Path(folder) / "MLmodel").read_text())
    assert json.loads(mlmodel["signature"]["outputs"]) == [
        {"type": "long", "name": "id", "required": True},
        {"type": "double", "name": "value", "required": False},
    ]
    assert mlmodel["signature"]["inputs"] is None and list(mlmodel["flavors"]) == ["bedrot_data_set"]
    data = (Path(folder) / "table.parquet").read_bytes()
    assert hashlib.sha256(data).hexdigest() == version["sha256"]
    assert version["artifact"] == "registered/table/table.parquet"

    from mlflow.models import Model

    assert [c.name for c in Model.load(folder).signature.outputs.inputs] == ["id", "value"]
    assert promote(lab, "curated.demo.table").status == "promote"
    assert (bedrot_lake / "4_curated" / "demo" / "table.parquet").read_bytes() == data


@contextlib.contextmanager
def mlflow_server(backend_store_uri, *options):
    """A real ``mlflow server`` on a free local port, as ``bedrot-lab ui`` starts it; yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri,
                               *options, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:  # waiting for the server to listen, not timing it
            try:
                urllib.request.urlopen(f"{url}/health", timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=60)


def schema_shown(url, name, version):
    """The columns MLflow's version page shows: MLmodel fetched and parsed as the UI does."""
    query = urlencode({"path": "MLmodel", "name": name, "version": version})
    mlmodel = yaml.safe_load(urllib.request.urlopen(f"{url}/model-versions/get-artifact?{query}").read())
    return [(c["name"], c["type"]) for c in json.loads(mlmodel["signature"]["outputs"].replace("\n", ""))]


def test_the_mlflow_server_serves_the_schema_and_description_to_its_ui(lab, bedrot_lake):
    register(lab, made(lab), "table", "demo/table.parquet")
    promote(lab, "curated.demo.table")
    with mlflow_server(lab.settings.tracking_uri, "--default-artifact-root",
                       str(bedrot_lake / "mlruns" / "artifacts")) as url:
        assert schema_shown(url, "curated.demo.table", "1") == [("id", "long"), ("value", "double")]
        query = urlencode({"name": "curated.demo.table", "version": "1"})
        page = json.loads(urllib.request.urlopen(f"{url}/ajax-api/2.0/mlflow/model-versions/get?{query}").read())
    assert page["model_version"]["description"] == described(lab, "1")
    assert "in the curated zone since" in page["model_version"]["description"]


def test_register_and_promote_through_a_server_that_holds_the_artifacts(lab, bedrot_lake, bedrot_env,
                                                                        bedrot_store_template, tmp_path):
    """Artifacts the lake cannot read as local files: the registered folder is uploaded, the promotion downloads."""
    database, served = tmp_path / "server.db", tmp_path / "served"
    shutil.copy(bedrot_store_template, database)
    with mlflow_server(f"sqlite:///{database}", "--artifacts-destination", str(served)) as url:
        bedrot_env.setenv("MLFLOW_TRACKING_URI", url)
        remote = Lab.open(bedrot_lake)
        run_id = made(remote)
        version = register(remote, run_id, "table", "demo/table.parquet")
        assert version["source"].startswith("mlflow-artifacts:/")
        assert version["source"].endswith(f"/{run_id}/artifacts/registered/table")
        [folder] = served.rglob(f"{run_id}/artifacts/registered/table")
        assert sorted(p.name for p in folder.iterdir()) == ["MLmodel", "table.parquet"]
        assert hashlib.sha256((folder / "table.parquet").read_bytes()).hexdigest() == version["sha256"]
        assert schema_shown(url, "curated.demo.table", "1") == [("id", "long"), ("value", "double")]
        assert promote(remote, "curated.demo.table").status == "promote"
        promoted = (bedrot_lake / "4_curated" / "demo" / "table.parquet").read_bytes()
        assert hashlib.sha256(promoted).hexdigest() == version["sha256"]
        assert "in the curated zone since" in described(remote, "1")


def test_a_copy_made_by_mlflows_promote_model_button_is_not_promoted(lab, bedrot_lake):
    register(lab, made(lab), "table", "demo/table.parquet")
    client = MlflowClient(lab.settings.tracking_uri)
    copy = client.copy_model_version("models:/curated.demo.table/1", "curated.demo.copy")  # what the button does
    assert copy.tags["curated_path"] == "demo/table.parquet"
    with pytest.raises(PromotionError) as refused:
        promote(lab, "curated.demo.copy", version=str(copy.version))
    assert str(refused.value).endswith("promote the original: bedrot-lab promote curated.demo.table --version 1")
    assert not (bedrot_lake / "4_curated" / "demo").exists()


def test_a_version_whose_source_is_the_bare_output_file_still_promotes(lab, bedrot_lake):
    """Versions registered before the registered/<output>/ folders point at the file itself."""
    run_id = made(lab)
    tags = {k: v for k, v in register(lab, run_id, "table", "demo/table.parquet").items()
            if k not in ("name", "version", "run_id", "source", "artifact")}
    [artifacts] = bedrot_lake.glob(f"mlruns/artifacts/*/{run_id}/artifacts")
    shutil.rmtree(artifacts / "registered")
    client = MlflowClient(lab.settings.tracking_uri)
    old = client.create_model_version("curated.demo.table", f"runs:/{run_id}/outputs/table.parquet", run_id=run_id,
                                      tags=tags)
    assert promote(lab, "curated.demo.table", version=str(old.version)).status == "promote"
    promoted = (bedrot_lake / "4_curated" / "demo" / "table.parquet").read_bytes()
    assert promoted == (artifacts / "outputs" / "table.parquet").read_bytes()
    assert "in the curated zone since" in described(lab, str(old.version))
