"""D·engage UpsertData rules: delimiter, columns and mapping, primary keys, typed values, master_contact."""

from __future__ import annotations

import pytest

from bot.schema import Column, ColumnType, TableSchema
from bot.validation import Report, Severity, ValidationOptions
from tests.validation_support import validate_both


def schema(*columns: Column, table: str = "orders", mapping: dict[str, str] | None = None) -> TableSchema:
    return TableSchema(kind="dengage", columns=columns, table_name=table, column_mapping=mapping or {})


ORDERS = schema(
    Column("id", ColumnType.INTEGER, primary=True, nullable=False),
    Column("email", ColumnType.EMAIL),
    Column("total", ColumnType.DECIMAL),
    Column("paid", ColumnType.BOOLEAN),
    Column("at", ColumnType.DATETIME),
    Column("note"),
)
HEADER = b"id,email,total,paid,at,note\n"


def run(data: bytes, table: TableSchema = ORDERS, **options: object) -> Report:
    return validate_both(data, table, ValidationOptions(**options))[0]  # type: ignore[arg-type]


def pairs(report: Report) -> list[tuple[str, int | None, str | None]]:
    return [(i.code, i.line, i.column) for i in report.issues]


def test_valid_rows_with_empty_optional_values() -> None:
    report = run(HEADER + b"1,a@b.co,3.5,true,2024-01-31 10:00,x\n2,,,,,\n")
    assert report.valid and report.rows == 2 and report.issues == []


def test_semicolon_delimiter_is_detected_from_the_header() -> None:
    report = run(b"id;email;total;paid;at;note\n1;a@b.co;3,5x;true;2024-01-31;x,y\n")
    assert report.delimiter == ";"
    assert pairs(report) == [("invalid_decimal", 2, "total")]


def test_comma_decimal_in_a_semicolon_file_gets_a_hint() -> None:
    report = run(b"id;email;total;paid;at;note\n1;;3,5;;;\n")
    assert pairs(report) == [("invalid_decimal", 2, "total")]
    assert "comma as the decimal separator" in report.issues[0].message


@pytest.mark.parametrize(
    "value",
    [
        "2024-03-31",
        "2024-03-31 14:05",
        "2024-03-31T14:05",
        "2024-03-31 14:05:09",
        "2024-03-31T14:05:09",
        "2024-03-31 14:05:09.1",
        "2024-03-31 14:05:09.12",
        "2024-03-31 14:05:09.123",
        "2024-03-31T14:05:09.1",
        "2024-03-31T14:05:09.12",
        "2024-03-31T14:05:09.123",
        "2024-03-31T14:05:09Z",
    ],
)
@pytest.mark.parametrize("kind", [ColumnType.DATE, ColumnType.DATETIME])
def test_the_twelve_date_formats(value: str, kind: ColumnType) -> None:
    table = schema(Column("at", kind))
    report = run(b"at\n" + value.encode() + b"\n", table)
    assert report.valid, report.issues


@pytest.mark.parametrize(
    "value",
    [
        "31/03/2024",
        "2024-3-31",
        "2024-03-31 14:05:09.1234",
        "2024-03-31 14:05:09Z",  # Z only after a T
        "2024-03-31T14:05Z",
        "2024-03-31 24:00",
        "2024-13-01",
        "2024-02-30",
        "2023-02-29",
        "2024-03-31  14:05",
        " 2024-03-31",
        "2024-03-31T14:05:09+02:00",
        "yesterday",
    ],
)
def test_wrong_dates(value: str) -> None:
    table = schema(Column("at", ColumnType.DATETIME))
    report = run(b"at\n" + value.encode() + b"\n", table)
    assert pairs(report) == [("invalid_date", 2, "at")]


def test_leap_day_is_a_real_date() -> None:
    assert run(b"at\n2024-02-29\n", schema(Column("at", ColumnType.DATE))).valid


@pytest.mark.parametrize(
    ("kind", "good", "bad", "code"),
    [
        (
            ColumnType.INTEGER,
            ["0", "42", "-7", "+3", "007"],
            ["4.0", "1,000", " 4", "1e3", "four", "-"],
            "invalid_integer",
        ),
        (
            ColumnType.DECIMAL,
            ["3.14", "-0.5", ".5", "10", "+2.", "0"],
            ["3,14", "1e5", "1,000.5", "..", "NaN", "-"],
            "invalid_decimal",
        ),
        (ColumnType.BOOLEAN, ["true", "FALSE", "True", "1", "0"], ["yes", "no", "t", "2", "truee"], "invalid_boolean"),
        (
            ColumnType.EMAIL,
            ["a@b.co", "first.last+tag@mail.example.org"],
            ["a@b", "a b@c.de", "@b.co", "a@@b.co", "a@b."],
            "invalid_email",
        ),
    ],
)
def test_typed_values(kind: ColumnType, good: list[str], bad: list[str], code: str) -> None:
    table = schema(Column("v", kind))
    values = good + bad
    data = b"v\n" + b"".join(b'"' + v.encode() + b'"\n' for v in values)
    report = run(data, table)
    expected_lines = list(range(2 + len(good), 2 + len(values)))
    assert [(i.code, i.line) for i in report.issues] == [(code, line) for line in expected_lines]


def test_phone_and_text_are_not_checked() -> None:
    table = schema(Column("p", ColumnType.PHONE), Column("t"))
    assert run(b"p,t\n+1 (555) 010-0000,anything\nnot a phone,\n", table).valid


