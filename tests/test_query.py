"""Queries over the catalog (``ctx.aggregate``, ``ctx.sql``) with DuckDB: the sums of a plain read on
every valid file, the errors of ``ctx.load`` on every bad one, memory bounded, inputs recorded."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from csv_files import (
    DK_BANK,
    aggregate,
    assert_same_sums,
    engine_for,
    frame_sums,
    line_of,
    plain_sums,
    statement_rows,
    write_statement,
)

from bedrot_lab import lake
from bedrot_lab.lake import Dataset, DatasetError
from bedrot_lab.query import QueryError

STATEMENT = Dataset("statement", "s.csv", columns={
    "Sale Month": "month", "Store": "string", "Title": "string", "Quantity": "int", "Earnings (USD)": "float"})


def write(path, rows):
    path.write_text("Sale Month,Store,Title,Quantity,Earnings (USD)\n" + "".join(rows))
    return path


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_sums_match_a_hand_count_whatever_the_split(tmp_path, threads):
    rows = ["2025-01,Spotify,A,10,1.0\n", "2025-01,Spotify,A,5,0.5\n", "2025-02,Apple Music,A,1,0.25\n",
            "2025-01,Spotify,B,2,0.125\n", "2025-02,Spotify,B,3,0.375\n"] * 40
    path = write(tmp_path / "s.csv", rows)
    result = aggregate(STATEMENT, path, ["Sale Month", "Store", "Title"], ["Quantity", "Earnings (USD)"],
                           threads=threads)
    result = result.sort_values(["Title", "Sale Month", "Store"], ignore_index=True)
    # 40 copies of each line: A/2025-01/Spotify = 40 x (10 + 5) streams, 40 x 1.5 USD, and so on
    expected = pd.DataFrame({
        "Sale Month": pd.to_datetime(["2025-01-01", "2025-02-01", "2025-01-01", "2025-02-01"]),
        "Store": ["Spotify", "Apple Music", "Spotify", "Spotify"],
        "Title": ["A", "A", "B", "B"],
        "Quantity": [600, 40, 80, 120],
        "Earnings (USD)": [60.0, 10.0, 5.0, 15.0],
    })
    assert result["Quantity"].tolist() == expected["Quantity"].tolist()
    assert result["Earnings (USD)"].tolist() == pytest.approx(expected["Earnings (USD)"].tolist())
    assert result["Title"].tolist() == expected["Title"].tolist()
    assert result["Store"].tolist() == expected["Store"].tolist()
    assert result["Sale Month"].tolist() == expected["Sale Month"].tolist()


def test_text_in_a_number_column_in_a_later_range_names_file_column_and_row(tmp_path):
    rows = [f"2025-01,Spotify,A,{i},0.1\n" for i in range(50)] + ["2025-01,Spotify,A,lots,0.1\n"]
    path = write(tmp_path / "s.csv", rows)
    with pytest.raises(DatasetError, match=r"s.csv: column 'Quantity' .* should be int .*data row 51 has 'lots'"):
        aggregate(STATEMENT, path, ["Title"], ["Quantity"], threads=2)


def test_a_bad_month_in_a_key_column_is_reported(tmp_path):
    path = write(tmp_path / "s.csv", ["2025-01,Spotify,A,1,0.1\n", "January,Spotify,A,1,0.1\n"])
    with pytest.raises(DatasetError, match=r"column 'Sale Month' .* should be month \(YYYY-MM\), but data row 2 has 'January'"):
        aggregate(STATEMENT, path, ["Sale Month"], ["Quantity"])


def test_a_missing_column_and_an_empty_file(tmp_path):
    path = write(tmp_path / "s.csv", [])
    empty = aggregate(STATEMENT, path, ["Title"], ["Quantity"])
    assert empty.empty and list(empty.columns) == ["Title", "Quantity"]
    path.write_bytes(b"")  # not even a header
    empty = aggregate(STATEMENT, path, ["Title"], ["Quantity"])
    assert empty.empty and list(empty.columns) == ["Title", "Quantity"]
    (tmp_path / "t.csv").write_text("Title,Quantity\nA,1\n")
    with pytest.raises(DatasetError, match="missing column 'Earnings \\(USD\\)'"):
        aggregate(STATEMENT, tmp_path / "t.csv", ["Title"], ["Earnings (USD)"])


# -- every valid CSV sums like a plain read, on any number of ranges -------------------------

BY, SUMS = ["Store", "Title"], ["Quantity", "Earnings (USD)"]


@pytest.mark.parametrize("threads", [1, 2])
def test_quoted_newlines_and_delimiters_sum_like_a_plain_read(tmp_path, threads):
    path = write_statement(tmp_path / "dk_bank_details.csv", statement_rows(900, multiline=0.8))
    assert b'"SONG, PT. 2' in path.read_bytes() and b'\n(LIVE)"' in path.read_bytes()
    result = aggregate(DK_BANK, path, BY, SUMS, threads=threads)
    assert_same_sums(frame_sums(result, BY, SUMS), plain_sums(path, BY, SUMS))


@pytest.mark.parametrize("threads", [2, 7])
def test_a_quote_inside_an_unquoted_value_sums_like_a_plain_read(tmp_path, threads):
    # not RFC 4180, but pyarrow, pandas and the csv module all read 12" VINYL as it stands;
    # it makes the count of quotes odd from there on
    rows = statement_rows(900, multiline=0.8)
    rows[3][4] = "@STRAY@"
    path = write_statement(tmp_path / "dk_bank_details.csv", rows)
    path.write_bytes(path.read_bytes().replace(b"@STRAY@", b'12" VINYL'))
    result = aggregate(DK_BANK, path, BY, SUMS, threads=threads)
    assert_same_sums(frame_sums(result, BY, SUMS), plain_sums(path, BY, SUMS))


SHAPES = {
    "BOM, CRLF": {"bom": True, "newline": "\r\n"},
    "no newline at the end": {"trailing_newline": False},
    "BOM, CRLF, no newline at the end": {"bom": True, "newline": "\r\n", "trailing_newline": False},
}


@pytest.mark.parametrize("threads", [1, 2, 7])
@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_of_valid_csv_sums_like_a_plain_read(tmp_path, shape, threads):
    rows = statement_rows(300, multiline=0.3, newline=SHAPES[shape].get("newline", "\n"))
    path = write_statement(tmp_path / "dk_bank_details.csv", rows, **SHAPES[shape])
    result = aggregate(DK_BANK, path, BY, SUMS, threads=threads)
    assert_same_sums(frame_sums(result, BY, SUMS), plain_sums(path, BY, SUMS))


@pytest.mark.parametrize("shape", SHAPES)
def test_a_header_alone_sums_to_nothing(tmp_path, shape):
    path = write_statement(tmp_path / "dk_bank_details.csv", [], **SHAPES[shape])
    result = aggregate(DK_BANK, path, BY, SUMS, threads=2)
    assert result.empty and list(result.columns) == [*BY, *SUMS]


# -- a value larger than a block -------------------------------------------------------------


LARGE_VALUES = {
    "unquoted": "LYRICS " * 800_000,  # 5.6 MB
    "quoted": "LYRIC, LINE " * 500_000,  # 6 MB
    "quoted, 300,000 lines": "LYRIC, LINE\n" * 300_000,
    "quoted, 10 MB": "LYRIC, LINE " * 900_000,
}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("value", LARGE_VALUES)
def test_a_value_of_megabytes_is_read_even_in_a_column_not_summed(tmp_path, value, threads):
    rows = statement_rows(200)
    rows[150][4] = LARGE_VALUES[value]
    path = write_statement(tmp_path / "dk_bank_details.csv", rows)
    for by in (["Store"], BY):
        result = aggregate(DK_BANK, path, by, SUMS, threads=threads)
        assert_same_sums(frame_sums(result, by, SUMS), plain_sums(path, by, SUMS))


def test_a_row_over_the_limit_names_file_row_and_column_and_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(lake, "MAX_BLOCK_SIZE", 4 << 20)
    rows = statement_rows(50, multiline=0.3)
    rows[30][4] = "HUGE " + "X" * (9 << 20)
    path = write_statement(tmp_path / "dk_bank_details.csv", rows)
    line = line_of(path.read_bytes(), b"HUGE ")
    with pytest.raises(DatasetError, match=(
            rf"dk_bank_details.csv: data row 31 \(line {line}\) of data set 'dk_bank_details' is 9.0 MiB, "
            r"more than the 4.0 MiB a row may take \(column 'Title' holds 9.0 MiB of it\); "
            r"keep values this large out of the CSV")):
        aggregate(DK_BANK, path, ["Store"], ["Quantity"], threads=2)


# -- bytes that are not UTF-8 ----------------------------------------------------------------


def test_bytes_that_are_not_utf8_are_shown_with_column_row_and_line(tmp_path):
    rows = statement_rows(40, multiline=0.5)
    rows[30][4] = "@BAD@"
    path = write_statement(tmp_path / "dk_bank_details.csv", rows)
    body = path.read_bytes()
    line = line_of(body, b"@BAD@")
    path.write_bytes(body.replace(b"@BAD@", b"CAF\xc9 NOIR"))
    with pytest.raises(DatasetError, match=(
            r"dk_bank_details.csv: column 'Title' of data set 'dk_bank_details' should be UTF-8 text, "
            rf"but data row 31 has b'CAF\\xc9 NOIR' \(line {line}\).* as Latin-1 .*'CAFÉ NOIR'")):
        aggregate(DK_BANK, path, BY, SUMS, threads=2)
    # a column the sums do not read is not checked
    assert aggregate(DK_BANK, path, ["Store"], SUMS, threads=2)["Quantity"].sum() == sum(int(r[7]) for r in rows)


# -- memory ----------------------------------------------------------------------------------

SPILL_SCRIPT = """
import re, sys
from pathlib import Path
from bedrot_lab.config import Settings
from bedrot_lab.lake import Dataset
from bedrot_lab.query import QueryEngine

