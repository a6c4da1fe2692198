"""BigPanda mapping-enrichment rules: header vs schema titles, 32K values, line breaks, duplicates."""

from __future__ import annotations

import pytest

from bot.schema import Column, TableSchema
from bot.validation import Report, Severity, ValidationOptions
from tests.validation_support import validate_both

BP = TableSchema(kind="bigpanda", columns=(Column("host", role="query_tag"), Column("owner", role="result_tag")))


def run(data: bytes, schema: TableSchema = BP, **options: object) -> tuple[Report, bytes]:
    return validate_both(data, schema, ValidationOptions(**options))  # type: ignore[arg-type]


def pairs(report: Report) -> list[tuple[str, int | None]]:
    return [(i.code, i.line) for i in report.issues]


def test_valid_table() -> None:
    report, _ = run(b"host,owner\nweb-1,alice\nweb-2,bob\n")
    assert report.valid and report.rows == 2 and report.issues == [] and report.delimiter == ","


@pytest.mark.parametrize(("size", "ok"), [(32_768, True), (32_769, False)])
def test_value_of_32768_bytes_is_the_limit(size: int, ok: bool) -> None:
    report, _ = run(b"host,owner\nweb-1," + b"x" * size + b"\nweb-2,bob\n")
    assert report.valid is ok
    if not ok:
        assert pairs(report) == [("value_too_long", 2)]
        assert report.issues[0].column == "owner"
        assert "32,769 bytes" in report.issues[0].message


@pytest.mark.parametrize(("chars", "ok"), [(16_384, True), (16_385, False)])
def test_value_limit_counts_utf8_bytes_not_characters(chars: int, ok: bool) -> None:
    # "é" is two bytes in UTF-8: 16,384 of them are 32,768 bytes.
    value = ("é" * chars).encode()
    report, _ = run(b'host,owner\nweb-1,"' + value + b'"\n')
    assert report.valid is ok
    assert [i.code for i in report.issues] == ([] if ok else ["value_too_long"])


def test_long_value_on_a_later_line_and_across_chunks() -> None:
    rows = b"".join(b"web-%d,owner\n" % i for i in range(5000))
    data = b"host,owner\n" + rows + b"big," + b"y" * 40_000 + b"\n" + rows.replace(b"web", b"db")
    report, _ = run(data, chunk_size=4096)
    assert pairs(report) == [("value_too_long", 5002)]


def test_long_line_with_only_short_values_is_fine() -> None:
    schema = TableSchema(kind="bigpanda", columns=tuple(Column(f"c{i}") for i in range(10)))
    header = ",".join(f"c{i}" for i in range(10)).encode()
    row = b",".join([b"v" * 30_000] * 10)  # 300 KB line, every value under 32K
    report, _ = run(header + b"\n" + row + b"\n", schema=schema)
    assert report.valid


def test_newline_inside_a_value_is_an_error_naming_the_span() -> None:
    report, _ = run(b'host,owner\nweb-1,"alice\nand bob"\nweb-2,carol\n')
    assert pairs(report) == [("newline_in_value", 2)]
    assert report.issues[0].column == "owner" and "lines 2-3" in report.issues[0].message


def test_carriage_return_inside_a_value_is_an_error_too() -> None:
    report, out = run(b'host,owner\nweb-1,"alice\rbob"\n')
    assert ("newline_in_value", 2) in pairs(report)
    assert b"\r" not in out


def test_missing_and_unknown_columns_with_hints() -> None:
    report, _ = run(b"host,Owner,extra\nweb-1,alice,x\n")
    by_code = {i.code: i for i in report.issues}
    assert by_code["missing_column"].column == "owner"
    assert "case-sensitive" in by_code["missing_column"].message
    unknown = sorted(i.column or "" for i in report.issues if i.code == "unknown_column")
    assert unknown == ["Owner", "extra"]
    assert not report.valid


