"""`tablebot demo`: the real bot, end to end, on embedded defaults, with no accounts.

Everything production runs, run locally: the local Slack Web API server (`devtools.slack_api`)
plays Slack, the BigPanda and D·engage sandboxes play the vendors, the job store is the embedded
SQLite one and staging is a folder. The bot is the Lambda handler of `handlers/slack_events.py`
around the Bolt app of `bot.slack.app`, fed Slack-signed requests; its lazy re-invocation runs
the same handler on a thread (as Lambda would run a second invocation). The poller of
`bot.wiring` works in a background thread in short runs, as the one-minute schedule starts them.

A scripted conversation in #ops-tables, one thread per upload:

1. alice shares `hosts.csv` saved by a spreadsheet (byte order mark, CRLF): repaired, done;
2. alice shares a broken hosts file: not uploaded, each issue with its line, column and fix;
3. alice shares `contacts.csv` for a D·engage table together with the spreadsheet it came from
   (`contacts.xlsx`): each file is resolved on its own; the spreadsheet gets a line saying what
   is accepted, the CSV is upserted in spaced parts, done;
4. alice shares an update whose upstream job fails: failed, with a Retry button; she clicks it: done.

Each ending is checked three ways: the job in the store, the words in the thread, and what the
sandbox holds (the upstream table equals the file after a done upload, and nothing reached it
for the broken one). The threads are printed as a person reads them; any unexpected ending makes
the demo exit 1.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TextIO

import httpx
from slack_sdk import WebClient

from bot.config import TablesFile, load_tables_file
from bot.poller import Poller
from bot.slack.app import build_app
from bot.slack.render import RETRY_ACTION_ID
from bot.slack.wiring import build_slack_deps
from bot.staging import FolderStaging
from bot.store import Job, JobState, JobStore, SqliteJobStore
from bot.wiring import build_poller
from devtools.sandbox import SandboxServer, start_sandbox
from devtools.sandbox.admin import SandboxAdmin
from devtools.slack_api import LocalSlackApi, SlackRequestSigner
from handlers.slack_events import Handle, make_handler

S = JobState
CHANNEL, CHANNEL_NAME = "C0OPSTBL1", "ops-tables"
ALICE, BOB = "U0ALICE01", "U0BOB0001"
SIGNING_SECRET = "demo-signing-secret"  # noqa: S105 - the local Slack server's, not a real secret
WAIT_SECONDS = 20.0  # for one ending; the whole demo takes about 10 s

# Small parts and a short spacing so the multi-part upsert is visible within seconds: the
# ~14 KB request of 300 contacts goes in four parts instead of one.
PART_BYTES = 4096
PART_SPACING_SECONDS = 1.0
JOB_SECONDS = 1.0

_DEMO_ENV = {
    "DEMO_BIGPANDA_TOKEN": "demo-bigpanda-token",
    "DEMO_DENGAGE_USERKEY": "demo-userkey",
    "DEMO_DENGAGE_PASSWORD": "demo-password",
    "SLACK_SIGNING_SECRET": SIGNING_SECRET,
    # The local Slack server hosts shared files on 127.0.0.1 over plain HTTP.
    "TABLEBOT_SLACK_FILE_HOSTS": "127.0.0.1",
    "TABLEBOT_ALLOW_HTTP_DOWNLOADS": "1",
    # The poller's waits in tenths of a second instead of seconds (production: 2, 30, 600, 30).
    "TABLEBOT_POLL_RUN_SECONDS": "2",
    "TABLEBOT_POLL_FIRST_CHECK_SECONDS": "0.2",
    "TABLEBOT_POLL_MAX_CHECK_SECONDS": "0.5",
    "TABLEBOT_LEASE_SECONDS": "30",
    "TABLEBOT_NOTICE_RETRY_SECONDS": "0.5",
    "TABLEBOT_ERROR_RETRY_SECONDS": "0.5",
    "TABLEBOT_JOB_TIMEOUT_SECONDS": "60",
}
# What Lambda passes as the context; Bolt's lazy runner reads the function name from it.
_LAMBDA_CONTEXT = SimpleNamespace(
    function_name="tablebot-slack",
    invoked_function_arn="arn:aws:lambda:local:000000000000:function:tablebot-slack",
)


# ---------------------------------------------------------------------------------------------
# The files alice shares


HOSTS_HEADER = ["host", "service", "owner"]
HOSTS_ROWS = [[f"web-{i:02d}", "checkout", "team-payments"] for i in range(1, 13)]
# The update of scenario 4: one owner changed and two hosts added (a small change: no confirmation).
HOSTS_UPDATE_ROWS = [
    *HOSTS_ROWS[:-1],
    ["web-12", "checkout", "team-search"],
    ["web-13", "search", "team-search"],
    ["web-14", "search", "team-search"],
]
CONTACTS_HEADER = ["contact_key", "email", "city"]
CONTACTS_ROWS = [[f"c{i:04d}", f"user{i}@example.com", "Istanbul" if i % 3 else "Izmir"] for i in range(1, 301)]


def _csv_bytes(header: list[str], rows: list[list[str]], *, delimiter: str = ",", spreadsheet: bool = False) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="\r\n" if spreadsheet else "\n").writerows([header, *rows])
    data = buffer.getvalue().encode()
    return b"\xef\xbb\xbf" + data if spreadsheet else data  # as Excel's "CSV UTF-8" saves it


BROKEN_HOSTS = (
    b"host,service,owner\n"
    b"web-01,checkout,team-payments\n"
    b"web-02,checkout\n"  # a value missing
    b'web-03,"search\nindex",team-search\n'  # a line break inside a value
    b"web-01,checkout,team-payments\n"  # the first row again
)


# ---------------------------------------------------------------------------------------------
# The parts, started as production starts them, but local


class _InProcessLambda:
    """boto3's Lambda `invoke` as the lazy listeners use it: the same handler, on a thread."""

    def __init__(self) -> None:
        self.handle: Handle | None = None
        self.errors: list[str] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def invoke(self, FunctionName: str, InvocationType: str = "Event", Payload: str = "{}") -> dict[str, Any]:
        thread = threading.Thread(target=self._run, args=(json.loads(Payload),), name="lambda-lazy", daemon=True)
        with self._lock:
            self._threads.append(thread)
        thread.start()
        return {"StatusCode": 202}

    def _run(self, event: dict[str, Any]) -> None:
        assert self.handle is not None
        try:
            answer = self.handle(event, _LAMBDA_CONTEXT)
            if answer.get("statusCode") != 200:
                self.errors.append(f"the lazy invocation answered {answer.get('statusCode')}")
        except Exception as exc:  # shown as an unexpected ending, never as a traceback
            self.errors.append(f"the lazy invocation raised {type(exc).__name__}")

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class _PollerThread:
    """The scheduled poller: short runs one after another until stopped."""

    def __init__(self, poller: Poller) -> None:
        self.poller = poller
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="poller-schedule", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poller.run(stop=self._stop)
            except Exception as exc:  # a run that dies is reported; the next run starts anyway
                self.errors.append(f"a poller run raised {type(exc).__name__}")
                self._stop.wait(0.5)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _write_tables(path: Path, bigpanda_url: str, dengage_url: str) -> TablesFile:
    path.write_text(
        f"""
[targets.bigpanda]
kind = "bigpanda"
base_url = "{bigpanda_url}"
token_env = "DEMO_BIGPANDA_TOKEN"

[targets.dengage]
kind = "dengage"
base_url = "{dengage_url}"
userkey_env = "DEMO_DENGAGE_USERKEY"
password_env = "DEMO_DENGAGE_PASSWORD"
part_spacing_seconds = {PART_SPACING_SECONDS}
max_request_bytes = {PART_BYTES}

[tables.hosts]
target = "bigpanda"
enrichment_id = "demo"
columns = {json.dumps(HOSTS_HEADER)}
query_columns = ["host"]
channels = ["{CHANNEL}"]
users = ["{ALICE}", "{BOB}"]

[tables.contacts]
target = "dengage"
table_name = "demo_contacts"
columns = {json.dumps(CONTACTS_HEADER)}
primary_key = ["contact_key"]
channels = ["{CHANNEL}"]
users = ["{ALICE}"]
""",
        encoding="utf-8",
    )
    return load_tables_file(path)


