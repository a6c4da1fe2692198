"""The report: issue cap with exact counts, to_dict contract, text for people, CSV rows."""

from __future__ import annotations

import csv
import io
import json

from bot.schema import Column, TableSchema
from bot.validation import CSV_REPORT_HEADER, Severity, ValidationOptions, format_text, validate

BP = TableSchema(kind="bigpanda", columns=(Column("a"), Column("b")))


def bad_file(n: int) -> bytes:
    return b"a,b\n" + b"".join(b"%d\n" % i for i in range(n)) + b"x,y\nx,y\n"


def test_issue_cap_keeps_counting_and_keeps_every_code_once() -> None:
    report = validate(io.BytesIO(bad_file(5000)), BP, ValidationOptions(max_issues=100))
    assert report.issue_counts == {"field_count": 5000, "duplicate_row": 1}
    # the cap holds 100 issues: the 99 nearest the start and the duplicate, found at the end,
    # which shows because it is the first of its code
    assert len(report.issues) == 100
    assert [i.code for i in report.issues].count("field_count") == 99
    assert [i.line for i in report.issues[:99]] == list(range(2, 101))
    assert [i.code for i in report.issues].count("duplicate_row") == 1
    assert report.truncated and not report.valid
    assert report.count(Severity.ERROR) == 5001
    assert report.rows == 5002


def test_to_dict_contract() -> None:
    report = validate(io.BytesIO(b"a,b\r\n1,2\r\n1,2,3\r\n"), BP)
    d = json.loads(json.dumps(report.to_dict()))
    assert {"valid", "rows", "columns", "issues"} <= set(d)
    assert d["valid"] is False and d["rows"] == 2 and d["columns"] == ["a", "b"]
    for issue in d["issues"]:
        assert set(issue) == {"code", "severity", "line", "column", "message"}
        assert issue["severity"] in ("error", "fixed", "warning")
    assert [(i["code"], i["severity"], i["line"]) for i in d["issues"]] == [
        ("line_endings", "fixed", 1),
        ("field_count", "error", 3),
    ]
    assert d["issue_counts"] == {"line_endings": 1, "field_count": 1}


def test_helpers_split_by_severity() -> None:
    report = validate(io.BytesIO(b"b,a\n1,2\n1,2\n3,4"), BP)
    assert [i.code for i in report.errors] == ["duplicate_row"]
    assert [i.code for i in report.warnings] == ["column_order"]
    assert [i.code for i in report.fixes] == ["final_newline"]


def test_format_text_summary_groups_and_more() -> None:
    report = validate(io.BytesIO(bad_file(12) + b"1,2"), BP)
    text = format_text(report, file_name="hosts.csv")
    first = text.splitlines()[0]
    assert first.startswith("hosts.csv: NOT valid: 15 data rows, 2 columns")
    assert "13 errors" in first and "1 repair" in first
    assert "field_count (12) - first on lines 2, 3, 4, 5, 6" in text
    assert "... and 7 more" in text
    assert "duplicate_row (1)" in text
    assert text.index("Errors") < text.index("Repaired") and "final_newline" in text


def test_format_text_valid_file() -> None:
    text = format_text(validate(io.BytesIO(b"a,b\n1,2\n"), BP))
    assert text == "valid: 1 data row, 2 columns"


def test_rows_for_csv_make_a_report_file() -> None:
    report = validate(io.BytesIO(b"a,b\n1\n2,3\n2,3\n"), BP)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_REPORT_HEADER)
    writer.writerows(report.rows_for_csv())
    rows = list(csv.reader(io.StringIO(buffer.getvalue())))
    assert rows[0] == ["line", "column", "code", "severity", "message"]
    assert [(r[0], r[2], r[3]) for r in rows[1:]] == [("2", "field_count", "error"), ("4", "duplicate_row", "error")]
