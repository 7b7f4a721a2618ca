"""Streaming group-by sums over CSV byte ranges: same answer as a plain read, clear errors."""

from __future__ import annotations

import pandas as pd
import pytest

from bedrot_lab.lake import Dataset, DatasetError
from bedrot_lab.scan import _line_ranges, aggregate_csv

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