@dataclass
class _Bot:
    """The running world: Slack, the sandboxes, and the bot between them."""

    slack: LocalSlackApi
    signer: SlackRequestSigner
    handle: Handle
    lambdas: _InProcessLambda
    store: JobStore
    bigpanda: SandboxAdmin
    dengage: SandboxAdmin
    poller: _PollerThread

    def share(self, user: str, name: str, content: bytes, text: str) -> str:
        """A person shares a CSV in the channel; Slack sends the signed event to the bot."""
        hosted = self.slack.register_file(name, content, user=user, channel=CHANNEL)
        message = self.slack.share_file(CHANNEL, user, hosted["id"], text=text)
        self._deliver(self.signer.file_share_event(CHANNEL, message))
        return str(message["ts"])

    def share_files(self, user: str, files: list[tuple[str, bytes]], text: str) -> str:
        """A person shares several files in one message (one event, `files[]` holds them all)."""
        ids = [
            self.slack.register_file(name, content, user=user, channel=CHANNEL, filetype=name.rsplit(".", 1)[-1])["id"]
            for name, content in files
        ]
        message = self.slack.post_user_message(CHANNEL, user, text, files=ids)
        self._deliver(self.signer.file_share_event(CHANNEL, message))
        return str(message["ts"])

    def click(self, thread_ts: str, action_id: str, user: str) -> None:
        """A person clicks a button in the thread (the latest message that has it)."""
        for message in reversed(self.slack.thread(CHANNEL, thread_ts)):
            try:
                request = self.signer.click_button(message, action_id, user_id=user, channel_id=CHANNEL)
            except LookupError:
                continue
            self._deliver(request)
            return
        raise _Unexpected(f"no {action_id!r} button in the thread")

    def _deliver(self, request: Any) -> None:
        answer = self.handle(request.lambda_event(), _LAMBDA_CONTEXT)
        if answer.get("statusCode") != 200:
            raise _Unexpected(f"the bot answered Slack's request with HTTP {answer.get('statusCode')}")

    def job_of(self, thread_ts: str) -> Job | None:
        return next((j for j in self.store.recent_jobs(limit=50) if j.thread_ts == thread_ts), None)

    def ending(self, thread_ts: str, *, after_version: int = 0) -> Job:
        """The thread's job once it has ended and its ending is in the thread."""

        def ended() -> Job | None:
            job = self.job_of(thread_ts)
            if job is None or job.version <= after_version or not job.is_terminal or job.notice_pending:
                return None
            return job

        deadline = time.monotonic() + WAIT_SECONDS
        while (job := ended()) is None:
            if time.monotonic() > deadline:
                seen = self.job_of(thread_ts)
                raise _Unexpected(f"no ending within {WAIT_SECONDS:.0f} s (the job is {_state_of(seen)})")
            time.sleep(0.1)
        self.lambdas.join(WAIT_SECONDS)  # the thread's last words (a report file) are posted
        return job

    def transcript(self, thread_ts: str) -> str:
        return self.slack.thread_transcript(CHANNEL, thread_ts)

    def status_history(self, job: Job) -> list[str]:
        """The status message's texts as it was edited in place, first line of each, repeats dropped."""
        if not job.status_ts:
            return []
        texts: list[str] = []
        for version in self.slack.message_versions(CHANNEL, job.status_ts):
            text = str(version.get("text", "")).strip().splitlines()[0] if version.get("text") else ""
            if text and (not texts or texts[-1] != text):
                texts.append(text)
        return texts


