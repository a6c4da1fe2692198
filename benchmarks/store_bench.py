"""Job store throughput: SQLite (file) and DynamoDB Local, the same operations on both.

    .venv/bin/python benchmarks/store_bench.py [--jobs 500] [--threads 4] [--rounds 2]

For each store: create N jobs from `--threads` threads (one store per thread, as separate workers
would), walk each through received → validating → queued → uploading → submitted → done, and
query the due index; prints operations per second for each phase. DynamoDB Local is started
here (in memory) exactly as the tests start it; its numbers say nothing about real DynamoDB
latency, only about the number and shape of our requests. Each round uses a fresh table/file;
the first DynamoDB round includes the JVM warming up, later rounds are the steady state.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

from bot.store import DynamoJobStore, Job, JobState, JobStore, NewJob, SqliteJobStore, create_table  # noqa: E402
from tests.fixtures_servers import FAKE_AWS, start_dynamodb_local  # noqa: E402

WALK = (JobState.VALIDATING, JobState.QUEUED, JobState.UPLOADING, JobState.SUBMITTED, JobState.DONE)


def run(name: str, open_store: Callable[[], JobStore], jobs: int, threads: int) -> None:
    stores = [open_store() for _ in range(threads)]
    start = datetime.now(UTC)

    def create(worker: int) -> list[Job]:
        made = []
        for n in range(worker, jobs, threads):
            new = NewJob(
                table=f"t{n % 5}",
                target="bp",
                requested_by="U1",
                source="F1",
                file_name="a.csv",
                next_check_at=start + timedelta(seconds=n),
            )
            made.append(stores[worker].create_job(f"Ev{n}", new)[0])
        return made

    def walk(worker: int, mine: list[Job]) -> None:
        for created in mine:
            job = created
            for state in WALK:
                job = stores[worker].transition(job, state, actor="bench", reason="bench")

    with ThreadPoolExecutor(threads) as pool:
        t0 = time.perf_counter()
        created = list(pool.map(create, range(threads)))
        t1 = time.perf_counter()
        due = stores[0].due_jobs(start + timedelta(seconds=jobs), limit=jobs)
        t2 = time.perf_counter()
        list(pool.map(walk, range(threads), created))
        t3 = time.perf_counter()
    assert len(due) == jobs, len(due)
    print(
        f"{name:9} create {jobs / (t1 - t0):8.0f}/s   due query ({jobs} rows) {t2 - t1:6.3f}s   "
        f"transitions {jobs * len(WALK) / (t3 - t2):8.0f}/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for round_no in range(args.rounds):
            path = Path(tmp) / f"jobs-{round_no}.sqlite3"
            run("sqlite", lambda path=path: SqliteJobStore(path), args.jobs, args.threads)
        server = start_dynamodb_local(Path(tmp))
        try:

            def client() -> object:
                return boto3.client(
                    "dynamodb", endpoint_url=server.endpoint, config=Config(max_pool_connections=32), **FAKE_AWS
                )

            for _ in range(args.rounds):
                table = f"bench-{uuid.uuid4().hex[:8]}"
                create_table(client(), table)  # type: ignore[arg-type]
                run("dynamodb", lambda table=table: DynamoJobStore(client(), table), args.jobs, args.threads)  # type: ignore[arg-type]
        finally:
            server.stop()


if __name__ == "__main__":
    main()
