"""One contract, two stores: every test here runs against SQLite and against DynamoDB Local."""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import pytest

from bot.errors import InvalidTransition, JobConflict, JobNotFound, LeaseHeld
from bot.store import ALLOWED_TRANSITIONS, DEFAULT_RETENTION, Job, JobState, JobStore, UpstreamPart
from tests.store_support import START, Backend, dynamodb_backend, new_job, sqlite_backend

S = JobState
T = TypeVar("T")


@pytest.fixture(params=["sqlite", "dynamodb"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        made = sqlite_backend(tmp_path / "jobs.sqlite3")
    else:
        made = dynamodb_backend(request.getfixturevalue("dynamodb_endpoint"))
    yield made
    made.close()


@pytest.fixture
def store(backend: Backend) -> JobStore:
    return backend.open()


def walk(store: JobStore, job: Job, *states: JobState, actor: str = "worker-1") -> Job:
    for state in states:
        job = store.transition(job, state, actor=actor, reason=f"to {state}")
    return job


def race(n: int, action: Callable[[int], T]) -> tuple[list[T], list[BaseException]]:
    """Run `action(i)` on n real threads released at the same moment; results and errors."""
    barrier = threading.Barrier(n)
    results: list[T] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        barrier.wait()
        try:
            value = action(i)
        except BaseException as exc:
            with lock:
                errors.append(exc)
        else:
            with lock:
                results.append(value)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results, errors


# -- creation -----------------------------------------------------------------------------------


def test_same_delivery_three_times_makes_one_job(store: JobStore) -> None:
    outcomes = [store.create_job("Ev0001", new_job()) for _ in range(3)]
    assert [created for _, created in outcomes] == [True, False, False]
    assert len({job.job_id for job, _ in outcomes}) == 1
    assert outcomes[1][0] == outcomes[0][0]
    assert len(store.recent_jobs("hosts")) == 1
    assert len(store.history_for_job(outcomes[0][0].job_id)) == 1


def test_duplicate_deliveries_racing_make_one_job(backend: Backend) -> None:
    stores = [backend.open() for _ in range(6)]
    results, errors = race(6, lambda i: stores[i].create_job("F0123FILE:C0OPS", new_job()))
    assert errors == []
    assert sum(1 for _, created in results if created) == 1
    assert len({job.job_id for job, _ in results}) == 1
    assert len(stores[0].recent_jobs(None)) == 1


def test_different_deliveries_make_different_jobs(store: JobStore) -> None:
    first, _ = store.create_job("Ev1", new_job())
    second, created = store.create_job("Ev2", new_job())
    assert created and first.job_id != second.job_id


def test_new_job_starts_received_and_due_now(backend: Backend, store: JobStore) -> None:
    job, _ = store.create_job("Ev1", new_job())
    assert job.state is S.RECEIVED and job.version == 1
    assert job.created_at == job.updated_at == START
    assert job.next_check_at == START
    assert job.expires_at is None and job.finished_at is None
    assert [j.job_id for j in store.due_jobs(START)] == [job.job_id]


def test_every_field_round_trips(store: JobStore) -> None:
    job, _ = store.create_job("Ev1", new_job(status_ts="1715000000.000200", size_bytes=0))
    job = store.update(
        job,
        changes={
            "row_count": 42,
            "upstream_parts": (
                UpstreamPart(index=1, count=2, upstream_job_id="c750243a_1662894455_indexcsv", status="pending"),
                UpstreamPart(index=2, count=2, upstream_job_id="5f1d-uuid"),
            ),
            "last_error": "line 3, column host: empty value — fill it in",
            "approver": "U034BOB",
            "notified": True,
            "notice_claimed_by": "poller-7",
            "notice_claimed_at": START + timedelta(microseconds=123457),
        },
    )
    assert store.get_job(job.job_id) == job
    assert job.upstream_job_ids == ("c750243a_1662894455_indexcsv", "5f1d-uuid")
    assert job.size_bytes == 0


def test_missing_job_is_not_found(store: JobStore) -> None:
    with pytest.raises(JobNotFound, match="nope"):
        store.get_job("nope")


# -- transitions --------------------------------------------------------------------------------


def test_transition_writes_state_version_and_history(store: JobStore) -> None:
    job, _ = store.create_job("Ev1", new_job())
    moved = store.transition(job, S.VALIDATING, actor="worker-1", reason="file staged")
    assert (moved.state, moved.version) == (S.VALIDATING, 2)
    assert store.get_job(job.job_id) == moved


def test_invalid_transition_is_refused_and_nothing_written(store: JobStore) -> None:
    job, _ = store.create_job("Ev1", new_job())
    with pytest.raises(InvalidTransition, match="cannot go from received to done") as caught:
        store.transition(job, S.DONE, actor="worker-1", reason="skip ahead")
    assert set(caught.value.allowed) == {S.VALIDATING, S.CANCELLED}
    assert store.get_job(job.job_id) == job
    assert len(store.history_for_job(job.job_id)) == 1


def test_no_cancel_after_submitted_and_no_way_out_of_done(store: JobStore) -> None:
    job, _ = store.create_job("Ev1", new_job())
    job = walk(store, job, S.VALIDATING, S.QUEUED, S.UPLOADING, S.SUBMITTED)
    with pytest.raises(InvalidTransition):
        store.transition(job, S.CANCELLED, actor="U1", reason="too late")
    done = store.transition(job, S.DONE, actor="poller", reason="upstream done")
    for state in JobState:
        with pytest.raises(InvalidTransition, match="none: the job has ended"):
            store.transition(done, state, actor="U1", reason="again")


@pytest.mark.parametrize("state", [S.RECEIVED, S.VALIDATING, S.AWAITING_APPROVAL, S.QUEUED, S.UPLOADING])
def test_cancel_from_any_state_before_submitted(store: JobStore, state: JobState) -> None:
    job, _ = store.create_job("Ev1", new_job())
    path = {
        S.RECEIVED: (),
        S.VALIDATING: (S.VALIDATING,),
        S.AWAITING_APPROVAL: (S.VALIDATING, S.AWAITING_APPROVAL),
        S.QUEUED: (S.VALIDATING, S.QUEUED),
        S.UPLOADING: (S.VALIDATING, S.QUEUED, S.UPLOADING),
    }[state]
    job = walk(store, job, *path)
    cancelled = store.transition(job, S.CANCELLED, actor="U012ALICE", reason="cancel button")
    assert cancelled.state is S.CANCELLED and cancelled.is_terminal


def test_stale_copy_gets_conflict_with_current_record(store: JobStore) -> None:
    job, _ = store.create_job("Ev1", new_job())
    current = store.transition(job, S.VALIDATING, actor="worker-1", reason="first")
    with pytest.raises(JobConflict) as caught:
        store.transition(job, S.CANCELLED, actor="U1", reason="stale")
    assert caught.value.current == current
    assert caught.value.expected_version == 1
    with pytest.raises(JobConflict) as caught_update:
        store.update(job, changes={"status_ts": "1.2"})
    assert caught_update.value.current == current


def test_transition_on_missing_job_is_not_found(store: JobStore) -> None:
    job, _ = store.create_job("Ev1", new_job())
    ghost = type(job)(**{**{f: getattr(job, f) for f in job.__dataclass_fields__}, "job_id": "ghost"})
    with pytest.raises(JobNotFound):
        store.transition(ghost, S.VALIDATING, actor="w", reason="r")


def test_eight_workers_racing_for_one_transition_one_wins(backend: Backend) -> None:
    first = backend.open()
    job, _ = first.create_job("Ev1", new_job())
    job = walk(first, job, S.VALIDATING, S.QUEUED, S.UPLOADING, S.SUBMITTED)
    workers = [backend.open() for _ in range(8)]

    # Each poller saw the upstream job end and tries to win the right to post the ending.
    def finish(i: int) -> Job:
        return workers[i].transition(
            job, S.DONE, actor=f"poller-{i}", reason="upstream done", changes={"notified": True}
        )

    results, errors = race(8, finish)
    assert len(results) == 1, errors
    winner = results[0]
    assert len(errors) == 7
    for error in errors:
        assert isinstance(error, JobConflict)
        assert error.current == winner
    history = first.history_for_job(job.job_id)
    assert [h.to_state for h in history].count(S.DONE) == 1
    assert first.get_job(job.job_id).notified is True


def test_update_keeps_state_and_refuses_read_only_fields(store: JobStore) -> None:
    job, _ = store.create_job("Ev1", new_job())
    job = walk(store, job, S.VALIDATING, S.QUEUED, S.UPLOADING)
    part = UpstreamPart(index=1, count=1, upstream_job_id="job-1")
    updated = store.update(job, changes={"upstream_parts": (part,)})
    assert updated.state is S.UPLOADING and updated.version == job.version + 1
    assert updated.upstream_parts == (part,)
    assert len(store.history_for_job(job.job_id)) == 4  # updates are not transitions
    with pytest.raises(ValueError, match="state"):
        store.update(updated, changes={"state": S.DONE})


def test_attempts_count_entries_into_uploading_and_retry_reopens(backend: Backend, store: JobStore) -> None:
    job, _ = store.create_job("Ev1", new_job())
    job = walk(store, job, S.VALIDATING, S.QUEUED, S.UPLOADING)
    assert job.attempts == 1
    failed = store.transition(
        job, S.FAILED, actor="worker-1", reason="upstream 500", changes={"last_error": "500", "notified": True}
    )
    assert failed.expires_at is not None and failed.finished_at is not None and failed.next_check_at is None
    backend.clock.advance(60)
    retried = store.transition(failed, S.QUEUED, actor="U012ALICE", reason="Retry button")
    assert retried.expires_at is None and retried.finished_at is None
    assert {h.expires_at for h in store.history_for_job(job.job_id)} == {None}  # open again: kept
    assert retried.notified is False  # the new ending must be posted again
    assert retried.next_check_at == backend.clock()
    assert store.transition(retried, S.UPLOADING, actor="worker-1", reason="again").attempts == 2


# -- due jobs -------------------------------------------------------------------------------------


def test_thousand_jobs_only_due_ones_in_order(backend: Backend) -> None:
    stores = [backend.open() for _ in range(8)]
    offsets = list(range(1000))
    random.Random(7).shuffle(offsets)  # created out of order: the index must do the ordering

    def create(chunk: int) -> None:
        store = stores[chunk]
        for n in offsets[chunk::8]:
            due = START + timedelta(seconds=10 * n)
            store.create_job(f"Ev{n:04d}", new_job(table=f"t{n % 3}", next_check_at=due))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, range(8)))
    store = stores[0]

    now = START + timedelta(seconds=10 * 499 + 5)
    due = store.due_jobs(now, limit=1000)
    assert len(due) == 500
    times = [j.next_check_at for j in due]
    assert times == sorted(times)
    assert all(t is not None and t <= now for t in times)
    assert due[0].delivery_key == "Ev0000" and due[-1].delivery_key == "Ev0499"

    first_ten = store.due_jobs(now, limit=10)
    assert [j.delivery_key for j in first_ten] == [f"Ev{n:04d}" for n in range(10)]
    assert store.due_jobs(START - timedelta(seconds=1)) == []