class _Unexpected(Exception):
    """Something in the conversation went other than expected (the reason, in words)."""


def _state_of(job: Job | None) -> str:
    return "not created" if job is None else str(job.state)


# ---------------------------------------------------------------------------------------------
# The scenarios


@dataclass
class Outcome:
    """One scenario's ending: what was expected, what happened, and what differs."""

    title: str
    expected: JobState
    state: JobState | None = None
    thread_ts: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def as_expected(self) -> bool:
        return not self.problems


def _expect_words(transcript: str, *words: str) -> list[str]:
    return [f"the thread does not say {w!r}" for w in words if w.lower() not in transcript.lower()]


def _stored_rows(admin: SandboxAdmin, table_id: str, header: list[str]) -> list[list[str]]:
    """The sandbox's stored table as rows in `header`'s column order, sorted (order is not content)."""
    stored = admin.table(table_id, limit=1000)
    columns = stored.get("header") or stored.get("columns") or []
    if sorted(columns) != sorted(header):
        return []
    where = [columns.index(name) for name in header]
    return sorted([str(row[i]) if row[i] is not None else "" for i in where] for row in stored.get("rows", []))


def _bigpanda_rows(admin: SandboxAdmin) -> list[list[str]]:
    return _stored_rows(admin, "demo", HOSTS_HEADER)


