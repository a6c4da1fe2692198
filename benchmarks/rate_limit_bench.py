"""One rate limit across processes: 4 pollers (separate processes) on DynamoDB Local.

Starts DynamoDB Local, one BigPanda sandbox serving `--orgs` organizations (one token each, its
own limit of 5 requests a second), one D·engage sandbox (one upsert per table every
`--spacing` seconds, the bench's stand-in for the vendor's minute), the local Slack API and a
staging folder; queues jobs round-robin over the tables, then runs `--processes` poller
processes, each built by `bot.wiring.build_poller` from the environment (as a Lambda container
is), until every job has ended. Then it reads the sandboxes' request logs and prints, per round:

- the most requests in any one second per BigPanda organization (limit 5) and for the D·engage
  caller address (limit 30);
- the smallest gap between two upsert calls on one D·engage table (limit: `--spacing`);
- 429 answers seen, jobs/s, endings.

Rounds: `store` (the deployment's pacing: rate slots in the job store, what ships) and, with
`--baseline`, `process` first (each process paces only itself: what the bot did before), so
both figures come from the same run.

    .venv/bin/python benchmarks/rate_limit_bench.py --baseline
    .venv/bin/python benchmarks/rate_limit_bench.py --jobs 120 --processes 4
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HOSTS = b"host,service,owner\nweb-1,checkout,alice\nweb-2,search,bob\n"
CONTACTS = b"contact_key,email,city\nc1,a@example.com,Izmir\nc2,b@example.com,Ankara\n"
CHANNEL = "C0RATE001"
USER = "U0RATE001"


def peak_in_any_second(times: list[float], window: float = 1.0) -> int:
    """The most request arrivals within any window of `window` seconds (half-open)."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def worker(pacing: str, stop_file: Path) -> None:
    """One poller process: build it from the environment, run until the stop file appears."""
    import threading

    import httpx

    from bot.targets import LimiterRegistry
    from bot.wiring import TargetClients, build_poller

    poller = build_poller(os.environ)
    if pacing == "process":  # the baseline: each process paces only its own requests
        http = httpx.Client(timeout=httpx.Timeout(60, connect=5))
        service = poller.service
        service.worker = dataclasses.replace(  # type: ignore[attr-defined]
            service.worker,  # type: ignore[attr-defined]
            client_for=TargetClients(http, os.environ, LimiterRegistry()),
        )
    stop = threading.Event()

    def watch() -> None:
        while not stop_file.exists():
            time.sleep(0.2)
        stop.set()

    threading.Thread(target=watch, daemon=True).start()
    while not stop.is_set():
        poller.run(stop=stop)