def test_terminal_jobs_leave_the_due_index(store: JobStore) -> None:
    job, _ = store.create_job("Ev1", new_job())
    other, _ = store.create_job("Ev2", new_job())
    job = walk(store, job, S.VALIDATING, S.QUEUED, S.UPLOADING, S.SUBMITTED)
    assert job.job_id in {j.job_id for j in store.due_jobs(START)}
    store.transition(job, S.TIMED_OUT, actor="poller", reason="no answer in 2 h")
    store.transition(other, S.CANCELLED, actor="U1", reason="wrong file")
    far_future = START + timedelta(days=3650)
    assert store.due_jobs(far_future, limit=100) == []


def test_next_check_time_moves_a_job_in_and_out_of_due(backend: Backend, store: JobStore) -> None:
    job, _ = store.create_job("Ev1", new_job())
    job = walk(store, job, S.VALIDATING, S.AWAITING_APPROVAL)
    assert job.next_check_at is None  # waits for a person, not a machine
    assert store.due_jobs(START + timedelta(days=1)) == []
    later = START + timedelta(minutes=30)
    job = store.update(job, next_check_at=later)  # approval expiry check
    assert store.due_jobs(later - timedelta(seconds=1)) == []
    assert [j.job_id for j in store.due_jobs(later)] == [job.job_id]
    with pytest.raises(ValueError, match="notice is confirmed"):
        store.transition(job, S.CANCELLED, actor="U1", reason="x", changes={"notified": True}, next_check_at=later)


