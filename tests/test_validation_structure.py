"""The byte and structure layer: repairs, encodings, non-CSV input, line numbers, quoting, chunking."""

from __future__ import annotations

import hashlib
import io

import pytest

from bot.schema import Column, TableSchema
from bot.validation import Report, Severity, ValidationOptions, validate
from tests.validation_support import validate_both

BP = TableSchema(kind="bigpanda", columns=(Column("a"), Column("b")))
DE = TableSchema(kind="dengage", columns=(Column("a"), Column("b")), table_name="t")


def run(data: bytes, schema: TableSchema = BP, **options: object) -> tuple[Report, bytes]:
    return validate_both(data, schema, ValidationOptions(**options))  # type: ignore[arg-type]


def codes_of(report: Report, severity: Severity | None = None) -> list[str]:
    return [i.code for i in report.issues if severity is None or i.severity is severity]


def only(report: Report, code: str):  # type: ignore[no-untyped-def]
    found = [i for i in report.issues if i.code == code]
    assert len(found) == 1, report.issues
    return found[0]


def test_clean_file_passes_unchanged() -> None:
    data = b"a,b\n1,2\n3,4\n"
    report, out = run(data)
    assert report.valid and report.rows == 2 and report.columns == ["a", "b"]
    assert report.issues == []
    assert out == data
    assert report.sha256 == hashlib.sha256(data).hexdigest()
    assert report.bytes_read == report.bytes_written == len(data)


def test_bom_is_removed_and_reported_once() -> None:
    report, out = run(b"\xef\xbb\xbfa,b\n1,2\n")
    assert out == b"a,b\n1,2\n"
    assert report.valid
    issue = only(report, "bom_removed")
    assert issue.severity is Severity.FIXED and issue.line == 1
    assert report.sha256 == hashlib.sha256(out).hexdigest()


def test_crlf_becomes_lf_reported_once_with_count_and_first_line() -> None:
    report, out = run(b"a,b\n1,2\r\n3,4\r\n5,6\r\n")
    assert out == b"a,b\n1,2\n3,4\n5,6\n"
    issue = only(report, "line_endings")
    assert issue.severity is Severity.FIXED and issue.line == 2
    assert "3 Windows (CRLF)" in issue.message
    assert report.valid and report.rows == 3


def test_bare_cr_line_endings() -> None:
    report, out = run(b"a,b\r1,2\r3,4\r")
    assert out == b"a,b\n1,2\n3,4\n"
    issue = only(report, "line_endings")
    assert "3 old Mac (CR)" in issue.message and issue.line == 1
    assert report.rows == 2 and report.valid


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 7, 1 << 20])
def test_crlf_split_across_chunks_is_one_line_ending(chunk_size: int) -> None:
    data = b"\xef\xbb\xbfa,b\r\n1,\xc3\xa9\r\n3,4\r\n5,6"
    report, out = run(data, chunk_size=chunk_size)
    assert out == "a,b\n1,é\n3,4\n5,6\n".encode()
    assert report.valid and report.rows == 3
    assert sorted(codes_of(report)) == ["bom_removed", "final_newline", "line_endings"]
    assert "3 Windows (CRLF)" in only(report, "line_endings").message


def test_iterable_source_of_tiny_chunks() -> None:
    data = b"a,b\n1,2\n3,4\n"
    report = validate(iter([data[i : i + 1] for i in range(len(data))]), BP)
    assert report.valid and report.rows == 2 and report.sha256 == hashlib.sha256(data).hexdigest()


def test_missing_final_newline_is_added() -> None:
    report, out = run(b"a,b\n1,2")
    assert out == b"a,b\n1,2\n"
    issue = only(report, "final_newline")
    assert issue.severity is Severity.FIXED and issue.line == 2
    assert report.valid