def run_round(pacing: str, args: argparse.Namespace, endpoint: str, work: Path) -> dict[str, Any]:
    import boto3
    from slack_sdk import WebClient

    from bot.config import load_tables_file
    from bot.staging import FolderStaging
    from bot.store import DynamoJobStore, JobState, NewJob, create_table
    from devtools.sandbox import start_sandbox
    from devtools.sandbox.admin import SandboxAdmin
    from devtools.slack_api import LocalSlackApi
    from tests.fixtures_servers import FAKE_AWS

    round_dir = work / pacing
    round_dir.mkdir()
    table_name = f"jobs-{uuid.uuid4().hex[:8]}"
    client = boto3.client("dynamodb", endpoint_url=endpoint, **FAKE_AWS)  # type: ignore[call-overload]
    create_table(client, table_name)
    store = DynamoJobStore(client, table_name)
    tokens = [f"rate-bench-token-{i}" for i in range(args.orgs)]
    common = {"latency_seconds": args.latency, "job_seconds": args.job_seconds, "retry_after": "1"}
    bigpanda = start_sandbox("bigpanda", {**common, "tokens": tokens})
    dengage = start_sandbox("dengage", {**common, "table_call_spacing_seconds": args.spacing})
    admins = {"bigpanda": SandboxAdmin(bigpanda.root_url), "dengage": SandboxAdmin(dengage.root_url)}
    slack = LocalSlackApi()
    slack.start()
    slack.add_channel(CHANNEL, "rate-bench")
    slack.add_user(USER, "bench")
    web = WebClient(token=slack.bot_token, base_url=slack.base_url)

    lines, aliases = [], []
    for i in range(args.orgs):
        lines.append(
            f'[targets.bp{i}]\nkind = "bigpanda"\nbase_url = "{bigpanda.base_url}"\ntoken_env = "RATE_TOKEN_{i}"\n'
            "max_retry_after_seconds = 5\n"
        )
        for t in range(args.tables):
            admins["bigpanda"].define_table(f"org{i}_e{t}", {"query": ["host"], "result": ["service", "owner"]})
            lines.append(f'[tables.bp{i}_t{t}]\ntarget = "bp{i}"\nenrichment_id = "org{i}_e{t}"\n')
            aliases.append(f"bp{i}_t{t}")
    lines.append(
        f'[targets.dg]\nkind = "dengage"\nbase_url = "{dengage.base_url}"\nuserkey_env = "RATE_USERKEY"\n'
        f'password_env = "RATE_PASSWORD"\npart_spacing_seconds = {args.spacing}\nmax_retry_after_seconds = 5\n'
    )
    for t in range(args.dengage_tables):
        admins["dengage"].define_table(
            f"contacts_{t}",
            {"columns": [{"name": "contact_key", "primary": True}, {"name": "email"}, {"name": "city"}]},
        )
        lines.append(
            f'[tables.dg_t{t}]\ntarget = "dg"\ntable_name = "contacts_{t}"\n'
            'columns = ["contact_key", "email", "city"]\nprimary_key = ["contact_key"]\n'
        )
    (round_dir / "tables.toml").write_text("\n".join(lines))
    tables = load_tables_file(round_dir / "tables.toml")
    staging = FolderStaging(round_dir / "staging")

    dengage_aliases = [f"dg_t{t}" for t in range(args.dengage_tables)]
    order = [*aliases * (args.jobs // max(1, len(aliases)) + 1)][: args.jobs]
    order += dengage_aliases * args.dengage_jobs_per_table
    ids = []
    for n, alias in enumerate(order):
        key = f"uploads/{alias}/rate{n}/normalized.csv"
        staging.put(key, [CONTACTS if alias.startswith("dg") else HOSTS])
        parent = slack.post_user_message(CHANNEL, USER, f"upload {n}")
        status = web.chat_postMessage(channel=CHANNEL, thread_ts=parent["ts"], text="queued")
        job, _ = store.create_job(
            f"rate-{n}",
            NewJob(
                table=alias,
                target=tables.table(alias).target.name,
                requested_by=USER,
                source=f"F{n}",
                file_name=f"{alias}.csv",
                channel_id=CHANNEL,
                thread_ts=parent["ts"],
                status_ts=status["ts"],
                staging_key=key,
            ),
        )
        job = store.transition(job, JobState.VALIDATING, actor="bench", reason="bench")
        ids.append(store.transition(job, JobState.QUEUED, actor="bench", reason="bench").job_id)
    for admin in admins.values():
        admin._call("DELETE", "requests")

    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TABLEBOT_CONFIG": str(round_dir / "tables.toml"),
        "TABLEBOT_JOBS_TABLE": table_name,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "TABLEBOT_STAGING_DIR": str(round_dir / "staging"),
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_API_BASE_URL": slack.base_url,
        "TABLEBOT_POLL_RUN_SECONDS": "55",
        "TABLEBOT_POLL_WORKERS": str(args.workers),
        "TABLEBOT_POLL_PER_TARGET": str(args.workers),
        "TABLEBOT_POLL_FIRST_CHECK_SECONDS": "0.3",
        "TABLEBOT_POLL_MAX_CHECK_SECONDS": "1",
        "TABLEBOT_ERROR_RETRY_SECONDS": "1",
        "RATE_USERKEY": "demo-userkey",
        "RATE_PASSWORD": "demo-password",
        **{f"RATE_TOKEN_{i}": token for i, token in enumerate(tokens)},
    }
    stop_file = round_dir / "stop"
    started = time.time()
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", pacing, "--stop-file", str(stop_file)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=(round_dir / f"worker-{i}.log").open("wb"),
        )
        for i in range(args.processes)
    ]
    open_ids = set(ids)
    while open_ids and time.time() - started < args.timeout:
        if all(proc.poll() is not None for proc in procs):
            print(f"every poller process exited; see {round_dir}/worker-*.log", file=sys.stderr)
            break
        time.sleep(0.5)
        open_ids = {i for i in open_ids if (j := store.get_job(i)).notice_pending or not j.is_terminal}
    elapsed = time.time() - started
    stop_file.touch()
    for proc in procs:
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()

    endings = Counter(store.get_job(i).state.value for i in ids)
    api = [r for r in admins["bigpanda"].requests() if not r["path"].startswith("/_sandbox")]
    by_org: dict[str, list[float]] = defaultdict(list)
    for r in api:
        by_org[str(r["key"])].append(r["time"])
    dg_log = [r for r in admins["dengage"].requests() if not r["path"].startswith("/_sandbox")]
    by_table: dict[str, list[float]] = defaultdict(list)
    for r in dg_log:  # every call on a table, a refused (429) one too: the rule counts calls
        if r["method"] == "POST" and r.get("table"):
            by_table[r["table"]].append(r["time"])
    gaps = [b - a for times in by_table.values() for a, b in itertools.pairwise(sorted(times))]
    result = {
        "pacing": pacing,
        "jobs": len(ids),
        "seconds": elapsed,
        "endings": dict(endings),
        "not_ended": len(open_ids),
        "bigpanda_peak_per_org": {k: peak_in_any_second(v) for k, v in sorted(by_org.items())},
        "bigpanda_requests": len(api),
        "bigpanda_429": sum(1 for r in api if r["status"] == 429),
        "dengage_peak": peak_in_any_second([r["time"] for r in dg_log]),
        "dengage_min_table_gap": min(gaps) if gaps else None,
        "dengage_upserts": sum(len(v) for v in by_table.values()),
        "dengage_429": sum(1 for r in dg_log if r["status"] == 429),
    }
    slack.stop()
    bigpanda.stop()
    dengage.stop()
    for admin in admins.values():
        admin.close()
    client.delete_table(TableName=table_name)
    return result