def test_an_ended_job_stays_due_while_its_notice_is_pending(backend: Backend, store: JobStore) -> None:
    job, _ = store.create_job("Ev1", new_job())
    job = walk(store, job, S.VALIDATING, S.QUEUED, S.UPLOADING, S.SUBMITTED)
    leased = store.acquire_lease(job, "w1", ttl_seconds=30)
    assert leased.lease_expires_at is not None
    # The ending and the notice claim in one conditional write; the claimer keeps its lease.
    ended = store.transition(
        leased,
        S.DONE,
        actor="w1",
        reason="upstream done",
        changes={"notice_claimed_by": "w1", "notice_claimed_at": backend.clock()},
        next_check_at=leased.lease_expires_at,
    )
    assert ended.is_terminal and ended.notice_pending and not ended.notified
    assert ended.lease_owner == "w1" and ended.expires_at is not None and ended.finished_at == backend.clock()
    assert store.get_job(job.job_id) == ended
    assert store.due_jobs(backend.clock() + timedelta(seconds=10)) == []  # its claimer is posting
    with pytest.raises(LeaseHeld):
        backend.open().acquire_lease(ended, "w2", ttl_seconds=30)

    # The claimer died: after the lease, the job is offered again, to the poller's states only.
    later = backend.clock.advance(31)
    assert [j.job_id for j in store.due_jobs(later, states={S.DONE, S.QUEUED})] == [job.job_id]
    assert store.due_jobs(later, states={S.RECEIVED, S.VALIDATING}) == []
    other = backend.open()
    taken = other.acquire_lease(ended, "w2", ttl_seconds=30)
    assert taken.lease_owner == "w2" and taken.state is S.DONE
    with pytest.raises(JobConflict):
        store.update(ended, changes={"notified": True})  # w1's copy is stale: its write is fenced off
    claimed = other.update(taken, changes={"notice_claimed_by": "w2", "notice_claimed_at": later})
    assert claimed.next_check_at == ended.next_check_at and claimed.lease_owner == "w2"

    # Confirmed: out of the due index, lease dropped, nothing more to work on.
    confirmed = other.update(claimed, changes={"notified": True})
    assert confirmed.notified and not confirmed.notice_pending
    assert confirmed.next_check_at is None and confirmed.lease_owner is None
    assert store.get_job(job.job_id) == confirmed
    assert store.due_jobs(later + timedelta(days=3650), limit=100) == []
    with pytest.raises(JobConflict, match="ended"):
        store.acquire_lease(confirmed, "w3", ttl_seconds=30)
    with pytest.raises(ValueError, match="terminal"):
        store.update(confirmed, next_check_at=later)


