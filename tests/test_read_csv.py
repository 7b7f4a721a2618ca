"""Reading a CSV data set whole (``ctx.load``) or in batches: every valid file reads like a plain
read of it, every bad one fails naming the file, the column, the row and its line."""

from __future__ import annotations

import pytest
from csv_files import (
    DK_BANK,
    HEADER,
    aggregate,
    line_of,
    plain_read,
    statement_rows,
    write_statement,
)

from bedrot_lab import lake
from bedrot_lab.lake import DatasetError, read_dataset, read_text

COLUMNS = ["Store", "Title", "Quantity", "Earnings (USD)"]


def assert_reads_like_a_plain_read(frame, path, columns=COLUMNS):
    plain = plain_read(path)
    assert len(frame) == len(plain)
    for column in columns:
        expected = [row[column] for row in plain]
        if DK_BANK.columns[column] == "int":
            expected = [int(value) for value in expected]
        if DK_BANK.columns[column] == "float":
            expected = pytest.approx([float(value) for value in expected])
        assert frame[column].tolist() == expected, column


def error_of(read, *args, **kwargs) -> str:
    with pytest.raises(DatasetError) as raised:
        result = read(*args, **kwargs)
        if not hasattr(result, "columns"):
            list(result)
    return str(raised.value)


# -- every valid CSV is read -----------------------------------------------------------------


def test_quoted_newlines_across_block_ends_read_like_a_plain_read(tmp_path):
    path = write_statement(tmp_path / "dk_bank_details.csv", statement_rows(2500, multiline=0.8))
    assert path.stat().st_size > 3 << 20  # pyarrow's whole read cuts blocks of 1 MiB
    assert_reads_like_a_plain_read(read_dataset(DK_BANK, path), path)


SHAPES = {
    "BOM, CRLF": {"bom": True, "newline": "\r\n"},
    "no newline at the end": {"trailing_newline": False},
    "BOM, CRLF, no newline at the end": {"bom": True, "newline": "\r\n", "trailing_newline": False},
}


@pytest.mark.parametrize("rows", [300, 0])
@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_of_valid_csv_reads_like_a_plain_read(tmp_path, shape, rows):
    rows = statement_rows(rows, multiline=0.3, newline=SHAPES[shape].get("newline", "\n"))
    path = write_statement(tmp_path / "dk_bank_details.csv", rows, **SHAPES[shape])
    frame = read_dataset(DK_BANK, path)
    assert list(frame.columns) == HEADER
    assert_reads_like_a_plain_read(frame, path)


@pytest.mark.parametrize("columns", [["Store", "Quantity"], None])
def test_a_value_of_megabytes_is_read(tmp_path, columns):
    rows = statement_rows(200)
    rows[50][4] = "LYRICS " * 800_000  # 5.6 MB
    rows[150][4] = "LYRIC, LINE\n" * 300_000  # 3.6 MB over 300,000 lines
    path = write_statement(tmp_path / "dk_bank_details.csv", rows)
    assert_reads_like_a_plain_read(read_dataset(DK_BANK, path, columns), path, columns or COLUMNS)


# -- every bad one is named precisely --------------------------------------------------------


def bad_statement(tmp_path, marker: bytes, value: bytes, row: int = 30):
    """A statement whose data row ``row + 1`` has ``value`` in place of ``marker``, after rows
    of two lines; returns the path and that row's line number."""
    rows = statement_rows(40, multiline=0.5)
    rows[row][4 if marker.startswith(b"@T") else 7] = marker.decode()
    path = write_statement(tmp_path / "dk_bank_details.csv", rows)
    body = path.read_bytes()
    path.write_bytes(body.replace(marker, value))
    return path, line_of(body, marker)


def test_a_row_over_the_limit_names_file_row_and_column_and_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setattr(lake, "MAX_BLOCK_SIZE", 2 << 20)
    path, line = bad_statement(tmp_path, b"@TITLE@", b"X" * (5 << 20))
    expected = (f"{path}: data row 31 (line {line}) of data set 'dk_bank_details' is 5.0 MiB, more than the "
                "2.0 MiB a row may take (column 'Title' holds 5.0 MiB of it); keep values this large out of the CSV")
    assert error_of(read_dataset, DK_BANK, path, ["Store"]).startswith(expected)
    assert error_of(read_text, DK_BANK, path).startswith(expected)


