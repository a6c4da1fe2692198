"""The report: issue cap with exact counts, to_dict contract, text for people, CSV rows."""

from __future__ import annotations

import csv
import io
import json

from bot.schema import Column, ColumnType, TableSchema
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


def test_every_code_is_in_the_readme_table() -> None:
    from pathlib import Path

    from bot.validation import codes

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    table = readme.split("### What is checked", 1)[1].split("\n\n", 2)[1]
    documented = {c.strip("`") for row in table.splitlines() for c in row.split("|")[1].replace(",", " ").split()}
    defined = {v for k, v in vars(codes).items() if k.isupper() and isinstance(v, str)}
    assert defined - documented == set()


def test_never_more_issues_than_the_cap_even_with_many_codes() -> None:
    # 30 rows each with a different problem kind would keep "the first of every code" past a cap of 3
    table = TableSchema(
        kind="dengage",
        columns=(Column("id", primary=True, nullable=False), Column("n", type=ColumnType.INTEGER)),
        table_name="t",
    )
    data = b"id,n\n,1\n1,x\n2\n1,3,4\n\n3,\xff\n4,5\n4,5\n"
    report = validate(io.BytesIO(data), table, ValidationOptions(max_issues=3))
    assert len(report.issues) == 3 and report.truncated
    assert sum(report.issue_counts.values()) > 3


def test_columns_are_summarised_past_a_thousand() -> None:
    header = b",".join(b"c%d" % i for i in range(5000))
    schema = TableSchema(kind="bigpanda", columns=tuple(Column(f"c{i}") for i in range(5000)))
    report = validate(io.BytesIO(header + b"\n" + b",".join([b"v"] * 5000) + b"\n"), schema)
    d = report.to_dict()
    assert report.valid and len(d["columns"]) == 1000 and d["column_count"] == 5000 and d["columns_truncated"]


def test_a_header_of_a_million_empty_titles_stays_bounded() -> None:
    report = validate(io.BytesIO(b"," * 1_000_000 + b"\n1\n"), BP)
    assert len(report.issues) <= 1000
    assert report.issue_counts["empty_header"] == 1_000_001
    assert len(json.dumps(report.to_dict())) < 1_000_000


def test_numpy_stays_off_the_slack_acknowledgement_path() -> None:
    # The validator and the change preview import numpy when they run, not when imported: the
    # Slack handler must acknowledge within 3 seconds of a cold start.
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, handlers.slack_events, bot.slack.app, bot.validation, bot.preview; print('numpy' in sys.modules)"
    )
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True)
    assert done.stdout.strip() == "False"