def test_a_pending_notice_is_put_off_and_an_ending_without_one_leaves_at_once(
    backend: Backend, store: JobStore
) -> None:
    job, _ = store.create_job("Ev1", new_job())
    job = walk(store, job, S.VALIDATING, S.QUEUED, S.UPLOADING)
    now = backend.clock()
    ended = store.transition(job, S.FAILED, actor="w1", reason="refused", next_check_at=now)
    assert ended.notice_pending and [j.job_id for j in store.due_jobs(now)] == [job.job_id]
    # Slack was down: the notice waits 30 s, lease given back, still pending.
    put_off = store.update(ended, next_check_at=now + timedelta(seconds=30), release_lease=True)
    assert put_off.notice_pending and store.due_jobs(now) == []
    assert [j.job_id for j in store.due_jobs(now + timedelta(seconds=30))] == [job.job_id]
    with pytest.raises(ValueError, match="notice is confirmed"):
        store.update(put_off, changes={"notified": True}, next_check_at=now)

    # The front end's endings (invalid, cancelled) and an ending given no next check leave at once.
    other, _ = store.create_job("Ev2", new_job())
    other = walk(store, other, S.VALIDATING, S.INVALID)
    assert not other.notice_pending and other.next_check_at is None
    with pytest.raises(JobConflict, match="ended"):
        store.acquire_lease(other, "w1", ttl_seconds=30)
    assert [j.job_id for j in store.due_jobs(now + timedelta(days=1), limit=10)] == [job.job_id]


