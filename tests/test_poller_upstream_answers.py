"""The poller against the answers the real services may give (both targets, over HTTP, SQLite and
DynamoDB Local): unknown status words told once, unreadable statuses within the grace period, a
429 waited for, and a job never sent to anything but what its file was checked against."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import TablesFile
from bot.staging import FolderStaging
from bot.store import JobStore
from bot.targets import identity_json
from devtools.slack_api import LocalSlackApi
from tests.fixtures_upstream import Upstream
from tests.poller_support import ALICE, CHANNEL, CONTACTS_CSV, HOSTS_CSV, S, World, all_ended, run_until
from tests.store_support import job_store

FILES = {"hosts": HOSTS_CSV, "contacts": CONTACTS_CSV}
TABLE_OF = {"bigpanda": "hosts", "dengage": "contacts"}


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    yield from job_store(request, tmp_path)


@pytest.fixture
def slack() -> Iterator[LocalSlackApi]:
    with LocalSlackApi() as api:
        api.add_channel(CHANNEL, "ops")
        api.add_user(ALICE, "alice")
        yield api


@pytest.fixture
def world(tmp_path: Path, store: JobStore, slack: LocalSlackApi, upstream_tables: TablesFile, http: Any) -> World:
    return World(store, FolderStaging(tmp_path / "staging"), upstream_tables, slack, http)


@pytest.fixture
def upstreams(bigpanda_upstream: Upstream, dengage_upstream: Upstream) -> dict[str, Upstream]:
    return {"bigpanda": bigpanda_upstream, "dengage": dengage_upstream}


def with_target_options(world: World, **options: object) -> None:
    """Both targets of the world's tables file with extra options (as if the file said so)."""
    targets = {n: dataclasses.replace(t, options={**t.options, **options}) for n, t in world.tables.targets.items()}
    tables = {a: dataclasses.replace(t, target=targets[t.target.name]) for a, t in world.tables.tables.items()}
    world.tables = dataclasses.replace(world.tables, targets=targets, tables=tables)


@pytest.mark.parametrize("target", ["bigpanda", "dengage"])
def test_an_unknown_status_word_is_kept_and_told_once_in_the_thread(
    target: str, world: World, upstreams: dict[str, Upstream]
) -> None:
    upstreams[target].admin.settings(status_words={"done": "Finito"}, job_seconds=0.1)
    alias = TABLE_OF[target]
    job = world.queue_job(alias, FILES[alias])
    poller = world.poller()

    def told() -> bool:
        return "which the bot does not know" in world.status_text(job)

    run_until([poller], told, timeout=20)
    current = world.store.get_job(job.job_id)
    assert current.upstream_status == "Finito"  # verbatim in the job record
    assert current.unknown_status_reads >= 3
    label = "BigPanda" if target == "bigpanda" else "D·engage"
    assert f"{label} answers status “Finito”, which the bot does not know; still checking until" in (
        world.status_text(job)
    )
    assert current.state is S.SUBMITTED  # still checked, never a silent failure or success


@pytest.mark.parametrize("target", ["bigpanda", "dengage"])
def test_a_404_after_creation_is_tolerated_and_the_done_word_recorded(
    target: str, world: World, upstreams: dict[str, Upstream]
) -> None:
    upstreams[target].admin.settings(status_not_found_seconds=0.5, location_header=False, status_case="upper")
    alias = TABLE_OF[target]
    job = world.queue_job(alias, FILES[alias])
    run_until([world.poller()], all_ended(world.store, [job]), timeout=20)
    final = world.store.get_job(job.job_id)
    assert final.state is S.DONE
    assert final.upstream_status in ("DONE", "COMPLETED")
    assert final.status_unreadable_since is None


