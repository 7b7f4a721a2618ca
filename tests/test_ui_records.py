"""What the lab records for the MLflow UI, read back from a real store: experiments of the
classic kind with their plugin's description and a headline view, no empty ``Default``, runs
named after their params, bookkeeping tags under one prefix, data set inputs with a profile."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import bedrot_forked as bedrot  # what the commands do, not how they start
from mlflow import MlflowClient
from mlflow.entities import ViewType

from bedrot_lab import context, tracking
from bedrot_lab.config import settings_from
from bedrot_lab.lab import Lab
from bedrot_lab.runner import prepare, run
from bedrot_lab.testing import make_lake, read_run, run_experiment

PLUGIN = """
    from bedrot_lab import Dataset, Param, experiment, hookimpl
    __version__ = "1.2"

    @experiment("tally", datasets=["tracks"], headline=["tracks", "share"], params={
        "k": Param(int, 3, "clusters"), "rate": Param(float, 0.5), "api_token": Param(str, "none")})
    def tally(ctx):
        '''SUMMARY

        Counts the tracks of the catalog, three ways.'''
        ctx.log_metric("tracks", len(ctx.load("tracks")))
        ctx.log_metric("share", 0.5)

    @experiment("queried", datasets=["tracks", "plays"])
    def queried(ctx):
        '''Reads its data sets through SQL and by path.'''
        ctx.sql("SELECT count(*) FROM tracks")
        ctx.dataset_path("plays")

    @hookimpl
    def register_datasets(register):
        register(Dataset("tracks", "tracks.csv", columns={"artist": "string", "streams": "int"}))
        register(Dataset("plays", "plays.parquet", columns={"artist": "string", "plays": "int"}))

    @hookimpl
    def register_experiments(register):
        register(tally)
        register(queried)