def test_upload_start_is_kept_and_a_retry_clears_the_old_notice(backend: Backend, store: JobStore) -> None:
    job, _ = store.create_job("Ev1", new_job())
    job = walk(store, job, S.VALIDATING, S.QUEUED)
    assert job.upload_started_at is None
    backend.clock.advance(5)
    uploading = store.transition(job, S.UPLOADING, actor="w1", reason="sending")
    assert uploading.upload_started_at == backend.clock()
    backend.clock.advance(60)
    submitted = store.transition(uploading, S.SUBMITTED, actor="w1", reason="job j1")
    assert submitted.upload_started_at == uploading.upload_started_at
    failed = store.transition(
        submitted,
        S.FAILED,
        actor="w1",
        reason="upstream failed",
        changes={"notified": True, "notice_claimed_by": "w1", "notice_claimed_at": backend.clock()},
    )
    assert store.get_job(job.job_id).upload_started_at == uploading.upload_started_at
    retried = store.transition(failed, S.QUEUED, actor="U012ALICE", reason="Retry button")
    assert retried.upload_started_at is None and retried.notice_claimed_by is None
    assert retried.notice_claimed_at is None and not retried.notified
    assert store.get_job(job.job_id) == retried
    backend.clock.advance(5)
    again = store.transition(retried, S.UPLOADING, actor="w2", reason="again")
    assert again.upload_started_at == backend.clock() and again.attempts == 2


def test_due_jobs_of_some_states_only(backend: Backend, store: JobStore) -> None:
    front, _ = store.create_job("Ev1", new_job())  # received: the front end's
    queued, _ = store.create_job("Ev2", new_job())
    queued = walk(store, queued, S.VALIDATING, S.QUEUED)
    later = backend.clock() + timedelta(seconds=1)
    assert {j.job_id for j in store.due_jobs(later)} == {front.job_id, queued.job_id}
    assert [j.job_id for j in store.due_jobs(later, states=[S.QUEUED, S.SUBMITTED])] == [queued.job_id]
    assert [j.job_id for j in store.due_jobs(later, states=[S.RECEIVED])] == [front.job_id]
    assert store.due_jobs(later, states=[]) == []


# -- leases ---------------------------------------------------------------------------------------


def test_lease_taken_over_after_expiry_not_before(backend: Backend) -> None:
    worker_a, worker_b = backend.open(), backend.open()
    job, _ = worker_a.create_job("Ev1", new_job())
    leased = worker_a.acquire_lease(job, "worker-a", ttl_seconds=30)
    assert (leased.lease_owner, leased.lease_expires_at) == ("worker-a", START + timedelta(seconds=30))
    assert worker_b.due_jobs(START) == []  # leased jobs are not offered

    backend.clock.advance(29)
    with pytest.raises(LeaseHeld) as caught:
        worker_b.acquire_lease(job, "worker-b", ttl_seconds=30)
    assert caught.value.current.lease_owner == "worker-a"
    assert worker_b.due_jobs() == []

    backend.clock.advance(2)  # worker-a crashed: its lease ran out
    offered = worker_b.due_jobs()
    assert [j.job_id for j in offered] == [job.job_id]
    taken = worker_b.acquire_lease(offered[0], "worker-b", ttl_seconds=30)
    assert taken.lease_owner == "worker-b"

    # The crashed worker wakes up with its old copy: its write is refused.
    with pytest.raises(JobConflict) as stale:
        worker_a.transition(leased, S.VALIDATING, actor="worker-a", reason="late")
    assert stale.value.current.lease_owner == "worker-b"