def test_primary_key_must_be_present() -> None:
    report = run(HEADER + b"1,,,,,\n,,,,,\n  ,,,,,\n")
    assert pairs(report) == [("missing_primary_key", 3, "id"), ("missing_primary_key", 4, "id")]


def test_not_nullable_column_must_have_a_value() -> None:
    table = schema(Column("id", primary=True, nullable=False), Column("name", nullable=False))
    report = run(b"id,name\n1,x\n2,\n", table)
    assert pairs(report) == [("missing_value", 3, "name")]


def test_repeated_primary_key_warns_naming_the_earlier_line() -> None:
    report = run(HEADER + b"1,a@b.co,,,,\n2,,,,,\n1,c@d.co,,,,\n1,e@f.co,,,,\n")
    assert report.valid
    assert pairs(report) == [("repeated_key", 4, "id"), ("repeated_key", 5, "id")]
    assert report.issues[0].severity is Severity.WARNING
    assert "as line 2" in report.issues[0].message and "as line 4" in report.issues[1].message
    assert "keeps the last row" in report.issues[0].message


def test_identical_rows_with_a_key_are_a_repeated_key_warning_not_an_error() -> None:
    # D·engage upserts: the second row overwrites the first (the vendor page has no uniqueness rule)
    report = run(HEADER + b"1,a@b.co,,,,\n1,a@b.co,,,,\n")
    assert report.valid
    assert [(i.code, i.severity, i.line) for i in report.issues] == [("repeated_key", Severity.WARNING, 3)]


def test_identical_rows_without_a_key_warn_they_are_appended_twice() -> None:
    table = schema(Column("name"), Column("city"))
    report = run(b"name,city\nann,rome\nbob,oslo\nann,rome\n", table)
    assert report.valid
    assert [(i.code, i.severity, i.line) for i in report.issues] == [("duplicate_row", Severity.WARNING, 4)]
    assert "repeats line 2" in report.issues[0].message and "appends both" in report.issues[0].message


def test_a_value_over_128_kib_is_fine_for_dengage() -> None:
    # csv's own field limit (131,072 characters) is no D·engage rule; nor is any other value length
    table = schema(Column("id", primary=True, nullable=False), Column("notes"))
    big = b"x" * 300_000
    report = run(b"id,notes\n1," + big + b'\n2,"' + big + b'\nmore"\n', table)
    assert report.valid, report.issues
    assert report.rows == 2 and report.issues == []


def test_composite_primary_key() -> None:
    table = schema(Column("a", primary=True, nullable=False), Column("b", primary=True, nullable=False), Column("c"))
    report = run(b"a,b,c\n1,2,x\n1,3,y\n1,2,z\n", table)
    assert [(i.code, i.line) for i in report.issues] == [("repeated_key", 4)]


def test_every_table_column_must_be_in_the_file_and_extras_are_errors() -> None:
    report = run(b"id,email,total,paid,at,notes,extra\n1,,,,,,\n")
    got = sorted((i.code, i.column) for i in report.issues)
    assert got == [("missing_column", "note"), ("unknown_column", "extra"), ("unknown_column", "notes")]


def test_column_mapping_maps_table_columns_to_file_headers() -> None:
    table = schema(
        Column("id", ColumnType.INTEGER, primary=True, nullable=False),
        Column("email", ColumnType.EMAIL),
        mapping={"id": "Customer ID", "email": "E-mail"},
    )
    report = run(b"E-mail;Customer ID\nx@y.co;7\nnot-an-email;\n", table)
    assert report.delimiter == ";"
    # checks run in the table's column order: id, then email
    assert pairs(report) == [("missing_primary_key", 3, "Customer ID"), ("invalid_email", 3, "E-mail")]
    missing = run(b"id,email\n1,a@b.co\n", table)
    assert sorted(i.column or "" for i in missing.issues if i.code == "missing_column") == ["Customer ID", "E-mail"]
    assert any("column_mapping" in i.message for i in missing.issues)


def test_mapping_of_an_unknown_table_column_is_reported() -> None:
    table = schema(Column("id"), mapping={"ident": "ID"})
    report = run(b"id\n1\n", table)
    assert [(i.code, i.column) for i in report.issues] == [("bad_column_mapping", "ident")]


@pytest.mark.parametrize("name", ["master_contact", "MASTER_CONTACT"])
def test_master_contact_is_refused(name: str) -> None:
    report = run(b"id\n1\n", schema(Column("id"), table=name))
    assert [(i.code, i.line) for i in report.issues] == [("forbidden_table", None)]


def test_multiline_values_are_allowed_for_dengage() -> None:
    table = schema(Column("id", primary=True, nullable=False), Column("note"))
    report = run(b'id,note\n1,"two\nlines"\n2,x\n', table)
    assert report.valid and report.rows == 2


def test_typed_errors_in_an_irregular_batch_name_the_right_lines() -> None:
    table = schema(Column("n", ColumnType.INTEGER), Column("note"))
    report = run(b'n,note\n1,"a\nb"\nx,y\n3\n4,"c\n\nd"\nz,w\n', table)
    assert [(i.code, i.line) for i in report.issues] == [
        ("invalid_integer", 4),
        ("field_count", 5),
        ("invalid_integer", 9),
    ]