path = Path(sys.argv[1])
settings = Settings(root=path.parent, config_file=None, zones={"curated": path.parent}, tracking_uri="",
                    artifact_root=path.parent, threads=1, memory_limit=sys.argv[2])
engine = QueryEngine(settings, {"wide": Dataset("wide", path.name, columns={"key": "string", "n": "int"})})
groups, total = engine.sql("SELECT count(*), sum(n) FROM (SELECT key, sum(n) AS n FROM wide GROUP BY key)").iloc[0]
engine.close()
peak_kb = re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1)  # this image's, not the parent's
print(int(groups), int(total), int(peak_kb) // 1024)
"""


def test_groups_larger_than_the_memory_limit_spill_and_finish(tmp_path):
    """2,500,000 groups of 64-character keys take about 400 MB to hold; with a limit of 160 MB
    the group-by spills to disk and finishes with every group, in half the memory."""
    import subprocess
    import sys

    import pyarrow as pa
    from pyarrow import csv as pacsv

    groups = 2_500_000
    keys = pa.array([f"{i:064d}" for i in range(groups)])
    pacsv.write_csv(pa.table({"key": keys, "n": pa.array([1] * groups)}), tmp_path / "wide.csv")
    peaks = {}
    for limit in ("160MB", "4GB"):
        output = subprocess.run([sys.executable, "-c", SPILL_SCRIPT, str(tmp_path / "wide.csv"), limit],
                                capture_output=True, text=True, check=True).stdout.split()
        count, total, peaks[limit] = (int(x) for x in output)
        assert (count, total) == (groups, groups)
    assert peaks["160MB"] < peaks["4GB"] - 150, peaks
    assert not any((tmp_path / ".bedrot-lab" / "spill").iterdir())  # what was spilled is gone


# -- ctx.sql and ctx.aggregate in a run ------------------------------------------------------

SQL_PLUGIN = """
    from bedrot_lab import Param, experiment, hookimpl


    @experiment("sql-probe", datasets=["dk_bank_details", "track_catalog"],
                params={"query": Param(str, "aggregate", "SQL, or aggregate")})
    def sql_probe(ctx):
        if ctx.params["query"] == "aggregate":
            frame = ctx.aggregate("dk_bank_details", by=["Store"], sums=["Quantity"])
        else:
            frame = ctx.sql(ctx.params["query"])
        ctx.log_metric("rows", len(frame))
        ctx.log_metric("total", float(frame.iloc[:, -1].sum()) if len(frame) else 0.0)
        ctx.log_table(frame, "result")


    @hookimpl
    def register_experiments(register):
        register(sql_probe)
"""


@pytest.fixture
def sql_lab(bedrot_lake, write_plugin):
    from csv_files import HEADER

    from bedrot_lab.lab import Lab

    write_plugin("sql_probe", SQL_PLUGIN)
    rows = statement_rows(200, multiline=0.2)
    write_statement(bedrot_lake / "4_curated" / "dk_bank_details.csv", rows, bom=True, newline="\r\n")
    (bedrot_lake / "4_curated" / "track_catalog_royalty_splits.csv").write_text(
        'artist,title,your_revenue_share\nNOVA VANTA,"SONG, PT. 2",50\n')
    assert HEADER[7] == "Quantity"
    return Lab.open(bedrot_lake), rows


def test_sql_sees_each_data_set_as_a_view_and_records_what_it_read(sql_lab):
    from bedrot_lab.fsutil import file_sha256
    from bedrot_lab.testing import read_run, run_experiment

    lab, rows = sql_lab
    query = ('SELECT s."Store", sum(s."Quantity") AS streams FROM dk_bank_details s '
             'LEFT JOIN track_catalog c ON s."Artist" = c.artist GROUP BY s."Store"')
    result = run_experiment(lab, "sql-probe", query=query)
    assert result.status == "FINISHED", result.error
    run = read_run(result.run_id, lab)
    assert run.data.metrics["total"] == sum(int(row[7]) for row in rows)
    assert run.data.metrics["rows"] == len({row[2] for row in rows})
    recorded = {d.dataset.name: {t.key: t.value for t in d.tags} for d in run.inputs.dataset_inputs}
    statement = lab.settings.zone("curated") / "dk_bank_details.csv"
    assert set(recorded) == {"dk_bank_details", "track_catalog"}
    assert recorded["dk_bank_details"]["sha256"] == file_sha256(statement)
    # hashed once, while the query ran, and remembered for the next run
    assert str(statement.resolve()) in (lab.settings.state_dir / "digests.json").read_text()


def test_sql_types_columns_as_the_catalog_declares_them(sql_lab):
    from bedrot_lab.testing import read_run, run_experiment

    lab, _ = sql_lab
    query = ('SELECT typeof("Sale Month") AS month, typeof("Quantity") AS quantity, typeof("Earnings (USD)") AS '
             'earnings, count(*) AS n FROM dk_bank_details GROUP BY ALL')
    result = run_experiment(lab, "sql-probe", query=query)
    assert result.status == "FINISHED", result.error
    assert read_run(result.run_id, lab).data.metrics["rows"] == 1
    from mlflow import MlflowClient

    table = pd.read_parquet(MlflowClient(lab.settings.tracking_uri).download_artifacts(
        result.run_id, "tables/result.parquet"))
    assert table.iloc[0].tolist()[:3] == ["TIMESTAMP", "BIGINT", "DOUBLE"]


def test_aggregate_in_a_run_sums_like_a_plain_read(sql_lab):
    from bedrot_lab.testing import read_run, run_experiment

    lab, rows = sql_lab
    result = run_experiment(lab, "sql-probe", query="aggregate")
    assert result.status == "FINISHED", result.error
    assert read_run(result.run_id, lab).data.metrics["total"] == sum(int(row[7]) for row in rows)


@pytest.mark.parametrize(("query", "message"), [
    ("SELEC 1", r'^the query cannot be read: Parser Error: syntax error at or near "SELEC"$'),
    ('SELECT "Nope" FROM dk_bank_details', r'^Binder Error: Referenced column "Nope" not found in FROM clause!$'),
    ("SELECT * FROM dk_bank_detail", r"^Catalog Error: Table with name dk_bank_detail does not exist!.*; the "
                                     r"catalog's data sets: .*dk_bank_details"),
])
def test_a_bad_query_fails_the_run_with_one_line_saying_why(sql_lab, query, message):
    from bedrot_lab.testing import run_experiment

    lab, _ = sql_lab
    result = run_experiment(lab, "sql-probe", query=query)
    assert result.status == "FAILED"
    reason = result.error.partition(": ")[2]  # after the exception's name
    assert "\n" not in reason and re.search(message, reason), result.error


def test_a_bad_value_met_by_a_query_names_file_column_and_row(sql_lab):
    from bedrot_lab.testing import run_experiment

    lab, rows = sql_lab
    bad = next(index for index in range(120, 200) if "\n" not in rows[index][4])
    rows[bad][7] = "lots"
    path = write_statement(lab.settings.zone("curated") / "dk_bank_details.csv", rows)
    line = line_of(path.read_bytes(), b"lots")
    result = run_experiment(lab, "sql-probe", query='SELECT sum("Quantity") FROM dk_bank_details')
    assert result.status == "FAILED"
    assert (f"{path}: column 'Quantity' of data set 'dk_bank_details' should be int (whole number), "
            f"but data row {bad + 1} has 'lots' (line {line})") in result.error


def test_the_cli_shows_a_bad_query_as_one_line_without_a_traceback(sql_lab, cli_env):
    from conftest import bedrot_forked as bedrot  # what the command does, not how it starts

    done = bedrot("run", "sql-probe", "-P", "query=SELECT nope FROM dk_bank_details", env=cli_env)
    assert done.returncode == 1
    assert 'Referenced column "nope" not found' in done.stderr and "Traceback" not in done.stderr


# -- progress ----------------------------------------------------------------------------------


def test_progress_shows_on_a_terminal_and_nowhere_else(tmp_path, monkeypatch):
    """A query that runs for more than a second shows DuckDB's progress on a terminal (a real
    pseudo-terminal here) and writes nothing when the stream is not one."""
    import io
    import os
    import select

    from bedrot_lab import query
    from bedrot_lab.query import terminal_progress

    assert terminal_progress(io.StringIO()) is None
    monkeypatch.setattr(query, "PROGRESS_AFTER", 0.05)
    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as terminal:
        show = terminal_progress(terminal)
        assert show is not None
        path = write_statement(tmp_path / "dk_bank_details.csv", statement_rows(30_000))
        engine = engine_for(DK_BANK, path, threads=1, progress=show)
        try:  # a second or more on one thread
            engine.sql('SELECT "Title", sum(length("Title") + range) FROM dk_bank_details, range(400) GROUP BY 1')
        finally:
            engine.close()
        shown = ""
        while select.select([leader], [], [], 1.0)[0]:  # what the terminal got, without waiting for more
            shown += os.read(leader, 1 << 16).decode()
    os.close(leader)
    assert re.search(r"\r\S.*: +\d+\.\d% read, \d+ s", shown), shown


def test_a_query_with_parameters_reads_its_data_sets(tmp_path):
    rows = statement_rows(300)
    path = write_statement(tmp_path / "dk_bank_details.csv", rows)
    engine = engine_for(DK_BANK, path)
    try:
        found = engine.sql('SELECT count(*) AS n FROM dk_bank_details WHERE "Quantity" > ? AND "Store" = $2',
                           params=[10, "Spotify"])
    finally:
        engine.close()
    assert found["n"].iloc[0] == sum(1 for row in rows if int(row[7]) > 10 and row[2] == "Spotify")


def test_a_query_reads_frames_and_arrow_tables_it_is_given_beside_the_catalog(tmp_path):
    import pyarrow as pa

    rows = statement_rows(300)
    engine = engine_for(DK_BANK, write_statement(tmp_path / "dk_bank_details.csv", rows))
    stores = pd.DataFrame({"Store": ["Spotify", "Apple Music"], "weight": [2, 3]})
    try:
        sums = engine.sql('SELECT "Store", sum("Quantity") AS streams FROM dk_bank_details GROUP BY ALL', arrow=True)
        weighted = engine.sql("SELECT sum(streams * weight) AS n FROM sums JOIN stores ON sums.Store = stores.Store",
                              tables={"sums": sums, "stores": pa.Table.from_pandas(stores)})
        # a join USING a column: DuckDB cannot list the tables of such a query before it runs
        joined = engine.sql("SELECT sum(Quantity * weight) AS n FROM dk_bank_details JOIN stores USING (Store)",
                            tables={"stores": stores})
        with pytest.raises(QueryError, match="'dk_bank_details' is a data set of the catalog: give the table"):
            engine.sql("SELECT * FROM dk_bank_details", tables={"dk_bank_details": stores})
        with pytest.raises(QueryError, match="sums"):  # given to one query only
            engine.sql("SELECT * FROM sums")
    finally:
        engine.close()
    expected = sum(int(row[7]) * {"Spotify": 2, "Apple Music": 3}.get(row[2], 0) for row in rows)
    assert weighted["n"].iloc[0] == joined["n"].iloc[0] == expected > 0


def test_an_empty_text_value_is_a_key_of_its_own_as_ctx_load_reads_it(tmp_path):
    """An empty store or title groups as '' (not NULL, which a pandas groupby would drop),
    however many of the file's columns the query reads."""
    rows = statement_rows(200)
    for index in (3, 50, 51):
        rows[index][2] = ""
    rows[60][4] = '""'  # a quoted empty value, written as ""
    path = write_statement(tmp_path / "dk_bank_details.csv", rows)
    path.write_bytes(path.read_bytes().replace(b'""""""', b'""'))
    for by in (["Store"], ["Store", "Title"]):
        result = aggregate(DK_BANK, path, by, SUMS)
        assert "" in set(result["Store"])
        assert_same_sums(frame_sums(result, by, SUMS), plain_sums(path, by, SUMS))