def test_lease_renew_release_and_terminal(backend: Backend, store: JobStore) -> None:
    job, _ = store.create_job("Ev1", new_job())
    job = store.acquire_lease(job, "w1", ttl_seconds=30)
    backend.clock.advance(20)
    job = store.renew_lease(job, "w1", ttl_seconds=30)
    assert job.lease_expires_at == backend.clock() + timedelta(seconds=30)
    with pytest.raises(LeaseHeld):
        store.renew_lease(job, "w2", ttl_seconds=30)
    assert store.release_lease(job, "w2") == job  # not held by w2: nothing changes
    released = store.release_lease(job, "w1")
    assert released.lease_owner is None and released.version == job.version + 1
    assert [j.job_id for j in store.due_jobs()] == [job.job_id]

    # A poll that found the upstream still busy: next look in 30 s, lease dropped, in one write.
    leased = store.acquire_lease(released, "w1", ttl_seconds=300)
    polled = store.update(leased, next_check_at=backend.clock() + timedelta(seconds=30), release_lease=True)
    assert polled.lease_owner is None and polled.version == leased.version + 1
    assert store.due_jobs() == []
    assert [j.job_id for j in store.due_jobs(backend.clock() + timedelta(seconds=30))] == [job.job_id]

    leased = store.acquire_lease(polled, "w1", ttl_seconds=30)
    done = store.transition(leased, S.CANCELLED, actor="U1", reason="cancel")
    assert done.lease_owner is None and done.lease_expires_at is None
    with pytest.raises(JobConflict, match="ended"):
        store.acquire_lease(done, "w2", ttl_seconds=30)


def test_lease_from_a_stale_copy_is_taken_on_the_current_job(store: JobStore) -> None:
    job, _ = store.create_job("Ev1", new_job())
    newer = store.transition(job, S.VALIDATING, actor="w", reason="r")
    leased = store.acquire_lease(job, "w1", ttl_seconds=30)
    assert leased.state is S.VALIDATING and leased.version == newer.version + 1


def test_only_one_of_eight_workers_gets_the_lease(backend: Backend) -> None:
    first = backend.open()
    job, _ = first.create_job("Ev1", new_job())
    workers = [backend.open() for _ in range(8)]
    results, errors = race(8, lambda i: workers[i].acquire_lease(job, f"w{i}", ttl_seconds=60))
    assert len(results) == 1
    assert len(errors) == 7 and all(isinstance(e, JobConflict) for e in errors)
    assert first.get_job(job.job_id).lease_owner == results[0].lease_owner


# -- table gate -----------------------------------------------------------------------------------


def job_ids(store: JobStore, n: int) -> list[str]:
    """Ids of n live jobs: a gate names real jobs (an unknown holder counts as ended)."""
    return [store.create_job(f"gate-{i}", new_job())[0].job_id for i in range(n)]


def test_gate_one_in_flight_per_table_and_release(store: JobStore) -> None:
    a, b = job_ids(store, 2)
    first = store.acquire_table_gate("hosts", a)
    assert first.acquired and first.reason == "acquired"
    second = store.acquire_table_gate("hosts", b)
    assert not second.acquired and second.reason == "held" and second.holder_job_id == a
    assert second.retry_at == START + timedelta(hours=1)
    assert store.acquire_table_gate("services", b).acquired  # other tables are independent
    assert store.release_table_gate("hosts", b) is False  # not the holder
    assert store.release_table_gate("hosts", a) is True
    third = store.acquire_table_gate("hosts", b)
    assert third.acquired and third.reason == "acquired"
    gate = store.get_table_gate("hosts")
    assert gate is not None and gate.holder_job_id == b
    assert store.get_table_gate("nothing") is None


def test_gate_spacing_between_calls(backend: Backend, store: JobStore) -> None:
    a, b = job_ids(store, 2)
    assert store.acquire_table_gate("dx", a, min_spacing_seconds=60).acquired
    backend.clock.advance(10)
    again = store.acquire_table_gate("dx", a, min_spacing_seconds=60)  # part 2 of the same job
    assert not again.acquired and again.reason == "spacing"
    assert again.retry_at == START + timedelta(seconds=60)
    assert store.release_table_gate("dx", a)
    backend.clock.advance(40)
    refused = store.acquire_table_gate("dx", b, min_spacing_seconds=60)
    assert not refused.acquired and refused.reason == "spacing"
    backend.clock.advance(10)
    assert store.acquire_table_gate("dx", b, min_spacing_seconds=60).acquired
    gate = store.get_table_gate("dx")
    assert gate is not None and gate.last_call_at == backend.clock()