def _dengage_rows(admin: SandboxAdmin) -> list[list[str]]:
    return _stored_rows(admin, "demo_contacts", CONTACTS_HEADER)


def _table_equals(what: str, stored: list[list[str]], expected: list[list[str]]) -> list[str]:
    if stored == sorted(expected):
        return []
    if len(stored) != len(expected):
        return [f"{what} holds {len(stored)} rows, not the file's {len(expected)}"]
    return [f"{what} holds {len(stored)} rows, but not the file's"]


def _table_unchanged(what: str, before: list[list[str]], after: list[list[str]]) -> list[str]:
    return [] if before == after else [f"{what} changed ({len(before)} rows before, {len(after)} after)"]


def _scenario_good_hosts(bot: _Bot, outcome: Outcome) -> None:
    outcome.thread_ts = bot.share(ALICE, "hosts.csv", _csv_bytes(HOSTS_HEADER, HOSTS_ROWS, spreadsheet=True), "hosts")
    job = bot.ending(outcome.thread_ts)
    outcome.state = job.state
    transcript = bot.transcript(outcome.thread_ts)
    outcome.problems += _expect_words(transcript, "valid: 12 rows", "byte order mark", "Done")
    outcome.problems += _table_equals("BigPanda's table", _bigpanda_rows(bot.bigpanda), HOSTS_ROWS)


def _scenario_broken_hosts(bot: _Bot, outcome: Outcome) -> None:
    sent_before, table_before = len(bot.bigpanda.requests("/map")), _bigpanda_rows(bot.bigpanda)
    outcome.thread_ts = bot.share(ALICE, "hosts-new.csv", BROKEN_HOSTS, "hosts")
    job = bot.ending(outcome.thread_ts)
    outcome.state = job.state
    transcript = bot.transcript(outcome.thread_ts)
    outcome.problems += _expect_words(transcript, "Not uploaded", "line 3", "line 4, column", "line 6")
    if len(bot.bigpanda.requests("/map")) != sent_before:
        outcome.problems.append("the broken file reached BigPanda")
    outcome.problems += _table_unchanged("BigPanda's table", table_before, _bigpanda_rows(bot.bigpanda))


def _scenario_contacts_in_parts(bot: _Bot, outcome: Outcome) -> None:
    contacts = _csv_bytes(CONTACTS_HEADER, CONTACTS_ROWS)
    spreadsheet = b"PK\x03\x04" + b"\x00" * 60  # the .xlsx it was exported from, shared by mistake too
    files = [("contacts.xlsx", spreadsheet), ("contacts.csv", contacts)]
    outcome.thread_ts = bot.share_files(ALICE, files, "contacts, the spring campaign list")
    job = bot.ending(outcome.thread_ts)
    outcome.state = job.state
    transcript = bot.transcript(outcome.thread_ts)
    outcome.problems += _expect_words(transcript, "contacts.xlsx", "I take CSV", "valid: 300 rows", "Done")
    parts = {p.count for p in job.upstream_parts}
    if job.state is S.DONE and (len(job.upstream_parts) < 2 or parts != {len(job.upstream_parts)}):
        outcome.problems.append(f"sent in {len(job.upstream_parts)} part(s), expected several")
    if job.state is S.DONE and not any("part 2 of" in t.lower() for t in bot.status_history(job)):
        outcome.problems.append("the status message never showed the parts")
    outcome.problems += _table_equals("D·engage's table", _dengage_rows(bot.dengage), CONTACTS_ROWS)