def test_spaces_around_a_title_are_named() -> None:
    report, _ = run(b"host, owner\nweb-1,alice\n")
    missing = next(i for i in report.issues if i.code == "missing_column")
    assert "spaces" in missing.message


def test_semicolon_header_gets_a_hint() -> None:
    report, _ = run(b"host;owner\nweb-1;alice\n")
    assert any("';'" in i.message for i in report.issues if i.code == "missing_column")


def test_column_order_differs_is_a_warning_only() -> None:
    report, _ = run(b"owner,host\nalice,web-1\n")
    assert report.valid
    assert [(i.code, i.severity) for i in report.issues] == [("column_order", Severity.WARNING)]


def test_duplicate_rows_compare_parsed_values_and_name_both_lines() -> None:
    report, _ = run(b'host,owner\na,b\nc,d\n"a",b\na,"b"\n')
    assert pairs(report) == [("duplicate_row", 4), ("duplicate_row", 5)]
    # each repeat names the occurrence before it
    assert [i.message.split(" exactly")[0] for i in report.issues] == ["line 4 repeats line 2", "line 5 repeats line 4"]
    assert all(i.severity is Severity.ERROR for i in report.issues)
    assert not report.valid and report.rows == 4


def test_rows_differing_only_in_where_a_comma_sits_are_not_duplicates() -> None:
    schema = TableSchema(kind="bigpanda", columns=(Column("a"), Column("b"), Column("c")))
    report, _ = run(b'a,b,c\n"x,y",z,1\nx,"y,z",1\n"x","y","z,1"\n', schema=schema)
    assert report.valid, report.issues


def test_drop_duplicates_removes_them_and_reports_each() -> None:
    data = b'host,owner\na,b\nc,d\n"a",b\ne,f\nc,d\n'
    report, out = run(data, drop_duplicates=True)
    assert out == b"host,owner\na,b\nc,d\ne,f\n"
    assert report.valid and report.rows == 3
    dropped = [(i.code, i.severity, i.line) for i in report.issues]
    assert dropped == [
        ("duplicate_row_dropped", Severity.FIXED, 4),
        ("duplicate_row_dropped", Severity.FIXED, 6),
    ]
    assert "line 2" in report.issues[0].message and "line 3" in report.issues[1].message


def test_drop_duplicates_across_many_batches_keeps_first_occurrences() -> None:
    rows = [b"h%d,o%d\n" % (i % 3000, i % 3000) for i in range(9000)]
    report, out = run(b"host,owner\n" + b"".join(rows), drop_duplicates=True, chunk_size=1000)
    assert out == b"host,owner\n" + b"".join(rows[:3000])
    assert report.rows == 3000 and report.issue_counts["duplicate_row_dropped"] == 6000
    assert report.valid


def test_drop_duplicates_with_repairs_and_multiline_records() -> None:
    data = b'\xef\xbb\xbfhost,owner\r\na,"x\r\ny"\r\na,"x\r\ny"\r\nb,c'
    report, out = run(data, drop_duplicates=True)
    assert out == b'host,owner\na,"x\ny"\nb,c\n'
    assert ("duplicate_row_dropped", 4) in pairs(report)
    assert ("newline_in_value", 2) in pairs(report)  # still an error for BigPanda


@pytest.mark.parametrize(("results", "warned"), [(200, False), (201, True)])
def test_result_column_limit(results: int, warned: bool) -> None:
    columns = (Column("key", role="query_tag"), *(Column(f"r{i}", role="result_tag") for i in range(results)))
    schema = TableSchema(kind="bigpanda", columns=columns)
    header = ",".join(c.name for c in columns).encode()
    row = ",".join(f"v{i}" for i in range(len(columns))).encode()
    report, _ = run(header + b"\n" + row + b"\n", schema=schema)
    assert report.valid
    codes = [(i.code, i.severity) for i in report.issues]
    assert codes == ([("too_many_result_columns", Severity.WARNING)] if warned else [])