def test_gate_taken_over_when_lease_expires(backend: Backend, store: JobStore) -> None:
    a, b = job_ids(store, 2)
    assert store.acquire_table_gate("hosts", a, lease_seconds=100).acquired
    backend.clock.advance(99)
    assert not store.acquire_table_gate("hosts", b, lease_seconds=100).acquired
    assert store.renew_table_gate("hosts", a, lease_seconds=100)
    backend.clock.advance(99)
    assert not store.acquire_table_gate("hosts", b, lease_seconds=100).acquired
    backend.clock.advance(2)
    taken = store.acquire_table_gate("hosts", b, lease_seconds=100)
    assert taken.acquired and taken.reason == "taken_over" and taken.previous_holder_job_id == a
    assert store.renew_table_gate("hosts", a) is False
    assert store.release_table_gate("hosts", a) is False


def test_gate_taken_over_when_holder_job_ended(store: JobStore) -> None:
    holder, _ = store.create_job("Ev1", new_job())
    assert store.acquire_table_gate("hosts", holder.job_id).acquired
    waiting, _ = store.create_job("Ev2", new_job())
    assert not store.acquire_table_gate("hosts", waiting.job_id).acquired
    store.transition(holder, S.CANCELLED, actor="U1", reason="cancel")  # ended without releasing
    taken = store.acquire_table_gate("hosts", waiting.job_id)
    assert taken.acquired and taken.previous_holder_job_id == holder.job_id
    # A holder that is no job we know (expired and purged) does not block either.
    assert store.acquire_table_gate("services", "purged-job").acquired
    assert store.acquire_table_gate("services", waiting.job_id).acquired


def test_gate_race_one_winner(backend: Backend) -> None:
    ids = job_ids(backend.open(), 8)
    workers = [backend.open() for _ in range(8)]
    results, errors = race(8, lambda i: workers[i].acquire_table_gate("hosts", ids[i], min_spacing_seconds=60))
    assert errors == []
    winners = [d for d in results if d.acquired]
    assert len(winners) == 1
    assert all(d.reason == "held" for d in results if not d.acquired)
    gate = workers[0].get_table_gate("hosts")
    assert gate is not None and gate.holder_job_id == winners[0].holder_job_id


# -- history, listings, expiry --------------------------------------------------------------------


def test_history_for_job_in_order(backend: Backend, store: JobStore) -> None:
    job, _ = store.create_job("Ev1", new_job())
    steps = [(S.VALIDATING, "worker-1", "staged"), (S.AWAITING_APPROVAL, "worker-1", "valid, 42 rows")]
    for to, actor, reason in steps:
        backend.clock.advance(5)
        job = store.transition(job, to, actor=actor, reason=reason)
    job = store.acquire_lease(job, "w", ttl_seconds=10)  # not a transition: no history line
    backend.clock.advance(5)
    store.transition(job, S.QUEUED, actor="U034BOB", reason="approved", changes={"approver": "U034BOB"})
    history = store.history_for_job(job.job_id)
    assert [(h.from_state, h.to_state, h.actor) for h in history] == [
        (None, S.RECEIVED, "U012ALICE"),
        (S.RECEIVED, S.VALIDATING, "worker-1"),
        (S.VALIDATING, S.AWAITING_APPROVAL, "worker-1"),
        (S.AWAITING_APPROVAL, S.QUEUED, "U034BOB"),
    ]
    assert [h.at for h in history] == [START + timedelta(seconds=5 * i) for i in range(4)]
    assert history[3].reason == "approved" and history[3].seq == 5
    assert all(h.table == "hosts" and h.job_id == job.job_id for h in history)


def test_history_for_table_in_order_latest_window(backend: Backend, store: JobStore) -> None:
    a, _ = store.create_job("Ev1", new_job())
    backend.clock.advance(1)
    b, _ = store.create_job("Ev2", new_job())
    backend.clock.advance(1)
    store.create_job("Ev3", new_job(table="services"))
    for _ in range(2):
        backend.clock.advance(1)
        a = store.transition(a, S.VALIDATING if a.state is S.RECEIVED else S.QUEUED, actor="w", reason="a")
        backend.clock.advance(1)
        b = store.transition(b, S.VALIDATING if b.state is S.RECEIVED else S.INVALID, actor="w", reason="b")
    history = store.history_for_table("hosts")
    assert [(h.job_id, h.to_state) for h in history] == [
        (a.job_id, S.RECEIVED),
        (b.job_id, S.RECEIVED),
        (a.job_id, S.VALIDATING),
        (b.job_id, S.VALIDATING),
        (a.job_id, S.QUEUED),
        (b.job_id, S.INVALID),
    ]
    assert [h.at for h in history] == sorted(h.at for h in history)
    latest = store.history_for_table("hosts", limit=2)
    assert [(h.job_id, h.to_state) for h in latest] == [(a.job_id, S.QUEUED), (b.job_id, S.INVALID)]
    assert [h.table for h in store.history_for_table("services")] == ["services"]