def report(r: dict[str, Any], args: argparse.Namespace) -> None:
    peaks = r["bigpanda_peak_per_org"]
    gap = r["dengage_min_table_gap"]
    print(
        f"\n[{r['pacing']} pacing] {args.processes} poller processes, {r['jobs']} jobs in {r['seconds']:.1f} s "
        f"({r['jobs'] / r['seconds']:.1f} jobs/s); endings {r['endings']}"
        + (f"; NOT ENDED {r['not_ended']}" if r["not_ended"] else "")
    )
    print(
        f"  BigPanda: max requests in any 1 s per organization {max(peaks.values(), default=0)} "
        f"(limit 5; per org {list(peaks.values())}), {r['bigpanda_requests']} requests, 429s: {r['bigpanda_429']}"
    )
    print(
        f"  D·engage: max requests in any 1 s {r['dengage_peak']} (limit 30); smallest gap between two upserts "
        f"on one table {gap:.3f} s (limit {args.spacing:g} s)"
        if gap is not None
        else f"  D·engage: max requests in any 1 s {r['dengage_peak']}; fewer than two upserts on any table"
    )
    print(f"  D·engage: {r['dengage_upserts']} upserts, 429s: {r['dengage_429']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", choices=("store", "process"), help=argparse.SUPPRESS)
    parser.add_argument("--stop-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--workers", type=int, default=4, help="threads per poller process")
    parser.add_argument("--jobs", type=int, default=80, help="BigPanda jobs (round-robin over orgs and tables)")
    parser.add_argument("--orgs", type=int, default=2)
    parser.add_argument("--tables", type=int, default=10, help="BigPanda tables per organization")
    parser.add_argument("--dengage-tables", type=int, default=3)
    parser.add_argument("--dengage-jobs-per-table", type=int, default=3)
    parser.add_argument("--spacing", type=float, default=3.0, help="D·engage seconds between calls on one table")
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--job-seconds", type=float, default=0.5)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--baseline", action="store_true", help="first a round where each process paces itself")
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.stop_file)
        return

    from tests.fixtures_servers import start_dynamodb_local

    with tempfile.TemporaryDirectory(prefix="tablebot-rate-bench-") as tmp:
        work = Path(tmp)
        server = start_dynamodb_local(work)
        try:
            rounds = ["process", "store"] if args.baseline else ["store"]
            for pacing in rounds:
                report(run_round(pacing, args, server.endpoint, work), args)
                sys.stdout.flush()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
