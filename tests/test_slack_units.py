"""Unit tests of the Slack front end's pure parts: command parsing, permissions, the tables file's
strictness, rendering (escaping, Block Kit limits, the report CSV), the change preview."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from bot.config import load_tables_file
from bot.errors import ConfigError
from bot.preview import diff_versions
from bot.slack import render
from bot.slack.commands import parse_command
from bot.slack.permissions import GroupCache, Permissions, Person, Place
from bot.validation import Issue, Report, Severity
from tests.fixtures_upstream import write_tables_file
from tests.slack_support import ALICE, BOB, CAROL, DAVE, OPS, RANDOM, write_slack_tables


@pytest.mark.parametrize(
    ("text", "name", "table", "uri", "job"),
    [
        ("", "help", None, None, None),
        ("help", "help", None, None, None),
        ("tables", "tables", None, None, None),
        ("upload hosts s3://b/k.csv", "upload", "hosts", "s3://b/k.csv", None),
        ("validate hosts", "validate", "hosts", None, None),
        ("validate hosts S3://b/k.csv", "validate", "hosts", "S3://b/k.csv", None),
        ("status", "status", None, None, None),
        ("status J1", "status", None, None, "J1"),
        ("jobs", "jobs", None, None, None),
        ("jobs hosts", "jobs", "hosts", None, None),
        ("history hosts", "history", "hosts", None, None),
        ("RESTORE hosts", "restore", "hosts", None, None),
    ],
)
def test_commands_parse(text: str, name: str, table: str | None, uri: str | None, job: str | None) -> None:
    command = parse_command(text)
    assert (command.name, command.table, command.uri, command.job_id) == (name, table, uri, job)
    assert command.note is None


@pytest.mark.parametrize(
    ("text", "note"),
    [
        ("upload hosts", "needs a table and an S3 address"),
        ("upload hosts /tmp/x.csv", "needs a table and an S3 address"),
        ("history", "exactly one table"),
        ("tables hosts", "I don't know"),
        ("frobnicate now", "I don't know `frobnicate now`"),
        ("validate hosts http://x", "`validate` needs"),
    ],
)
def test_wrong_input_becomes_help_with_a_note(text: str, note: str) -> None:
    command = parse_command(text)
    assert command.name == "help" and command.note is not None and note in command.note


@pytest.fixture
def permissions(tmp_path: Path) -> Permissions:
    tables = write_slack_tables(tmp_path / "tables.toml", "http://127.0.0.1:9", "http://127.0.0.1:9/rest")
    groups = {"S0ONCALL1": frozenset({DAVE}), "S0LEADS01": frozenset({BOB})}

    def members(group: str) -> frozenset[str]:
        if group not in groups:
            raise LookupError(group)
        return groups[group]

    return Permissions(tables, members)


def test_upload_needs_the_channel_and_the_person(permissions: Permissions) -> None:
    ops, random = Place(OPS), Place(RANDOM)
    assert permissions.can_upload("hosts", Person(ALICE), ops)
    assert permissions.can_upload("hosts", Person(DAVE), ops), "through the user group"
    refused = permissions.can_upload("hosts", Person(CAROL), ops)
    assert not refused and "not on the list" in refused.reason and f"<@{ALICE}>" in refused.reason
    elsewhere = permissions.can_upload("hosts", Person(ALICE), random)
    assert not elsewhere and f"<#{OPS}>" in elsewhere.reason
    assert permissions.can_upload("contacts", Person(CAROL), ops), "users = ['*']"
    assert not permissions.can_upload("events", Person(ALICE), ops), "no keys: nobody, nowhere"
    assert [t.alias for t in permissions.tables_for_place(ops)] == ["hosts", "contacts", "gated"]
    assert permissions.tables_for_place(random) == []
    dm = Place("D0ALICE01", is_dm=True)
    assert not permissions.can_upload("hosts", Person(ALICE), dm), "no allow_dms: not through a DM"


def test_people_of_another_organisation_are_refused_unless_the_table_allows(permissions: Permissions) -> None:
    outsider = Person(ALICE, external=True)
    refused = permissions.can_upload("hosts", outsider, Place(OPS))
    assert not refused and "Slack Connect" in refused.reason
    assert not permissions.can_approve("gated", Person(BOB, external=True), ALICE)
    assert permissions.visible_tables(outsider) == {"contacts"}, "only the table with allow_external_users"
    assert permissions.visible_tables(Person(ALICE)) == {"hosts", "contacts", "gated"}
    assert permissions.visible_tables(Person(CAROL)) == {"contacts"}, "users = ['*'] lets anyone see contacts"


def test_approval_is_never_by_the_requester(permissions: Permissions) -> None:
    assert permissions.can_approve("gated", Person(BOB), ALICE)
    own = permissions.can_approve("gated", Person(BOB), BOB)
    assert not own and "own upload" in own.reason
    assert not permissions.can_approve("gated", Person(CAROL), ALICE)
    assert permissions.can_confirm("gated", Person(ALICE), ALICE), "the requester confirms removals"
    assert permissions.can_confirm("gated", Person(BOB), ALICE), "so may an approver"
    assert not permissions.can_confirm("gated", Person(CAROL), ALICE)
    assert permissions.can_manage("hosts", Person(ALICE), ALICE, Place(RANDOM)), "the requester may cancel anywhere"
    assert not permissions.can_manage("hosts", Person(CAROL), ALICE, Place(OPS))


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ("aproval = true", "unknown key 'aproval'"),
        ('channels = "C0OPS0001"', "channels must be a list"),
        ('approval = "yes"', "approval must be true or false"),
        ("max_removed_share = 2", "max_removed_share must be a number from 0 to 1"),
        ('users = ["alice"]', "users holds 'alice'"),
        ('approvers = ["C0OPS0001"]', "approvers holds 'C0OPS0001'"),
        ('notify_channels = ["*"]', "notify_channels holds '*'"),
        ("allow_external_users = 1", "allow_external_users must be true or false"),
        ('allow_dms = "true"', "allow_dms must be true or false"),
    ],
)
def test_the_tables_file_is_checked_strictly_when_read(tmp_path: Path, keys: str, message: str) -> None:
    path = write_tables_file(tmp_path / "t.toml")
    path.write_text(path.read_text().replace("[tables.hosts]\n", f"[tables.hosts]\n{keys}\n"))
    with pytest.raises(ConfigError, match=r"\[tables\.hosts\]") as raised:
        load_tables_file(path)
    assert message in str(raised.value)


def test_the_access_keys_are_read_once_at_load(tmp_path: Path) -> None:
    path = write_tables_file(tmp_path / "t.toml")
    keys = (
        'channels = ["C0OPS0001", "*"]\nusers = ["*"]\napprovers = ["U0BOB0001", "S0LEADS01"]\napproval = true\n'
        'notify_channels = ["C0TEAM001"]\nallow_dms = true\nallow_external_users = true\nmax_removed_share = 0.5\n'
    )
    path.write_text(path.read_text().replace("[tables.hosts]\n", f"[tables.hosts]\n{keys}"))
    access = load_tables_file(path).table("hosts").access
    assert access.approval and access.allow_dms and access.allow_external_users
    assert access.notify_channels == ("C0TEAM001",) and access.max_removed_share == 0.5
    assert access.approvers == ("U0BOB0001", "S0LEADS01")


def test_group_members_are_cached_briefly() -> None:
    now = [0.0]
    calls: list[str] = []

    def fetch(group: str) -> list[str]:
        calls.append(group)
        return [ALICE]

    cache = GroupCache(fetch, ttl_seconds=60, clock=lambda: now[0])
    assert cache("S1") == {ALICE} and cache("S1") == {ALICE}
    assert calls == ["S1"]
    now[0] = 61
    cache("S1")
    assert calls == ["S1", "S1"]


def _csv(rows: list[str]) -> io.BytesIO:
    return io.BytesIO(("\n".join(rows) + "\n").encode())


def test_preview_counts_added_removed_changed_by_key() -> None:
    old = ["host,service,owner", "a,s1,o", "b,s2,o", "c,s3,o", "d,s4,o"]
    new = ["owner,host,service", "o,a,s1", "o,b,CHANGED", "o,e,s5"]  # reordered columns compare equal
    preview = diff_versions(_csv(old), _csv(new), ["host"], reopen_old=lambda: _csv(old), previous_job_id="J0")
    assert (preview.old_rows, preview.new_rows, preview.added, preview.removed, preview.changed) == (4, 3, 1, 2, 1)
    assert preview.unchanged == 1 and preview.removed_share == 0.5 and preview.key_columns == ("host",)
    assert [r["host"] for r in preview.removed_examples] == ["c", "d"]
    assert preview.added_examples == ({"owner": "o", "host": "e", "service": "s5"},)
    assert preview.changed_examples == (
        ({"host": "b", "service": "s2", "owner": "o"}, {"owner": "o", "host": "b", "service": "CHANGED"}),
    )


def test_preview_falls_back_to_whole_rows() -> None:
    old = ["host,service", "a,1", "a,2"]  # the key repeats: rows cannot be paired by it
    new = ["host,service", "a,1", "a,3"]
    preview = diff_versions(_csv(old), _csv(new), ["host"])
    assert preview.key_columns == () and (preview.added, preview.removed, preview.changed) == (1, 1, 0)
    unknown = diff_versions(_csv(old), _csv(new), ["missing"])
    assert unknown.key_columns == ()
    empty_old = diff_versions(_csv(["host,service"]), _csv(new), ["host"])
    assert (empty_old.added, empty_old.removed, empty_old.removed_share) == (2, 0, 0.0)


def test_preview_streams_in_batches(tmp_path: Path) -> None:
    n = 30_000
    old = tmp_path / "old.csv"
    new = tmp_path / "new.csv"
    old.write_text("k,v\n" + "".join(f"k{i},{i}\n" for i in range(n)))
    new.write_text("k,v\n" + "".join(f"k{i},{i if i % 3 else -i}\n" for i in range(n // 2, n + 100)))
    with old.open("rb") as o, new.open("rb") as w:
        preview = diff_versions(o, w, ["k"], reopen_old=lambda: old.open("rb"))
    changed = sum(1 for i in range(n // 2, n) if i % 3 == 0 and i != 0)
    assert (preview.added, preview.removed, preview.changed) == (100, n // 2, changed)
    assert len(preview.removed_examples) == 3 and preview.removed_examples[0] == {"k": "k0", "v": "0"}


HOSTILE = "<!channel> <https://evil.example|Re-login here> & `x`"


def test_escaping_leaves_no_markup_from_a_file() -> None:
    assert render.esc(HOSTILE) == "&lt;!channel&gt; &lt;https://evil.example|Re-login here&gt; &amp; `x`"
    spanned = render.code("a`b<!here>\nc")
    assert spanned == "`aˋb&lt;!here&gt;⏎c`" and spanned.count("`") == 2
    assert render.who("<!channel>") == "`&lt;!channel&gt;`", "only id-shaped values become mentions"
    assert render.mention("S0LEADS01") == "<!subteam^S0LEADS01>"


def test_block_kit_limits_never_cut_inside_a_code_span_or_an_entity() -> None:
    text = "x" * 2990 + " `" + "y" * 50 + "`"
    cut = render.fit(text)
    assert len(cut) <= render.SECTION_TEXT_LIMIT and cut.count("`") % 2 == 0 and cut.endswith("…")
    entity = "x" * 2997 + "&amp;" + "z" * 10
    assert not render.fit(entity).removesuffix("…").endswith(("&", "&a", "&am", "&amp"))
    link = "x" * 2990 + "<https://example.com|a link>"
    assert "<" not in render.fit(link)
    text, blocks = render.listing("*t*", [f"line {i} " + "w" * 300 for i in range(2000)])
    assert len(blocks) <= render.MAX_BLOCKS
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks if b["type"] == "section")


def test_the_report_csv_neutralises_formula_cells() -> None:
    issues = [
        Issue("unknown_column", Severity.ERROR, 1, '=HYPERLINK("http://evil")', "unknown column", "=1+1"),
        Issue("invalid_integer", Severity.ERROR, 2, "+n", "-3 is not a number", "@SUM(A1)"),
    ]
    report = Report(valid=False, rows=1, columns=["a"], issues=issues, issue_counts={})
    rows = list(csv.reader(io.StringIO(render.report_csv(report).decode())))
    assert rows[0] == ["line", "column", "code", "severity", "message", "value"]
    assert rows[1][1].startswith("'=") and rows[1][5] == "'=1+1"
    assert rows[2][1] == "'+n" and rows[2][4] == "'-3 is not a number" and rows[2][5] == "'@SUM(A1)"
    assert render.report_file_name("<!here>.csv") == "here-report.csv"