@pytest.mark.parametrize("target", ["bigpanda", "dengage"])
def test_past_the_grace_period_an_unreadable_status_fails_the_job_saying_what_was_seen(
    target: str, world: World, upstreams: dict[str, Upstream]
) -> None:
    upstreams[target].admin.settings(status_not_found_seconds=60, location_header=False)
    with_target_options(world, status_grace_seconds=0.6)
    alias = TABLE_OF[target]
    job = world.queue_job(alias, FILES[alias])
    run_until([world.poller()], all_ended(world.store, [job]), timeout=20)
    final = world.store.get_job(job.job_id)
    assert final.state is S.FAILED
    assert final.last_error is not None
    assert "could not be read for" in final.last_error and "(the bot waits 0.6 s)" in final.last_error
    assert "404" in final.last_error
    assert len(world.endings(job)) == 1


@pytest.mark.parametrize("target", ["bigpanda", "dengage"])
def test_a_429_on_sending_is_rate_limited_and_sent_after_retry_after(
    target: str, world: World, upstreams: dict[str, Upstream]
) -> None:
    admin = upstreams[target].admin
    admin.settings(retry_after="0.5")
    path = "/map" if target == "bigpanda" else "/dataspace/async/upsert"
    admin.fault("429", count=1, path=path, method="POST")
    alias = TABLE_OF[target]
    job = world.queue_job(alias, FILES[alias])
    seen: list[str | None] = []
    poller = world.poller()

    def ended() -> bool:
        seen.append(world.store.get_job(job.job_id).last_error)
        return all_ended(world.store, [job])()

    run_until([poller], ended, timeout=20)
    assert world.store.get_job(job.job_id).state is S.DONE
    assert any(e and "rate limited" in e and "Retry-After" in e for e in seen)
    sends = admin.requests(path, method="POST")
    assert sends[0]["status"] == 429
    assert sends[1]["time"] - sends[0]["time"] >= 0.5


def test_bigpanda_a_job_checked_for_one_enrichment_is_not_sent_to_another(
    world: World, bigpanda_upstream: Upstream
) -> None:
    checked = world.tables.table("hosts")
    schema = checked.configured_schema()
    assert schema is not None
    job = world.queue_job("hosts", HOSTS_CSV, identity=identity_json(checked, schema))
    # The tables file changes while the job waits: the alias now names another enrichment.
    moved = dataclasses.replace(checked, enrichment_id="other-enrichment")
    world.tables = dataclasses.replace(world.tables, tables={**world.tables.tables, "hosts": moved})
    run_until([world.poller()], all_ended(world.store, [job]), timeout=20)
    final = world.store.get_job(job.job_id)
    assert final.state is S.FAILED
    assert final.last_error is not None
    assert "the table's settings changed after this file was checked" in final.last_error
    assert "enrichment_id: demo → other-enrichment" in final.last_error
    assert "Share it again" in final.last_error
    assert bigpanda_upstream.admin.requests("/map") == []  # nothing was sent


def test_dengage_a_file_checked_against_city_is_not_sent_to_a_table_now_with_town(
    world: World, dengage_upstream: Upstream
) -> None:
    checked = world.tables.table("contacts")
    schema = checked.configured_schema()
    assert schema is not None
    job = world.queue_job("contacts", CONTACTS_CSV, identity=identity_json(checked, schema))
    columns = tuple(dataclasses.replace(c, name="town") if c.name == "city" else c for c in schema.columns)
    world.tables = dataclasses.replace(
        world.tables, tables={**world.tables.tables, "contacts": dataclasses.replace(checked, columns=columns)}
    )
    run_until([world.poller()], all_ended(world.store, [job]), timeout=20)
    final = world.store.get_job(job.job_id)
    assert final.state is S.FAILED and final.last_error is not None
    assert "columns: contact_key key,email,city → contact_key key,email,town" in final.last_error
    assert dengage_upstream.admin.requests("/dataspace/async/upsert", method="POST") == []
    assert len(world.endings(job)) == 1


def test_the_same_identity_is_sent(world: World, dengage_upstream: Upstream) -> None:
    checked = world.tables.table("contacts")
    schema = checked.configured_schema()
    assert schema is not None
    job = world.queue_job("contacts", CONTACTS_CSV, identity=identity_json(checked, schema))
    run_until([world.poller()], all_ended(world.store, [job]), timeout=20)
    assert world.store.get_job(job.job_id).state is S.DONE