def test_a_spill_folder_left_by_a_killed_process_goes_with_the_next_query(tmp_path):
    """kill -9 mid-query leaves DuckDB's spill behind; the next engine removes the folders of
    processes that are gone and keeps those of live ones."""
    import os

    from bedrot_lab.query import spill_folder

    spill = tmp_path / ".bedrot-lab" / "spill"
    dead = spill / "999999999-1"
    alive = spill / f"{os.getppid()}-1"
    for folder in (dead, alive):
        folder.mkdir(parents=True)
        (folder / "duckdb_temp_storage.tmp").write_bytes(b"x" * 1024)
    mine = spill_folder(tmp_path / ".bedrot-lab")
    assert not dead.exists() and alive.exists() and mine.is_dir()


def test_a_credential_in_a_failing_query_reaches_neither_the_error_tag_nor_the_traceback(sql_lab):
    from mlflow import MlflowClient

    from bedrot_lab.testing import read_run, run_experiment

    lab, _ = sql_lab
    token = "EAAB" + "x7Kq9" * 12  # a fake Meta token, built here
    result = run_experiment(lab, "sql-probe", query=f'SELECT "{token}" FROM dk_bank_details')
    assert result.status == "FAILED" and token not in result.error
    run = read_run(result.run_id, lab)
    client = MlflowClient(lab.settings.tracking_uri)
    traceback = Path(client.download_artifacts(result.run_id, "error/traceback.txt")).read_text()
    assert token not in run.data.tags["error"] and token not in traceback
    assert token not in str(run.data.params) and "Referenced column" in run.data.tags["error"]
