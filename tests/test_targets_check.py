"""`tablebot check --table ALIAS` against the sandboxes over HTTP: each step reported, with what to fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main
from tests.fixtures_upstream import Upstream, write_tables_file


@pytest.fixture
def tables_path(
    tmp_path: Path, bigpanda_upstream: Upstream, dengage_upstream: Upstream, sandbox_env: dict[str, str]
) -> Path:
    return write_tables_file(
        tmp_path / "tables.toml",
        bigpanda_url=bigpanda_upstream.base_url,
        dengage_url=dengage_upstream.base_url,
        extra_tables="""
[tables.hosts_remote]
target = "bp"
enrichment_id = "demo"

[tables.contacts_town]
target = "dg"
table_name = "demo_contacts"
columns = ["contact_key", "email", "town"]
primary_key = ["contact_key"]

[tables.missing]
target = "dg"
table_name = "no_such_table"
""",
    )


def check(tables: Path, alias: str, capsys: pytest.CaptureFixture[str], fmt: str = "json") -> tuple[int, Any]:
    code = main(["check", "--table", alias, "--config", str(tables), "--format", fmt])
    out = capsys.readouterr().out
    return code, json.loads(out) if fmt == "json" else out


@pytest.mark.parametrize("alias", ["hosts", "contacts", "hosts_remote"])
def test_a_good_configuration_passes_every_step(
    alias: str, tables_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, result = check(tables_path, alias, capsys)
    assert code == 0, result
    assert [s["step"] for s in result["steps"]] == ["config", "login", "table", "schema", "compare"]
    assert all(s["ok"] for s in result["steps"])


def test_the_text_report_names_each_step(tables_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = check(tables_path, "contacts", capsys, fmt="text")
    assert code == 0
    assert "ok   login: logged in with TEST_DENGAGE_USERKEY / TEST_DENGAGE_PASSWORD" in text
    assert "ok   table: table 'demo_contacts' found (publicId 5d7a6b3e-0000-4000-8000-000000000001)" in text
    assert "contact_key (TEXT, key)" in text
    assert "all steps passed" in text


def test_a_renamed_column_is_found_with_what_to_fix(tables_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, text = check(tables_path, "contacts_town", capsys, fmt="text")
    assert code == 3
    assert "FAIL compare: the table has columns the tables file does not list: city" in text
    assert "the tables file lists columns the table does not have: town" in text
    assert "fix: make `columns`" in text and "[tables.contacts_town]" in text


def test_a_table_name_not_found_stops_at_the_table_step(
    tables_path: Path, dengage_upstream: Upstream, capsys: pytest.CaptureFixture[str]
) -> None:
    dengage_upstream.admin.settings(tables_page_max=10)
    code, result = check(tables_path, "missing", capsys)
    assert code == 3
    failed = result["steps"][-1]
    assert failed["step"] == "table" and not failed["ok"]
    assert "no data table named 'no_such_table'" in failed["detail"] and "2 tables listed of 2" in failed["detail"]


@pytest.mark.parametrize("alias", ["hosts", "contacts"])
def test_an_address_outside_the_allow_list_is_named(
    alias: str,
    tables_path: Path,
    bigpanda_upstream: Upstream,
    dengage_upstream: Upstream,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for upstream in (bigpanda_upstream, dengage_upstream):
        upstream.admin.settings(allowed_addresses=["10.1.1.1"])
    code, result = check(tables_path, alias, capsys)
    assert code == 3
    failed = next(s for s in result["steps"] if not s["ok"])
    assert failed["step"] == ("table" if alias == "hosts" else "login")
    assert "not allowed" in failed["detail"] and "IP allow-list" in failed["fix"]


def test_a_missing_credential_exits_2(
    tables_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TEST_DENGAGE_PASSWORD")
    code, result = check(tables_path, "contacts", capsys)
    assert code == 2
    assert result["steps"] == [
        {
            "step": "config",
            "ok": False,
            "detail": "target 'dg': environment variable TEST_DENGAGE_PASSWORD is not set",
            "fix": "fix [targets] in the tables file or set the variable it names",
        }
    ]


def test_unreachable_exits_4(tmp_path: Path, sandbox_env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    code, result = check(write_tables_file(tmp_path / "t.toml"), "contacts", capsys)
    assert code == 4
    assert result["steps"][1]["step"] == "login" and "could not be reached" in result["steps"][1]["detail"]


def test_a_misspelt_target_setting_is_named_not_ignored(
    tmp_path: Path, dengage_upstream: Upstream, sandbox_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    tables = write_tables_file(tmp_path / "t.toml", dengage_url=dengage_upstream.base_url)
    tables.write_text(
        tables.read_text().replace("part_spacing_seconds", "status_grace_second = 5\npart_spacing_seconds")
    )
    code, text = check(tables, "contacts", capsys, fmt="text")
    assert code == 2
    assert "FAIL config: [targets.dg] has unknown key 'status_grace_second' (a typo?)" in text
    assert "status_grace_seconds" in text  # the keys it does take are listed