def test_trailing_blank_lines_are_dropped_but_a_middle_one_is_an_error() -> None:
    report, out = run(b"a,b\n1,2\n\n3,4\n\n\n")
    assert out == b"a,b\n1,2\n\n3,4\n"
    assert only(report, "trailing_blank_lines").line == 5
    blank = only(report, "blank_line")
    assert blank.line == 3 and blank.severity is Severity.ERROR
    assert report.rows == 2 and not report.valid


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_file"),
        (b"\n\n  \n", "empty_file"),
        (b"\xef\xbb\xbf", "empty_file"),
        ("a,b\n1,2\n".encode("utf-16"), "utf16_file"),
        ("a,b\n1,2\n".encode("utf-16-le"), "utf16_file"),
        ("a,b\n1,2\n".encode("utf-32"), "utf16_file"),
        (b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(256)) * 4, "binary_file"),
        (bytes(range(256)) * 64, "binary_file"),
        (b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 100, "binary_file"),
        (b"<!DOCTYPE html>\n<html><body>Sign in to Slack</body></html>\n", "html_file"),
    ],
)
def test_not_a_csv_gets_one_clear_error(data: bytes, code: str) -> None:
    report, _ = run(data)
    assert not report.valid
    assert [(i.code, i.severity) for i in report.issues] == [(code, Severity.ERROR)]
    assert report.rows == 0
    assert "Traceback" not in report.issues[0].message


def test_header_only_has_no_data_rows() -> None:
    report, _ = run(b"a,b\n")
    assert not report.valid and codes_of(report) == ["no_data_rows"]


def test_one_data_row_is_enough() -> None:
    report, _ = run(b"a,b\nx,y\n")
    assert report.valid and report.rows == 1


def test_invalid_utf8_in_the_middle_names_line_and_offset_and_goes_on() -> None:
    data = b"a,b\n1,2\n3,caf\xe9\n5,6,7\n"
    report, out = run(data)
    bad = only(report, "invalid_utf8")
    offset = data.index(b"\xe9")
    assert bad.line == 3 and f"byte {offset}" in bad.message
    assert only(report, "field_count").line == 4  # kept going after the bad byte
    assert out == data  # the bytes pass through; the report blocks the upload


@pytest.mark.parametrize("chunk_size", [1, 4, 1 << 20])
def test_invalid_utf8_offsets_with_crlf_and_split_sequences(chunk_size: int) -> None:
    data = b"a,b\r\n\xc3\xa9,\xe2\x82\xac\r\n1,\xff\r\n2,\xe2\x82\r\n"
    report, _ = run(data, chunk_size=chunk_size)
    bad = sorted((i.line, i.message) for i in report.issues if i.code == "invalid_utf8")
    assert [line for line, _ in bad] == [3, 4]
    first, second = data.index(b"\xff"), data.index(b"\xe2\x82\r")
    assert f"byte {first}" in bad[0][1]
    assert f"byte {second}" in bad[1][1]


def test_truncated_utf8_at_end_of_file() -> None:
    report, _ = run(b"a,b\n1,\xe2\x82")
    assert only(report, "invalid_utf8").line == 2


def test_latin1_file_is_many_capped_errors_not_a_traceback() -> None:
    rows = "".join(f"{i},café\n" for i in range(3000)).encode("latin-1")
    report, _ = run(b"a,b\n" + rows, max_issues=50)
    assert report.issue_counts["invalid_utf8"] == 3000
    assert len(report.issues) == 50 and report.truncated


def test_line_numbers_after_a_quoted_multiline_value() -> None:
    data = b'a,b\n1,"two\nlines"\n3,4\n5\n6,7,8\n'
    report, _ = run(data, schema=DE)
    assert [(i.code, i.line) for i in report.issues] == [("field_count", 5), ("field_count", 6)]
    report, _ = run(data, schema=BP)
    assert [(i.code, i.line, i.column) for i in report.issues] == [
        ("newline_in_value", 2, "b"),
        ("field_count", 5, None),
        ("field_count", 6, None),
    ]
    assert "spans lines 2-3" in only(report, "newline_in_value").message


def test_field_count_too_many_and_too_few() -> None:
    report, _ = run(b"a,b\n1,2,3\n4\n5,6\n")
    assert [(i.code, i.line) for i in report.issues] == [("field_count", 2), ("field_count", 3)]
    assert "double quotes" in report.issues[0].message
    assert "every row needs every column" in report.issues[1].message
    assert report.rows == 3


def test_bad_quoting_names_the_line_and_goes_on() -> None:
    report, _ = run(b'a,b\n1,"x"y\n3,4\n5,6,7\n')
    assert [(i.code, i.line) for i in report.issues] == [("bad_quoting", 2), ("field_count", 4)]
    assert '""' in report.issues[0].message