def _scenario_failed_then_retried(bot: _Bot, outcome: Outcome) -> None:
    table_before = _bigpanda_rows(bot.bigpanda)
    bot.bigpanda.fault("job_failed")  # BigPanda's next job ends failed
    update = _csv_bytes(HOSTS_HEADER, HOSTS_UPDATE_ROWS)
    outcome.thread_ts = bot.share(ALICE, "hosts.csv", update, "hosts: two new web hosts")
    failed = bot.ending(outcome.thread_ts)
    if failed.state is not S.FAILED:
        outcome.state = failed.state
        outcome.problems.append(f"the first attempt ended {failed.state}, expected failed")
        return
    outcome.problems += _expect_words(bot.transcript(outcome.thread_ts), "2 added", "1 changed", "Failed", "[Retry]")
    outcome.problems += _table_unchanged("BigPanda's table", table_before, _bigpanda_rows(bot.bigpanda))
    bot.click(outcome.thread_ts, RETRY_ACTION_ID, ALICE)
    job = bot.ending(outcome.thread_ts, after_version=failed.version)
    outcome.state = job.state
    outcome.problems += _expect_words(bot.transcript(outcome.thread_ts), "Retry by", "Done")
    outcome.problems += _table_equals("BigPanda's table", _bigpanda_rows(bot.bigpanda), HOSTS_UPDATE_ROWS)


@dataclass(frozen=True)
class _Scenario:
    title: str
    expected: JobState
    run: Callable[[_Bot, Outcome], None]


SCENARIOS = (
    _Scenario(
        "1. alice shares hosts.csv saved by a spreadsheet (BOM, CRLF): repaired, sent to BigPanda, done",
        S.DONE,
        _scenario_good_hosts,
    ),
    _Scenario(
        "2. alice shares a broken hosts file: not uploaded, each issue with its line, column and fix",
        S.INVALID,
        _scenario_broken_hosts,
    ),
    _Scenario(
        "3. alice shares contacts.csv (and, by mistake, contacts.xlsx) for a D·engage table: the spreadsheet "
        "is told what is accepted, the CSV is upserted in spaced parts, done",
        S.DONE,
        _scenario_contacts_in_parts,
    ),
    _Scenario(
        "4. alice shares an update; BigPanda's job fails; she clicks Retry: done",
        S.DONE,
        _scenario_failed_then_retried,
    ),
)


# ---------------------------------------------------------------------------------------------
# Running it


@dataclass(frozen=True)
class DemoResult:
    outcomes: list[Outcome]
    seconds: float

    @property
    def exit_code(self) -> int:
        return 0 if all(o.as_expected for o in self.outcomes) else 1


def _start_sandboxes(stack: ExitStack, *, upstream_jobs_fail: bool) -> tuple[SandboxServer, SandboxServer]:
    fast: dict[str, Any] = {"job_seconds": JOB_SECONDS, "share_job_failed": 1.0 if upstream_jobs_fail else 0.0}
    bigpanda = start_sandbox("bigpanda", fast)
    stack.callback(bigpanda.stop)
    dengage = start_sandbox("dengage", {**fast, "table_call_spacing_seconds": PART_SPACING_SECONDS})
    stack.callback(dengage.stop)
    return bigpanda, dengage


def _start_bot(stack: ExitStack, folder: Path, *, upstream_jobs_fail: bool) -> _Bot:
    slack = stack.enter_context(LocalSlackApi())
    slack.add_channel(CHANNEL, CHANNEL_NAME)
    slack.add_user(ALICE, "alice", real_name="Alice Kaya")
    slack.add_user(BOB, "bob", real_name="Bob Demir")
    bigpanda, dengage = _start_sandboxes(stack, upstream_jobs_fail=upstream_jobs_fail)
    tables = _write_tables(folder / "tables.toml", bigpanda.base_url, dengage.base_url)
    env = {
        **_DEMO_ENV,
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_API_BASE_URL": slack.base_url,
        "TABLEBOT_WORK_DIR": str(folder),
    }
    store = SqliteJobStore(folder / "jobs.sqlite3")
    stack.callback(store.close)
    staging = FolderStaging(folder / "staging")
    http = stack.enter_context(httpx.Client(timeout=httpx.Timeout(30.0, connect=5.0)))
    client = WebClient(token=slack.bot_token, base_url=slack.base_url)

    # The `slack` function: Bolt behind the Lambda handler, the lazy work re-invoked in-process.
    deps = build_slack_deps(env, tables=tables, store=store, staging=staging, client=client, http=http)
    lambdas = _InProcessLambda()
    handle = make_handler(build_app(deps, process_before_response=True), lambda_client=lambdas)
    lambdas.handle = handle
    stack.callback(lambdas.join, WAIT_SECONDS)

    # The `poll` function: its own service and Slack client, as a separate Lambda would have.
    built = build_poller(env, tables=tables, store=store, staging=staging, http=http)
    poller = _PollerThread(Poller(built.store, built.service, replace(built.settings, idle_seconds=0.1)))
    poller.start()
    stack.callback(poller.stop)

    bigpanda_admin = stack.enter_context(closing(SandboxAdmin(bigpanda.root_url)))
    dengage_admin = stack.enter_context(closing(SandboxAdmin(dengage.root_url)))
    signer = slack.signer(SIGNING_SECRET)
    return _Bot(slack, signer, handle, lambdas, store, bigpanda_admin, dengage_admin, poller)


