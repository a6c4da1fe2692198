"""The scheduled poller under load: many due jobs over several targets, sandboxes with latency.

Starts one BigPanda sandbox per organization (each its own rate limit of 5 requests a second),
one D·engage sandbox, the local Slack API and a SQLite job store; queues `--jobs` jobs round-robin
over `--tables` tables per target (each with a staged normalized file and a Slack thread), then
runs pollers (threads, like overlapping Lambda runs) until every job has ended. Prints:

- jobs per second (queue to last ending), the steps taken;
- upstream requests per second per target: mean, and the peak in any one-second window, against
  the documented limit (never above it), and how many 429s the sandboxes answered;
- delay from an upstream job ending (the sandbox's end time of the last part) to its Slack post.

    .venv/bin/python benchmarks/poller_bench.py --jobs 1000
    .venv/bin/python benchmarks/poller_bench.py --jobs 200 --latency 0.05   # a modest run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slack_sdk import WebClient  # noqa: E402

from bot.config import load_tables_file  # noqa: E402
from bot.poller import Poller, PollerSettings, RunReport  # noqa: E402
from bot.service import JobService, PollSettings  # noqa: E402
from bot.slack.notify import SlackNotifier  # noqa: E402
from bot.staging import FolderStaging  # noqa: E402
from bot.store import JobState, NewJob, SqliteJobStore  # noqa: E402
from bot.targets import LimiterRegistry  # noqa: E402
from bot.wiring import TargetClients  # noqa: E402
from devtools.sandbox import SandboxServer, start_sandbox  # noqa: E402
from devtools.sandbox.admin import SandboxAdmin  # noqa: E402
from devtools.slack_api import LocalSlackApi  # noqa: E402

CHANNEL = "C0BENCH01"
USER = "U0BENCH01"
HOSTS = b"host,service,owner\nweb-1,checkout,alice\nweb-2,search,bob\n"
CONTACTS = b"contact_key,email,city\nc1,a@example.com,Izmir\nc2,b@example.com,Ankara\n"
LIMITS = {"bigpanda": 5.0, "dengage": 30.0}


def peak_per_second(times: list[float]) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--orgs", type=int, default=3, help="BigPanda organizations (one sandbox each)")
    parser.add_argument("--tables", type=int, default=20, help="tables per target")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds added to every upstream answer")
    parser.add_argument("--job-seconds", type=float, default=1.0, help="upstream job duration")
    parser.add_argument("--pollers", type=int, default=2, help="pollers running at once")
    parser.add_argument("--workers", type=int, default=8, help="threads per poller")
    parser.add_argument("--per-target", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tablebot-poller-bench-"))
    settings = {"latency_seconds": args.latency, "job_seconds": args.job_seconds, "table_call_spacing_seconds": 0.0}
    sandboxes: dict[str, SandboxServer] = {}
    tokens = [f"bench-token-{i}" for i in range(args.orgs)]
    for i, token in enumerate(tokens):
        sandboxes[f"bp{i}"] = start_sandbox("bigpanda", {**settings, "tokens": [token]})
    sandboxes["dg"] = start_sandbox("dengage", settings)
    admins = {name: SandboxAdmin(s.root_url) for name, s in sandboxes.items()}
    env = {f"BENCH_TOKEN_{i}": t for i, t in enumerate(tokens)}
    env.update(BENCH_USERKEY="demo-userkey", BENCH_PASSWORD="demo-password")

    lines: list[str] = []
    table_names: list[str] = []
    for i in range(args.orgs):
        url = sandboxes[f"bp{i}"].base_url
        lines += [f'[targets.bp{i}]\nkind = "bigpanda"\nbase_url = "{url}"\ntoken_env = "BENCH_TOKEN_{i}"\n']
        for t in range(args.tables):
            admins[f"bp{i}"].define_table(
                f"e{t}",
                {
                    "fields": [
                        {"title": "host", "type": "query_tag"},
                        {"title": "service", "type": "result_tag"},
                        {"title": "owner", "type": "result_tag"},
                    ]
                },
            )
            lines.append(f'[tables.bp{i}_t{t}]\ntarget = "bp{i}"\nenrichment_id = "e{t}"\n')
            table_names.append(f"bp{i}_t{t}")
    dg_url = sandboxes["dg"].base_url
    lines.append(
        f'[targets.dg]\nkind = "dengage"\nbase_url = "{dg_url}"\nuserkey_env = "BENCH_USERKEY"\n'
        'password_env = "BENCH_PASSWORD"\npart_spacing_seconds = 0.0\n'
    )
    for t in range(args.tables):
        admins["dg"].define_table(
            f"contacts_{t}",
            {
                "columns": [
                    {"name": "contact_key", "type": "TEXT", "primary": True},
                    {"name": "email", "type": "EMAIL"},
                    {"name": "city", "type": "TEXT"},
                ]
            },
        )
        lines.append(
            f'[tables.dg_t{t}]\ntarget = "dg"\ntable_name = "contacts_{t}"\n'
            'columns = ["contact_key", "email", "city"]\nprimary_key = ["contact_key"]\n'
        )
        table_names.append(f"dg_t{t}")
    (work / "tables.toml").write_text("\n".join(lines))
    tables = load_tables_file(work / "tables.toml")

    slack = LocalSlackApi()
    slack.start()
    slack.add_channel(CHANNEL, "bench")
    slack.add_user(USER, "bench")
    web = WebClient(token=slack.bot_token, base_url=slack.base_url)
    store = SqliteJobStore(work / "jobs.sqlite3")
    staging = FolderStaging(work / "staging")

    print(f"queueing {args.jobs} jobs over {len(table_names)} tables ({args.orgs} BigPanda orgs + D·engage)…")
    jobs = []
    for n in range(args.jobs):
        table = table_names[n % len(table_names)]
        data = CONTACTS if table.startswith("dg") else HOSTS
        key = f"uploads/{table}/bench{n}/normalized.csv"
        staging.put(key, [data])
        parent = slack.post_user_message(CHANNEL, USER, f"upload {n}")
        status = web.chat_postMessage(channel=CHANNEL, thread_ts=parent["ts"], text="queued")
        job, _ = store.create_job(
            f"bench-{n}",
            NewJob(
                table=table,
                target=tables.table(table).target.name,
                requested_by=USER,
                source=f"F{n}",
                file_name=f"{table}.csv",
                channel_id=CHANNEL,
                thread_ts=parent["ts"],
                status_ts=status["ts"],
                staging_key=key,
            ),
        )
        job = store.transition(job, JobState.VALIDATING, actor="bench", reason="bench")
        jobs.append(store.transition(job, JobState.QUEUED, actor="bench", reason="bench"))
    for admin in admins.values():
        httpx.delete(f"{admin.root_url}/_sandbox/requests")

    poll = PollSettings(
        first_check_seconds=0.5,
        max_check_seconds=2.0,
        lease_seconds=120,
        error_retry_seconds=1.0,
        gate_recheck_seconds=1.0,
    )
    loop = PollerSettings(run_seconds=55, idle_seconds=0.2, workers=args.workers, per_target=args.per_target)
    http = httpx.Client(timeout=httpx.Timeout(60, connect=5), limits=httpx.Limits(max_connections=64))
    pacing = LimiterRegistry()  # one process: every poller shares the targets' limiters, as one Lambda container
    pollers = [
        Poller(
            store,
            JobService(
                store,
                staging,
                tables,
                TargetClients(http, env, pacing),
                SlackNotifier(web),
                settings=poll,
                worker_id=f"bench-{i}",
            ),
            loop,
        )
        for i in range(args.pollers)
    ]
    stop = threading.Event()
    reports: list[RunReport] = []

    def run(poller: Poller) -> None:
        while not stop.is_set():
            reports.append(poller.run(stop=stop))

    started = time.time()
    threads = [threading.Thread(target=run, args=(p,)) for p in pollers]
    for thread in threads:
        thread.start()
    ids = [j.job_id for j in jobs]
    open_ids = set(ids)
    while open_ids and time.time() - started < args.timeout:
        time.sleep(0.5)
        # Ended AND told: an ended job whose notice is still pending is not finished.
        open_ids = {i for i in open_ids if (j := store.get_job(i)).notice_pending or not j.is_terminal}
    elapsed = time.time() - started
    stop.set()
    for thread in threads:
        thread.join()

    finals = [store.get_job(i) for i in ids]
    states = Counter(j.state.value for j in finals)
    steps: Counter[str] = Counter()
    for report in reports:
        steps.update(report.steps)
    print(f"\n{len(finals)} jobs in {elapsed:.1f} s: {len(finals) / elapsed:.1f} jobs/s; endings {dict(states)}")
    print(f"steps: {dict(steps)}")
    if open_ids:
        print(f"NOT ENDED: {len(open_ids)} jobs")

    print("\nupstream requests per target (limit per organization / caller address):")
    ended_at: dict[str, float] = {}
    for name, admin in admins.items():
        log = [r for r in admin.requests() if not r["path"].startswith("/_sandbox")]
        times = [r["time"] for r in log]
        kind = "dengage" if name == "dg" else "bigpanda"
        span = (max(times) - min(times)) if len(times) > 1 else 1.0
        too_many = sum(1 for r in log if r["status"] == 429)
        print(
            f"  {name:4} {len(log):5} requests, mean {(len(log) - 1) / span:5.2f}/s, peak {peak_per_second(times):3d} "
            f"in any 1 s (limit {LIMITS[kind]:g}/s), 429 answers: {too_many}"
        )
        for upstream in admin.jobs():
            if upstream.get("ended"):
                ended_at[upstream["id"]] = upstream["ended"]

    delays = []
    for job in finals:
        if not job.upstream_parts or job.thread_ts is None:
            continue
        end = ended_at.get(job.upstream_parts[-1].upstream_job_id)
        posts = slack.thread(CHANNEL, job.thread_ts)[2:]
        if end is not None and posts:
            delays.append(float(posts[0]["ts"]) - end)
    if delays:
        delays.sort()
        print(
            f"\nupstream end → Slack notice: median {statistics.median(delays):.2f} s, "
            f"p95 {delays[int(0.95 * (len(delays) - 1))]:.2f} s, max {delays[-1]:.2f} s ({len(delays)} jobs)"
        )
    posts_per_job = Counter(len(slack.thread(CHANNEL, j.thread_ts)) - 2 for j in finals if j.thread_ts)
    print(f"ending posts per job: {dict(posts_per_job)} (must be {{1: {len(finals)}}})")

    slack.stop()
    for server in sandboxes.values():
        server.stop()
    http.close()
    store.close()


if __name__ == "__main__":
    main()