def test_unclosed_quote_at_end_of_file() -> None:
    report, _ = run(b'a,b\n1,2\n3,"open\n5,6\n')
    issue = only(report, "bad_quoting")
    assert issue.line == 3 and "never closed" in issue.message


def test_unclosed_quote_in_a_big_file_is_bounded() -> None:
    rows = b"".join(b"%d,value\n" % i for i in range(40_000))
    report, _ = run(b'a,b\n1,"open\n' + rows)
    assert not report.valid
    # the quote runs to the end of the file: one quoting error where it opens, no parser limit
    # posing as a rule and no "no data rows"
    assert [(i.code, i.line) for i in report.issues] == [("bad_quoting", 2)]
    assert "never closed" in report.issues[0].message


def test_file_too_large_stops_reading() -> None:
    data = b"a,b\n" + b"1,2\n" * 1000
    report, _ = run(data, max_bytes=1000, chunk_size=256)
    issue = only(report, "file_too_large")
    assert issue.severity is Severity.ERROR
    assert report.bytes_read <= 1000 + 256


def test_file_at_the_size_limit_passes() -> None:
    data = b"a,b\n" + b"".join(b"%d,2\n" % i for i in range(100))
    report, _ = run(data, max_bytes=len(data), chunk_size=64)
    assert report.valid and report.rows == 100


def test_absurdly_long_line_stops_with_one_error() -> None:
    report, _ = run(b"a,b\n" + b"x" * 5000, max_line_bytes=1000, chunk_size=300)
    assert codes_of(report) == ["line_too_long"]
    assert report.issues[0].line == 2


def test_empty_header_line_is_missing_header() -> None:
    report, _ = run(b"\na,b\n1,2\n")
    assert codes_of(report) == ["missing_header"]


def test_empty_and_duplicate_header_names() -> None:
    report, _ = run(b"a,,b,a\n1,2,3,4\n")
    assert "empty_header" in codes_of(report)
    dup = only(report, "duplicate_header")
    assert dup.column == "a" and dup.line == 1


def test_quoted_header_with_newline() -> None:
    report, _ = run(b'a,"b\nc"\n1,2\n', schema=DE)
    assert "newline_in_header" in codes_of(report)
    assert only(report, "unknown_column").column == "b\nc"


def test_output_with_every_repair_is_byte_exact() -> None:
    data = b'\xef\xbb\xbfa,b\r\n"x, y",2\r\n3,"4"\r\n\r\n\r\n'
    report, out = run(data)
    assert out == b'a,b\n"x, y",2\n3,"4"\n'
    assert report.bytes_written == len(out) and report.sha256 == hashlib.sha256(out).hexdigest()
    assert sorted(codes_of(report, Severity.FIXED)) == ["bom_removed", "line_endings", "trailing_blank_lines"]
    assert report.valid


def test_no_output_still_hashes_the_normalized_bytes() -> None:
    report = validate(io.BytesIO(b"a,b\r\n1,2"), BP, ValidationOptions(background_io=False))
    assert report.sha256 == hashlib.sha256(b"a,b\n1,2\n").hexdigest()


def test_output_write_failure_is_raised_not_swallowed() -> None:
    class Full(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, b: object) -> int:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        validate(io.BytesIO(b"a,b\n1,2\n"), BP, output=Full())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [b"\xe9", b"\xed\xa0\x80", b"\xf0\x9f\x98", b"\xff\xfe\xfd", b"\xc3"],
    ids=["latin1", "surrogate", "truncated", "three_bytes", "lone_lead"],
)
def test_one_issue_per_bad_utf8_sequence(bad: bytes) -> None:
    report, _ = run(b"a,b\nx," + bad + b"\ny,z" + bad + b"z\n")
    assert [(i.code, i.line) for i in report.issues] == [("invalid_utf8", 2), ("invalid_utf8", 3)]


@pytest.mark.parametrize("padding", [0, 100_000])
def test_a_nul_byte_is_reported_with_its_line(padding: int) -> None:
    rows = b"p,q\n" * (padding // 4)
    report, _ = run(b"a,b\n" + rows + b"1,2\nx,\x00y\n")
    issue = only(report, "binary_file")
    assert issue.line == 3 + padding // 4 and f"line {issue.line}" in issue.message
