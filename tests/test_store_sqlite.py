"""What only the embedded store has: several processes on one file, purging, the file itself."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.errors import JobConflict, JobNotFound, StoreUnavailable
from bot.store import JobState, SqliteJobStore
from bot.store.model import Job
from tests.store_support import START, ManualClock, new_job

S = JobState


def _race_in_process(path: str, job: Job, worker: int, barrier: Any, results: Any) -> None:
    store = SqliteJobStore(path, clock=lambda: START)
    barrier.wait(timeout=60)
    try:
        store.transition(job, S.VALIDATING, actor=f"process-{worker}", reason="race")
    except JobConflict as conflict:
        results.put(("conflict", conflict.current.version))
    else:
        results.put(("won", worker))
    finally:
        store.close()


def test_processes_racing_on_one_file_one_wins(tmp_path: Path) -> None:
    path = str(tmp_path / "jobs.sqlite3")
    store = SqliteJobStore(path, clock=lambda: START)
    job, _ = store.create_job("Ev1", new_job())
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    results = ctx.Queue()
    processes = [ctx.Process(target=_race_in_process, args=(path, job, i, barrier, results)) for i in range(4)]
    for p in processes:
        p.start()
    outcomes = [results.get(timeout=60) for _ in processes]
    for p in processes:
        p.join(timeout=30)
    winners = [o for o in outcomes if o[0] == "won"]
    assert len(winners) == 1
    assert sorted(o for o in outcomes if o[0] == "conflict") == [("conflict", 2)] * 3
    history = store.history_for_job(job.job_id)
    assert [h.actor for h in history] == ["U012ALICE", f"process-{winners[0][1]}"]


def test_purge_removes_only_what_expired(tmp_path: Path) -> None:
    clock = ManualClock()
    store = SqliteJobStore(tmp_path / "jobs.sqlite3", clock=clock, retention=timedelta(days=7))
    ended, _ = store.create_job("Ev1", new_job())
    ended = store.transition(ended, S.CANCELLED, actor="U1", reason="wrong file")
    open_job, _ = store.create_job("Ev2", new_job())
    clock.advance(timedelta(days=6).total_seconds())
    assert store.purge_expired() == 0
    clock.advance(timedelta(days=2).total_seconds())
    assert store.purge_expired() == 4  # the ended job, its 2 history lines, its delivery key
    with pytest.raises(JobNotFound):
        store.get_job(ended.job_id)
    assert store.history_for_job(ended.job_id) == []
    # An open job, its history and its delivery key never expire, however old.
    assert store.get_job(open_job.job_id) == open_job
    assert len(store.history_for_job(open_job.job_id)) == 1
    assert store.create_job("Ev2", new_job()) == (open_job, False)
    assert store.create_job("Ev1", new_job())[1] is True  # the ended job's key went with it


def test_file_outlives_the_store_and_memory_is_private(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    first = SqliteJobStore(path, clock=lambda: START)
    job, _ = first.create_job("Ev1", new_job())
    first.close()
    again = SqliteJobStore(path, clock=lambda: START)
    assert again.get_job(job.job_id) == job
    assert again.create_job("Ev1", new_job()) == (job, False)
    memory = SqliteJobStore(":memory:", clock=lambda: START)
    assert memory.recent_jobs() == []


def test_threads_share_one_memory_store() -> None:
    store = SqliteJobStore(":memory:", clock=lambda: START)
    job, _ = store.create_job("Ev1", new_job())
    won: list[Job] = []
    lost: list[JobConflict] = []

    def run() -> None:
        try:
            won.append(store.transition(job, S.VALIDATING, actor="t", reason="r"))
        except JobConflict as exc:
            lost.append(exc)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == 7


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreUnavailable, match="schema version 99"):
        SqliteJobStore(path)