def test_recent_jobs_newest_first(backend: Backend, store: JobStore) -> None:
    made = []
    for i in range(5):
        backend.clock.advance(1)
        made.append(store.create_job(f"Ev{i}", new_job(table="hosts" if i % 2 == 0 else "services"))[0])
    assert [j.job_id for j in store.recent_jobs(None)] == [j.job_id for j in reversed(made)]
    assert [j.job_id for j in store.recent_jobs("hosts", limit=2)] == [made[4].job_id, made[2].job_id]
    assert [j.job_id for j in store.recent_jobs("services")] == [made[3].job_id, made[1].job_id]
    assert store.recent_jobs("nothing") == []


def test_finished_jobs_get_their_expiry_time(backend: Backend, store: JobStore) -> None:
    job, _ = store.create_job("Ev1", new_job())
    job = walk(store, job, S.VALIDATING, S.QUEUED, S.UPLOADING, S.SUBMITTED)
    assert job.expires_at is None
    assert {h.expires_at for h in store.history_for_job(job.job_id)} == {None}
    backend.clock.advance(3600)
    done = store.transition(job, S.DONE, actor="poller", reason="upstream done")
    expected = math.ceil((START + timedelta(seconds=3600) + DEFAULT_RETENTION).timestamp())
    assert done.finished_at == START + timedelta(seconds=3600)
    assert done.expires_at == expected == store.get_job(job.job_id).expires_at
    # The audit trail lives as long as its job: every line takes the job's expiry when it ends.
    assert {h.expires_at for h in store.history_for_job(job.job_id)} == {expected}

    short = backend.open(retention=timedelta(days=7))
    other, _ = short.create_job("Ev2", new_job())
    ended = walk(short, other, S.VALIDATING, S.INVALID)
    assert ended.expires_at == math.ceil((backend.clock() + timedelta(days=7)).timestamp())


def test_a_much_retried_job_takes_its_whole_history_with_it(backend: Backend, store: JobStore) -> None:
    # 33 Retry rounds: 105 history lines, more than one DynamoDB transaction (100 items) can carry.
    job, _ = store.create_job("Ev1", new_job())
    job = walk(store, job, S.VALIDATING, S.QUEUED, S.UPLOADING)
    for _ in range(33):
        job = walk(store, job, S.FAILED, S.QUEUED, S.UPLOADING, actor="U012ALICE")
    job = walk(store, job, S.SUBMITTED, S.DONE, actor="poller")
    history = store.history_for_job(job.job_id)
    assert len(history) == 1 + 3 + 33 * 3 + 2
    assert [h.seq for h in history] == sorted(h.seq for h in history)
    assert job.attempts == 34
    assert job.expires_at is not None and {h.expires_at for h in history} == {job.expires_at}


def test_allowed_transition_table_is_closed_over_states() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(JobState)
    reached = {S.RECEIVED}
    frontier = [S.RECEIVED]
    while frontier:
        for nxt in ALLOWED_TRANSITIONS[frontier.pop()]:
            if nxt not in reached:
                reached.add(nxt)
                frontier.append(nxt)
    assert reached == set(JobState)


def test_claim_once_answers_the_first_caller_and_tells_the_others_its_value(backend: Backend, store: JobStore) -> None:
    results, errors = race(8, lambda i: store.claim_once("menu:C1:F1", f"U{i} hosts", ttl_seconds=60))
    assert errors == []
    winners = [value for won, value in results if won]
    assert len(winners) == 1, "exactly one caller wins"
    assert all(value == winners[0] for _, value in results), "the others are told the winner's value"
    assert store.claim_once("menu:C1:F2", "other", ttl_seconds=60) == (True, "other"), "keys are separate"
    backend.clock.advance(61)
    assert store.claim_once("menu:C1:F1", "later", ttl_seconds=60) == (True, "later"), "an expired claim is free"