def _print_thread(bot: _Bot, outcome: Outcome, out: TextIO) -> None:
    if outcome.thread_ts is None:
        return
    print(f"#{CHANNEL_NAME}, the thread:", file=out)
    for line in bot.transcript(outcome.thread_ts).splitlines():
        print(f"  {line}", file=out)
    job = bot.job_of(outcome.thread_ts)
    history = bot.status_history(job) if job else []
    if len(history) > 1:
        print("  (the status message, as it was edited in place:)", file=out)
        for text in history:
            print(f"    · {text}", file=out)


def _run_scenarios(bot: _Bot, out: TextIO) -> Iterator[Outcome]:
    slack_errors = 0
    for scenario in SCENARIOS:
        print(f"\n== {scenario.title}", file=out, flush=True)
        outcome = Outcome(scenario.title, scenario.expected)
        try:
            scenario.run(bot, outcome)
        except (_Unexpected, TimeoutError, httpx.HTTPError) as exc:
            outcome.problems.append(str(exc) or type(exc).__name__)
        if outcome.state is not None and outcome.state is not scenario.expected:
            outcome.problems.insert(0, f"ended {outcome.state}, expected {scenario.expected}")
        outcome.problems += [*bot.lambdas.errors, *bot.poller.errors]
        outcome.problems += [f"the local Slack server failed: {e}" for e in bot.slack.internal_errors[slack_errors:]]
        slack_errors = len(bot.slack.internal_errors)
        bot.lambdas.errors.clear()
        bot.poller.errors.clear()
        _print_thread(bot, outcome, out)
        if outcome.as_expected:
            print(f"  -> as expected: {scenario.expected}", file=out, flush=True)
        else:
            print(f"  -> UNEXPECTED: {'; '.join(outcome.problems)}", file=out, flush=True)
        yield outcome


@contextmanager
def _quiet_libraries() -> Iterator[None]:
    """The demo's output is the conversation: library chatter (Bolt, httpx) and the bot's own
    logs stay below errors while it runs (a problem shows as an unexpected ending instead)."""
    loggers = [logging.getLogger(name) for name in ("slack_bolt", "slack_sdk", "httpx", "httpcore", "bot", "handlers")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def run_demo(out: TextIO | None = None, *, upstream_jobs_fail: bool = False) -> int:
    """Run the scripted conversation and print it; 0 when every ending is the expected one, else 1.

    `upstream_jobs_fail` makes every upstream job fail (a sandbox setting): the endings that
    should be done are then failed, and the demo must say so and return 1.
    """
    return demo(out or sys.stdout, upstream_jobs_fail=upstream_jobs_fail).exit_code


def demo(out: TextIO, *, upstream_jobs_fail: bool = False) -> DemoResult:
    """The demo's run, with every scenario's outcome (`run_demo` is its exit code)."""
    started = time.monotonic()
    print(
        "tablebot demo: the bot in a local Slack (#ops-tables), with BigPanda and D·engage sandboxes,\n"
        "an embedded job store and folder staging; no accounts, nothing leaves 127.0.0.1.",
        file=out,
        flush=True,
    )
    outcomes: list[Outcome] = []
    with _quiet_libraries(), tempfile.TemporaryDirectory(prefix="tablebot-demo-") as tmp, ExitStack() as stack:
        bot = _start_bot(stack, Path(tmp), upstream_jobs_fail=upstream_jobs_fail)
        outcomes.extend(_run_scenarios(bot, out))
    seconds = time.monotonic() - started
    good = sum(o.as_expected for o in outcomes)
    print(f"\n{good} of {len(outcomes)} endings as expected in {seconds:.1f} s", file=out, flush=True)
    for outcome in outcomes:
        if not outcome.as_expected:
            print(f"  NOT AS EXPECTED: {outcome.title}: {'; '.join(outcome.problems)}", file=out)
    return DemoResult(outcomes, seconds)
