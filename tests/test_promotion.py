"""Register, promote, roll back: the path from a run's output to the curated zone."""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from bedrot_lab import hookimpl
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