"""

TRACKS = "artist,streams\nNOVA VANTA,10\nGLASS ORCHID,20\n\"QUOTED, ARTIST\",30\n"


@pytest.fixture
def lab(bedrot_lake, write_plugin):
    write_plugin("tally", PLUGIN.replace("SUMMARY", "Count the catalog's tracks."))
    (bedrot_lake / "4_curated" / "tracks.csv").write_text(TRACKS)
    pd.DataFrame({"artist": ["A", "B", "C", "D"], "plays": [1, 2, 3, 4]}).to_parquet(
        bedrot_lake / "4_curated" / "plays.parquet")
    return Lab.open(bedrot_lake)


def experiment_tags(lab: Lab, name: str) -> dict[str, str]:
    return MlflowClient(lab.settings.tracking_uri).get_experiment_by_name(name).tags


# -- experiments ---------------------------------------------------------------------------------


def test_an_experiment_opens_in_the_classic_view_described_by_its_plugin_with_its_headline(lab):
    assert run_experiment(lab, "tally").status == "FINISHED"
    tags = experiment_tags(lab, "tally")
    assert tags[tracking.KIND_TAG] == "custom_model_development"
    assert tags["mlflow.note.content"] == "Count the catalog's tracks.\n\nCounts the tracks of the catalog, three ways."
    view = json.loads(tags["mlflow.sharedViewState.headline"])  # a view saved as the UI saves one
    assert view["name"] == "Headline metrics" and isinstance(view["createdAt"], int)
    columns = ["attributes.`Dataset`", "metrics.`tracks`", "metrics.`share`"]
    assert json.loads(view["state"]) == {"selectedColumns": columns, "columnOrder": columns}
    assert not [key for key in tags if not key.startswith("mlflow.")]  # the experiments list shows no others


def test_the_description_follows_the_plugin_and_a_kind_chosen_in_the_ui_stays(lab, bedrot_lake, write_plugin):
    run_experiment(lab, "tally")
    client = MlflowClient(lab.settings.tracking_uri)
    experiment = client.get_experiment_by_name("tally").experiment_id
    client.set_experiment_tag(experiment, tracking.KIND_TAG, "genai_development")  # a person's choice
    write_plugin("tally", PLUGIN.replace("SUMMARY", "Count the tracks, now by artist."))
    run_experiment(Lab.open(bedrot_lake), "tally")
    tags = experiment_tags(lab, "tally")
    assert tags["mlflow.note.content"].startswith("Count the tracks, now by artist.\n\n")
    assert tags[tracking.KIND_TAG] == "genai_development"


def test_an_experiment_made_before_the_kind_tag_gets_it_on_first_use(lab):
    client = MlflowClient(lab.settings.tracking_uri)
    client.create_experiment("tally")
    assert tracking.KIND_TAG not in experiment_tags(lab, "tally")
    run_experiment(lab, "tally")
    assert experiment_tags(lab, "tally")[tracking.KIND_TAG] == "custom_model_development"


def test_the_empty_default_experiment_is_deleted_and_one_holding_runs_is_kept(tmp_path, bedrot_env):
    settings = settings_from(make_lake(tmp_path / "lake"), {}, None, env={})
    client = tracking.open_store(settings)
    assert client.get_experiment("0").lifecycle_stage == "deleted"
    assert "0" not in [e.experiment_id for e in client.search_experiments()]

    client.restore_experiment("0")
    client.create_run("0")
    tracking.open_store(settings)
    assert client.get_experiment("0").lifecycle_stage == "active"


def test_a_purged_default_experiment_made_again_by_mlflow_is_deleted_again(lab, cli_env):
    client = MlflowClient(lab.settings.tracking_uri)
    assert client.get_experiment("0").lifecycle_stage == "deleted"
    client._tracking_client.store._hard_delete_experiment("0")  # what `mlflow gc` does to it
    with pytest.raises(Exception, match="No Experiment with id=0"):
        client.get_experiment("0")

    listed = bedrot("runs", "list", "--json", env=cli_env)  # a new process: MLflow's store makes it again
    assert listed.returncode == 0, listed.stderr
    assert client.get_experiment("0").lifecycle_stage == "deleted"
    assert "0" not in [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]


# -- runs ----------------------------------------------------------------------------------------


def test_a_run_without_a_name_is_named_after_its_experiment_and_the_params_that_differ(lab):
    def name_of(**params) -> str:
        return read_run(run_experiment(lab, "tally", **params).run_id, lab).info.run_name

    assert name_of() == "tally"
    assert name_of(k=5) == "tally k=5"
    assert name_of(k=3, rate=0.25) == "tally rate=0.25"
    fake = "ghp_" + "Q" * 36
    named = name_of(api_token=fake)
    assert fake not in named and named.startswith("tally api_token=")

    named_by_hand = run(lab, prepare(lab, "tally", {"k": "5"}, run_name="my own"))
    assert read_run(named_by_hand.run_id, lab).info.run_name == "my own"


def test_bookkeeping_tags_are_under_one_internal_prefix(lab):
    fake = "ghp_" + "Q" * 36
    tags = read_run(run_experiment(lab, "tally", api_token=fake).run_id, lab).data.tags
    shown = {key for key in tags if key.startswith("bedrot.") and not key.startswith(tracking.INTERNAL)}
    assert shown == {"bedrot.user", "bedrot.plugin", "bedrot.plugin_version", "bedrot.experiment"}
    internal = {key.removeprefix(tracking.INTERNAL) for key in tags if key.startswith(tracking.INTERNAL)}
    assert {"pid", "host", "heartbeat", "lake", "plugin_source", "masked"} <= internal
    assert "api_token" in tags[tracking.MASKED_TAG]
    assert tags["mlflow.user"] == tags["bedrot.user"] == "tester" and tags["bedrot.plugin_version"] == "1.2"


def test_internal_tags_are_read_under_their_names_from_before_the_prefix():
    assert tracking.internal_tag({"bedrot.internal.pid": "12"}, "pid") == "12"
    assert tracking.internal_tag({"bedrot.pid": "34"}, "pid") == "34"
    assert tracking.internal_tag({"bedrot.internal.pid": "12", "bedrot.pid": "34"}, "pid") == "12"
    assert tracking.internal_tag({}, "pid") is None


# -- inputs --------------------------------------------------------------------------------------


def profiles(lab: Lab, run_id: str) -> dict[str, dict]:
    inputs = read_run(run_id, lab).inputs.dataset_inputs
    return {item.dataset.name: json.loads(item.dataset.profile) for item in inputs}


def test_a_data_set_input_has_rows_bytes_and_the_full_sha256_in_its_profile(lab, bedrot_lake):
    import hashlib

    tracks = bedrot_lake / "4_curated" / "tracks.csv"
    plays = bedrot_lake / "4_curated" / "plays.parquet"
    loaded = profiles(lab, run_experiment(lab, "tally").run_id)
    assert loaded == {"tracks": {"rows": 3, "bytes": tracks.stat().st_size,
                                 "sha256": hashlib.sha256(tracks.read_bytes()).hexdigest()}}

    queried = profiles(lab, run_experiment(lab, "queried").run_id)
    assert queried["tracks"]["rows"] == 3  # counted by the query engine
    assert queried["plays"] == {"rows": 4, "bytes": plays.stat().st_size,  # from the Parquet footer
                                "sha256": hashlib.sha256(plays.read_bytes()).hexdigest()}


def test_a_large_csv_read_by_sql_has_bytes_and_sha256_but_its_rows_are_not_counted(lab, bedrot_lake,
                                                                                    monkeypatch):
    tracks = bedrot_lake / "4_curated" / "tracks.csv"
    monkeypatch.setattr(context, "ROWS_COUNTED_UP_TO", tracks.stat().st_size - 1)
    profile = profiles(lab, run_experiment(lab, "queried").run_id)["tracks"]
    assert profile["bytes"] == tracks.stat().st_size and len(profile["sha256"]) == 64
    assert profile["rows"].startswith("not counted")
