"""Unit tests of the Slack front end's pure parts: command parsing, permissions, the change preview."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bot.config import load_tables_file
from bot.errors import ConfigError
from bot.preview import diff_versions
from bot.slack.commands import parse_command
from bot.slack.permissions import GroupCache, Permissions, policy_for
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
    assert permissions.can_upload("hosts", ALICE, OPS)
    assert permissions.can_upload("hosts", DAVE, OPS), "through the user group"
    refused = permissions.can_upload("hosts", CAROL, OPS)
    assert not refused and "not on the list" in refused.reason and f"<@{ALICE}>" in refused.reason
    elsewhere = permissions.can_upload("hosts", ALICE, RANDOM)
    assert not elsewhere and f"<#{OPS}>" in elsewhere.reason
    assert permissions.can_upload("contacts", CAROL, OPS), "users = ['*']"
    assert not permissions.can_upload("events", ALICE, OPS), "no keys: nobody, nowhere"
    assert [t.alias for t in permissions.tables_for_channel(OPS)] == ["hosts", "contacts", "gated"]
    assert permissions.tables_for_channel(RANDOM) == []


def test_approval_is_never_by_the_requester(permissions: Permissions) -> None:
    assert permissions.can_approve("gated", BOB, ALICE)
    own = permissions.can_approve("gated", BOB, BOB)
    assert not own and "own upload" in own.reason
    assert not permissions.can_approve("gated", CAROL, ALICE)
    assert permissions.can_manage("hosts", ALICE, ALICE, RANDOM), "the requester may cancel anywhere"
    assert not permissions.can_manage("hosts", CAROL, ALICE, OPS)


def test_malformed_permission_keys_are_config_errors(tmp_path: Path) -> None:
    path = write_tables_file(tmp_path / "t.toml")
    path.write_text(path.read_text().replace("[tables.hosts]\n", '[tables.hosts]\nchannels = "C1"\napproval = "yes"\n'))
    table = load_tables_file(path).table("hosts")
    with pytest.raises(ConfigError, match="approval must be true or false"):
        policy_for(table)
    path.write_text(path.read_text().replace('approval = "yes"', "max_removed_share = 2"))
    with pytest.raises(ConfigError, match="max_removed_share"):
        policy_for(load_tables_file(path).table("hosts"))


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
