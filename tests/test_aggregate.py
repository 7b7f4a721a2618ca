"""Streaming group-by sums over CSV byte ranges: same answer as a plain read, clear errors."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest
from csv_files import (
    DK_BANK,
    assert_same_sums,
    frame_sums,
    line_of,
    plain_sums,
    statement_rows,
    write_statement,
)

from bedrot_lab import lake
from bedrot_lab.aggregate import _line_ranges, _outside_quotes, _Part, aggregate_csv
from bedrot_lab.lake import Dataset, DatasetError

STATEMENT = Dataset("statement", "s.csv", columns={
    "Sale Month": "month", "Store": "string", "Title": "string", "Quantity": "int", "Earnings (USD)": "float"})


def write(path, rows):
    path.write_text("Sale Month,Store,Title,Quantity,Earnings (USD)\n" + "".join(rows))
    return path


def test_byte_ranges_cover_every_line_once(tmp_path):
    path = write(tmp_path / "s.csv", [f"2025-01,S{i % 3},T{i},{i},0.5\n" for i in range(100)])
    for parts in (1, 2, 3, 7, 200):
        ranges = _line_ranges(path, parts)
        body = path.read_bytes()
        pieces = [body[start:end] for start, end in ranges]
        assert b"".join(pieces) == body[body.index(b"\n") + 1:]
        assert all(piece.endswith(b"\n") for piece in pieces)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_sums_match_a_hand_count_whatever_the_split(tmp_path, threads):
    rows = ["2025-01,Spotify,A,10,1.0\n", "2025-01,Spotify,A,5,0.5\n", "2025-02,Apple Music,A,1,0.25\n",
            "2025-01,Spotify,B,2,0.125\n", "2025-02,Spotify,B,3,0.375\n"] * 40
    path = write(tmp_path / "s.csv", rows)
    result = aggregate_csv(STATEMENT, path, ["Sale Month", "Store", "Title"], ["Quantity", "Earnings (USD)"],
                           threads=threads, block_size=64)
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
        aggregate_csv(STATEMENT, path, ["Title"], ["Quantity"], threads=2, block_size=64)


def test_a_bad_month_in_a_key_column_is_reported(tmp_path):
    path = write(tmp_path / "s.csv", ["2025-01,Spotify,A,1,0.1\n", "January,Spotify,A,1,0.1\n"])
    with pytest.raises(DatasetError, match=r"column 'Sale Month' .* should be month \(YYYY-MM\), but data row 2 has 'January'"):
        aggregate_csv(STATEMENT, path, ["Sale Month"], ["Quantity"])


def test_a_missing_column_and_an_empty_file(tmp_path):
    path = write(tmp_path / "s.csv", [])
    empty = aggregate_csv(STATEMENT, path, ["Title"], ["Quantity"])
    assert empty.empty and list(empty.columns) == ["Title", "Quantity"]
    (tmp_path / "t.csv").write_text("Title,Quantity\nA,1\n")
    with pytest.raises(DatasetError, match="missing column 'Earnings \\(USD\\)'"):
        aggregate_csv(STATEMENT, tmp_path / "t.csv", ["Title"], ["Earnings (USD)"])


# -- every valid CSV sums like a plain read, on any number of ranges -------------------------

BY, SUMS = ["Store", "Title"], ["Quantity", "Earnings (USD)"]


def naive_cuts(body: bytes, parts: int) -> list[int]:
    """Where cutting at the first line end after each equal share of the data rows would cut."""
    first = body.index(b"\n") + 1
    return [body.index(b"\n", first + (len(body) - first) * part // parts - 1) + 1 for part in range(1, parts)]


@pytest.mark.parametrize("threads", [1, 2, 7])
def test_quoted_newlines_at_the_cuts_sum_like_a_plain_read(tmp_path, threads):
    path = write_statement(tmp_path / "dk_bank_details.csv", statement_rows(900, multiline=0.8))
    body = path.read_bytes()
    # an odd number of quotes before a line end: the line end is inside a quoted title
    assert all(body[:cut].count(b'"') % 2 for cut in naive_cuts(body, threads))
    # blocks of 16 KiB also end inside quoted titles, within each range
    result = aggregate_csv(DK_BANK, path, BY, SUMS, threads=threads, block_size=16 << 10)
    assert_same_sums(frame_sums(result, BY, SUMS), plain_sums(path, BY, SUMS))


@pytest.mark.parametrize("parts", [2, 7, 50])
def test_cuts_inside_quoted_values_move_to_the_next_line_end_outside_one(tmp_path, parts):
    path = write_statement(tmp_path / "dk_bank_details.csv", statement_rows(300, multiline=0.8))
    body = path.read_bytes()
    guessed = _line_ranges(path, parts)
    aligned = _outside_quotes(path, [_Part(start, end, body[start:end].count(b'"')) for start, end in guessed])
    assert len(aligned) == len(guessed) == parts
    assert aligned[0][0] == guessed[0][0] and aligned[-1][1] == len(body)
    assert all(end == start for (_, end), (start, _) in itertools.pairwise(aligned))
    assert all(body[start - 1:start] == b"\n" and body[:start].count(b'"') % 2 == 0 for start, _ in aligned)


@pytest.mark.parametrize("threads", [2, 7])
def test_a_quote_inside_an_unquoted_value_sums_like_a_plain_read(tmp_path, threads):
    # not RFC 4180, but pyarrow, pandas and the csv module all read 12" VINYL as it stands;
    # it makes the count of quotes odd from there on
    rows = statement_rows(900, multiline=0.8)
    rows[3][4] = "@STRAY@"
    path = write_statement(tmp_path / "dk_bank_details.csv", rows)
    path.write_bytes(path.read_bytes().replace(b"@STRAY@", b'12" VINYL'))
    result = aggregate_csv(DK_BANK, path, BY, SUMS, threads=threads, block_size=16 << 10)
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
    result = aggregate_csv(DK_BANK, path, BY, SUMS, threads=threads, block_size=16 << 10)
    assert_same_sums(frame_sums(result, BY, SUMS), plain_sums(path, BY, SUMS))


@pytest.mark.parametrize("shape", SHAPES)
def test_a_header_alone_sums_to_nothing(tmp_path, shape):
    path = write_statement(tmp_path / "dk_bank_details.csv", [], **SHAPES[shape])
    result = aggregate_csv(DK_BANK, path, BY, SUMS, threads=2)
    assert result.empty and list(result.columns) == [*BY, *SUMS]


# -- a value larger than a block -------------------------------------------------------------


LARGE_VALUES = {
    "unquoted": "LYRICS " * 800_000,  # 5.6 MB
    "quoted": "LYRIC, LINE " * 500_000,  # 6 MB
    "quoted, 300,000 lines": "LYRIC, LINE\n" * 300_000,
}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("value", LARGE_VALUES)
def test_a_value_of_megabytes_is_read_even_in_a_column_not_summed(tmp_path, value, threads):
    rows = statement_rows(200)
    rows[150][4] = LARGE_VALUES[value]
    path = write_statement(tmp_path / "dk_bank_details.csv", rows)
    for by in (["Store"], BY):
        result = aggregate_csv(DK_BANK, path, by, SUMS, threads=threads)
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
        aggregate_csv(DK_BANK, path, ["Store"], ["Quantity"], threads=2)


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
        aggregate_csv(DK_BANK, path, BY, SUMS, threads=2)
    # a column the sums do not read is not checked
    assert aggregate_csv(DK_BANK, path, ["Store"], SUMS, threads=2)["Quantity"].sum() == sum(int(r[7]) for r in rows)
