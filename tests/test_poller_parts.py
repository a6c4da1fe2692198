"""Multi-part D·engage uploads through the poller: parts one after another, spaced by the table
gate across workers, progress shown as part k of n, a failed part naming what was applied."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.staging import FolderStaging
from bot.store import SqliteJobStore
from bot.targets import DengageClient, LimiterRegistry, build_client
from devtools.slack_api import LocalSlackApi
from tests.fixtures_upstream import PART_SPACING, SANDBOX_ENV, Upstream
from tests.poller_support import ALICE, CHANNEL, S, World, all_ended, run_until, write_poller_tables

# Small requests, so a file of a few dozen rows goes in several parts.
SMALL_REQUESTS = "max_request_bytes = 1400"


def events_csv(rows: int, bad_row: int | None = None) -> bytes:
    lines = ["event,happened_at,amount"]
    for i in range(rows):
        amount = "not-a-number" if i == bad_row else f"{i}.25"
        lines.append(f"event-{i:04d},2024-05-01 10:{i % 60:02d}:00,{amount}")
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def world(tmp_path: Path, bigpanda_upstream: Upstream, dengage_upstream: Upstream, http: Any) -> Iterator[World]:
    tables = write_poller_tables(
        tmp_path / "tables.toml", bigpanda_upstream.base_url, dengage_upstream.base_url, SMALL_REQUESTS
    )
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    with LocalSlackApi() as slack:
        slack.add_channel(CHANNEL, "ops")
        slack.add_user(ALICE, "alice")
        yield World(store, FolderStaging(tmp_path / "staging"), tables, slack, http)
    store.close()


def part_count(world: World, data: bytes, tmp_path: Path) -> list[int]:
    """How many rows each part of `data` holds (the plan the poller will follow)."""
    path = tmp_path / "plan.csv"
    path.write_bytes(data)
    table = world.tables.table("events")
    client = build_client(table.target, world.http, SANDBOX_ENV, pacing=LimiterRegistry())
    assert isinstance(client, DengageClient)
    return [r.rows for r in client.plan(table, path).ranges]


def test_parts_go_one_after_another_spaced_by_the_gate_across_workers(
    world: World, dengage_upstream: Upstream, tmp_path: Path
) -> None:
    data = events_csv(40)
    parts = part_count(world, data, tmp_path)
    assert len(parts) >= 3
    job = world.queue_job("events", data)
    # Two workers with their own in-process pacing: only the store's table gate keeps them apart.
    pollers = [world.poller(world.service(worker_id=f"w{i}")) for i in range(2)]
    run_until(pollers, all_ended(world.store, [job]), timeout=60)

    final = world.store.get_job(job.job_id)
    assert final.state is S.DONE
    assert [(p.index, p.count, p.status) for p in final.upstream_parts] == [
        (i, len(parts), "done") for i in range(1, len(parts) + 1)
    ]
    upserts = dengage_upstream.admin.requests("/async/upsert", method="POST")
    assert [r["status"] for r in upserts] == [200] * len(parts), "one call per part, none refused"
    times = [r["time"] for r in upserts]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) >= PART_SPACING - 0.05, gaps
    stored = dengage_upstream.admin.table("demo_events", limit=1000)
    assert "event-0039" in str(stored) and "event-0000" in str(stored)
    versions = [v["text"] for v in world.slack.message_versions(CHANNEL, job.status_ts or "")]
    assert any(f"part 2 of {len(parts)}" in text for text in versions), versions
    assert len(world.endings(job)) == 1


def test_failed_part_stops_the_job_and_says_which_parts_were_applied(
    world: World, dengage_upstream: Upstream, tmp_path: Path
) -> None:
    rows = part_count(world, events_csv(40), tmp_path)
    bad = rows[0] + 1  # a row inside part 2
    job = world.queue_job("events", events_csv(40, bad_row=bad))
    run_until([world.poller()], all_ended(world.store, [job]), timeout=60)

    final = world.store.get_job(job.job_id)
    assert final.state is S.FAILED
    assert [p.status for p in final.upstream_parts] == ["done", "failed"]
    [post] = world.endings(job)
    n = len(rows)
    assert f"Part 2 of {n}" in post["text"] and "part 1 was applied" in post["text"]
    assert f"parts 3–{n} were not sent" in post["text"]
    assert len(dengage_upstream.admin.requests("/async/upsert", method="POST")) == 2

    # Retry resumes at the failed part: part 1 is not appended a second time.
    service = world.service()
    queued = service.retry_job(job.job_id, ALICE)
    assert [(p.index, p.status) for p in queued.upstream_parts] == [(1, "done")]
    run_until([world.poller(service)], all_ended(world.store, [job]), timeout=60)
    assert len(dengage_upstream.admin.requests("/async/upsert", method="POST")) == 3  # part 2 again, failing again
    assert world.store.get_job(job.job_id).state is S.FAILED
