"""`tablebot validate`: exit codes, JSON contract, text, --output, --drop-duplicates, tables file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import main

ROOT = Path(__file__).resolve().parent.parent
TABLES = """
[targets.bp]
kind = "bigpanda"
token_env = "BIGPANDA_TOKEN"

[targets.de]
kind = "dengage"
userkey_env = "DENGAGE_USERKEY"
password_env = "DENGAGE_PASSWORD"

[tables.hosts]
target = "bp"
enrichment_id = "enr-1"
columns = ["host", "owner"]
query_columns = ["host"]

[tables.orders]
target = "de"
table_name = "orders"
columns = ["id", "total"]
primary_key = ["id"]
column_types = { id = "INTEGER", total = "DECIMAL" }
column_mapping = { id = "Order ID" }
"""


@pytest.fixture
def tables(tmp_path: Path) -> Path:
    path = tmp_path / "tables.toml"
    path.write_text(TABLES, encoding="utf-8")
    return path


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    code = main(["validate", *argv, "--format", "json"])
    return code, json.loads(capsys.readouterr().out)


def test_valid_file_exits_0_with_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "h.csv", b"host,owner\nweb,alice\n")
    code, report = run_json(capsys, str(path), "--target", "bigpanda", "--columns", "host,owner")
    assert code == 0
    assert report["valid"] is True and report["rows"] == 1 and report["columns"] == ["host", "owner"]
    assert report["issues"] == []


def test_invalid_file_exits_1_and_names_line_and_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "h.csv", b"host,owner\nweb," + b"x" * 32_769 + b"\n")
    code, report = run_json(capsys, str(path), "--target", "bigpanda", "--columns", "host,owner")
    assert code == 1 and report["valid"] is False
    assert report["issues"] == [
        {
            "code": "value_too_long",
            "severity": "error",
            "line": 2,
            "column": "owner",
            "message": report["issues"][0]["message"],  # type: ignore[index]
        }
    ]


def test_warning_alone_is_valid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "h.csv", b"owner,host\nalice,web\n")
    code, report = run_json(capsys, str(path), "--target", "bigpanda", "--columns", "host,owner")
    assert code == 0 and [i["severity"] for i in report["issues"]] == ["warning"]  # type: ignore[union-attr]


def test_text_output_and_repaired_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "h.csv", b"\xef\xbb\xbfhost,owner\r\nweb,alice\r\ndb,bob")
    fixed = tmp_path / "fixed.csv"
    code = main(["validate", str(path), "--target", "bigpanda", "--columns", "host,owner", "--output", str(fixed)])
    text = capsys.readouterr().out
    assert code == 0
    assert fixed.read_bytes() == b"host,owner\nweb,alice\ndb,bob\n"
    assert text.startswith(f"{path}: valid: 2 data rows, 2 columns")
    assert "bom_removed" in text and "line_endings" in text and "final_newline" in text
    assert f"repaired file written to {fixed}" in text


def test_drop_duplicates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "h.csv", b'host,owner\nweb,alice\n"web",alice\ndb,bob\n')
    fixed = tmp_path / "fixed.csv"
    code, report = run_json(
        capsys,
        str(path),
        "--target",
        "bigpanda",
        "--columns",
        "host,owner",
        "--drop-duplicates",
        "--output",
        str(fixed),
    )
    assert code == 0 and report["rows"] == 2
    assert fixed.read_bytes() == b"host,owner\nweb,alice\ndb,bob\n"
    assert [(i["code"], i["line"]) for i in report["issues"]] == [("duplicate_row_dropped", 3)]  # type: ignore[union-attr]
    code, report = run_json(capsys, str(path), "--target", "bigpanda", "--columns", "host,owner")
    assert code == 1 and [(i["code"], i["line"]) for i in report["issues"]] == [("duplicate_row", 3)]  # type: ignore[union-attr]


def test_tables_file_with_mapping_and_types(tmp_path: Path, tables: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, "o.csv", b"Order ID;total\n1;2.5\n2;3\n")
    code, report = run_json(capsys, str(good), "--table", "orders", "--config", str(tables))
    assert code == 0 and report["rows"] == 2
    bad = write(tmp_path, "b.csv", b"Order ID;total\nx;2,5\n")
    code, report = run_json(capsys, str(bad), "--table", "orders", "--config", str(tables))
    assert code == 1
    assert [(i["code"], i["column"]) for i in report["issues"]] == [  # type: ignore[union-attr]
        ("invalid_integer", "Order ID"),
        ("invalid_decimal", "total"),
    ]


def test_tables_file_from_environment(
    tmp_path: Path, tables: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TABLEBOT_CONFIG", str(tables))
    path = write(tmp_path, "h.csv", b"host,owner\nweb,alice\n")
    code, report = run_json(capsys, str(path), "--table", "hosts")
    assert code == 0 and report["valid"] is True


@pytest.mark.parametrize(
    "argv",
    [
        ["--target", "bigpanda"],
        ["--table", "hosts", "--target", "bigpanda", "--columns", "a"],
        ["--target", "dengage", "--columns", "a,b", "--primary-key", "c"],
        ["--target", "bigpanda", "--columns", "a,b", "--primary-key", "a"],
        ["--target", "bigpanda", "--columns", "a,a"],
        [],
        ["--table", "nope"],
        ["--table", "hosts", "--columns", "a"],
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, tables: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    path = write(tmp_path, "h.csv", b"a,b\n1,2\n")
    assert main(["validate", str(path), *argv, "--config", str(tables)]) == 2
    err = capsys.readouterr().err
    assert "tablebot validate:" in err and "Traceback" not in err


def test_missing_file_and_output_over_input_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "none.csv"), "--target", "bigpanda", "--columns", "a"]) == 2
    path = write(tmp_path, "h.csv", b"a\n1\n")
    args = ["validate", str(path), "--target", "bigpanda", "--columns", "a", "--output", str(path)]
    assert main(args) == 2
    assert path.read_bytes() == b"a\n1\n"
    assert "cannot read" in capsys.readouterr().err


def test_not_a_csv_is_one_error_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "h.csv", "host,owner\nweb,alice\n".encode("utf-16"))
    code, report = run_json(capsys, str(path), "--target", "bigpanda", "--columns", "host,owner")
    assert code == 1 and [i["code"] for i in report["issues"]] == ["utf16_file"]  # type: ignore[union-attr]


def test_installed_command(tmp_path: Path) -> None:
    exe = ROOT / ".venv" / "bin" / "tablebot"
    if not exe.exists():
        exe = Path(sys.executable).with_name("tablebot")
    path = write(tmp_path, "h.csv", b"host,owner\nweb,alice\nweb,alice\n")
    done = subprocess.run(
        [str(exe), "validate", str(path), "--target", "bigpanda", "--columns", "host,owner", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["valid"] is False and report["rows"] == 2
    assert [(i["code"], i["line"]) for i in report["issues"]] == [("duplicate_row", 3)]