def test_bytes_that_are_not_utf8_name_column_row_line_and_bytes(tmp_path):
    path, line = bad_statement(tmp_path, b"@TITLE@", b"CAF\xc9 NOIR")
    message = error_of(read_dataset, DK_BANK, path)
    assert message.startswith(f"{path}: column 'Title' of data set 'dk_bank_details' should be UTF-8 text, "
                              f"but data row 31 has b'CAF\\xc9 NOIR' (line {line}); ")
    assert "as Latin-1 these bytes read 'CAFÉ NOIR'" in message
    # ctx.load and ctx.aggregate say the same
    assert error_of(aggregate, DK_BANK, path, ["Title"], ["Quantity"], threads=2) == message
    # a column that is not read is not checked
    assert len(read_dataset(DK_BANK, path, ["Store", "Quantity"])) == 40
    # read as text (the data-quality checks, the ETL's byte copy), the same message
    assert error_of(read_text, DK_BANK, path) == message


def test_read_as_text_keeps_every_value_as_written(tmp_path):
    rows = statement_rows(50, multiline=0.2)
    rows[3][7] = "lots"  # a bad number is text here, for a checker to count
    rows[4][12] = ""
    path = write_statement(tmp_path / "statement.csv", rows, bom=True, newline="\r\n")
    frame = read_text(DK_BANK, path)
    assert list(frame.columns) == HEADER
    assert frame.astype(object).to_dict("records") == plain_read(path)


def test_bytes_that_are_not_utf8_in_a_number_column_are_shown(tmp_path):
    path, line = bad_statement(tmp_path, b"@QTY@", b"1\xb2")
    message = error_of(read_dataset, DK_BANK, path)
    assert message.startswith(f"{path}: column 'Quantity' of data set 'dk_bank_details' should be int "
                              f"(whole number), but data row 31 has b'1\\xb2' (line {line})")
    assert error_of(aggregate, DK_BANK, path, ["Store"], ["Quantity"], threads=2) == message


def test_a_header_that_is_not_utf8_is_named(tmp_path):
    path = write_statement(tmp_path / "dk_bank_details.csv", statement_rows(3))
    path.write_bytes(path.read_bytes().replace(b"Country of Sale", b"Pa\xeds"))
    assert error_of(read_dataset, DK_BANK, path).startswith(
        f"{path}: the header (line 1) of data set 'dk_bank_details' has bytes that are not UTF-8: b'Pa\\xeds'")


def test_a_latin1_file_is_named_as_such(tmp_path):
    path = write_statement(tmp_path / "dk_bank_details.csv", statement_rows(30))
    path.write_bytes(path.read_bytes().decode().encode("latin-1"))
    first = next(number for number, row in enumerate(statement_rows(30), 1) if "ÉTÉ" in row[4])
    message = error_of(read_dataset, DK_BANK, path, COLUMNS)
    assert f"column 'Title' of data set 'dk_bank_details' should be UTF-8 text, but data row {first} has " in message
    assert "as Latin-1 these bytes read 'ÉTÉ, ÇA VA'" in message


def test_text_in_a_number_column_names_the_row_and_its_line(tmp_path):
    path, line = bad_statement(tmp_path, b"@QTY@", b"lots")
    message = error_of(read_dataset, DK_BANK, path)
    assert message == (f"{path}: column 'Quantity' of data set 'dk_bank_details' should be int (whole number), "
                       f"but data row 31 has 'lots' (line {line})")
    assert error_of(aggregate, DK_BANK, path, ["Store"], ["Quantity"], threads=2) == message


def test_a_row_with_too_few_fields_is_named(tmp_path):
    path, line = bad_statement(tmp_path, b"@TITLE@", b'A TITLE\nWITH A NEWLINE "NOT" QUOTED')
    body = path.read_bytes()
    path.write_bytes(body.replace(b'"A TITLE\nWITH A NEWLINE ""NOT"" QUOTED"', b"A TITLE\nWITH A NEWLINE"))
    message = error_of(read_dataset, DK_BANK, path)
    assert message.startswith(f"{path}: data row 31 (line {line}) of data set 'dk_bank_details' has 5 fields, "
                              "the header 13")
    assert error_of(aggregate, DK_BANK, path, ["Store"], ["Quantity"], threads=2) == message


def test_a_promotion_contract_reads_what_ctx_load_reads(tmp_path):
    """The contract check of a CSV output uses the same reader: quoted line ends and a value
    of megabytes pass, and a row that breaks is named."""
    from bedrot_lab.contracts import Contract, DataView

    rows = statement_rows(30, multiline=0.3)
    rows[5][4] = "LONG " + "x" * (3 << 20)
    path = write_statement(tmp_path / "statement.csv", rows)
    contract = Contract("statement.csv", columns={"Title": "string", "Quantity": "int"}, not_null=("Title",),
                        min_rows=30)
    view = DataView(path, "csv", contract)
    assert view.num_rows == 30 and contract.check(view) == []
    path.write_bytes(path.read_bytes() + b"2025-03-11,2025-01,Spotify\n")
    with pytest.raises(DatasetError, match=r"data row 31 .*line"):
        DataView(path, "csv", contract)
