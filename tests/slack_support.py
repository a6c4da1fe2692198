"""A Slack front end built from real parts for scenario tests: the local Slack Web API, the
BigPanda/D·engage sandboxes, a job store, folder staging, the Bolt app from `build_app`, and the
Lambda handler from `handlers.slack_events.make_handler` whose lazy re-invocation runs in-process
(the `invoke` below calls the same handler again on a thread, as Lambda would)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
from slack_bolt import App, BoltRequest
from slack_sdk import WebClient

from bot.config import TablesFile, load_tables_file
from bot.poller import Poller, PollerSettings
from bot.slack.app import SlackDeps, build_app
from bot.slack.wiring import build_slack_deps
from bot.staging import FolderStaging
from bot.store import Job, JobState, JobStore
from devtools.slack_api import LocalSlackApi, SignedRequest, SlackRequestSigner, render_blocks
from handlers.slack_events import Handle, make_handler
from tests.fixtures_upstream import SANDBOX_ENV, write_tables_file
from tests.poller_support import FAST, FAST_LOOP

S = JobState
OPS = "C0OPS0001"
RANDOM = "C0RANDOM1"
ALICE = "U0ALICE01"  # may upload hosts
BOB = "U0BOB0001"  # approver of gated, in the leads group
CAROL = "U0CAROL01"  # may upload nothing
DAVE = "U0DAVE001"  # uploads through the on-call group
TEAM = "C0TEAM001"  # the hosts table's team channel (notify_channels)
OTHER_TEAM = "T0OTHER01"  # a connected organisation (Slack Connect)
SECRET = "scenario-signing-secret"
LAMBDA_CONTEXT = SimpleNamespace(
    function_name="tablebot-slack", invoked_function_arn="arn:aws:lambda:us-east-1:000000000000:function:tablebot-slack"
)

PERMISSIONS = {
    "hosts": f'channels = ["{OPS}"]\nusers = ["{ALICE}"]\nusergroups = ["S0ONCALL1"]\nnotify_channels = ["{TEAM}"]',
    "gated": f'channels = ["{OPS}"]\nusers = ["{ALICE}", "{BOB}"]\napproval = true\napprovers = ["S0LEADS01"]',
    "contacts": f'channels = ["{OPS}"]\nusers = ["*"]\nallow_external_users = true\nallow_dms = true',
}


def write_slack_tables(path: Path, bigpanda_url: str, dengage_url: str) -> TablesFile:
    write_tables_file(path, bigpanda_url=bigpanda_url, dengage_url=dengage_url)
    text = path.read_text()
    text += '\n[tables.gated]\ntarget = "bp"\nenrichment_id = "demo"\ncolumns = ["host", "service", "owner"]\nquery_columns = ["host"]\n'
    for alias, keys in PERMISSIONS.items():
        text = text.replace(f"[tables.{alias}]\n", f"[tables.{alias}]\n{keys}\n", 1)
    path.write_text(text)
    return load_tables_file(path)


class InProcessLambda:
    """boto3's Lambda `invoke` for the lazy listeners: the same handler, on a thread."""

    def __init__(self) -> None:
        self.handle: Handle | None = None
        self.threads: list[threading.Thread] = []

    def invoke(self, FunctionName: str, InvocationType: str = "Event", Payload: str = "{}") -> dict[str, Any]:
        assert self.handle is not None and InvocationType == "Event"
        thread = threading.Thread(target=self.handle, args=(json.loads(Payload), LAMBDA_CONTEXT))
        thread.start()
        self.threads.append(thread)
        return {"StatusCode": 202}

    def join(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        for thread in list(self.threads):
            thread.join(max(0.0, deadline - time.monotonic()))


@dataclass
class Front:
    slack: LocalSlackApi
    store: JobStore
    staging: FolderStaging
    tables: TablesFile
    deps: SlackDeps
    app: App
    handle: Handle
    lambdas: InProcessLambda
    signer: SlackRequestSigner
    http: httpx.Client
    direct: App
    env: dict[str, str] = field(default_factory=dict)

    # -- sending requests ----------------------------------------------------------------------

    def via_lambda(self, request: SignedRequest) -> dict[str, Any]:
        return self.handle(request.lambda_event(), LAMBDA_CONTEXT)

    def dispatch(self, request: SignedRequest) -> int:
        """Straight into a second app from the same parts, whose lazy listeners run on Bolt's
        own thread pool (as in Socket Mode or a long-running HTTP server)."""
        return self.direct.dispatch(BoltRequest(body=request.body, headers=request.headers)).status

    def share(self, user: str, name: str, content: bytes, text: str = "", channel: str = OPS) -> dict[str, Any]:
        """A person shares a CSV; the `message`/`file_share` event goes through the Lambda handler."""
        shared = self.slack.register_file(name, content, user=user, channel=channel)
        message = self.slack.share_file(channel, user, shared["id"], text=text)
        answer = self.via_lambda(self.signer.file_share_event(channel, message))
        assert answer["statusCode"] == 200, answer
        return message

    def share_files(
        self, user: str, files: list[tuple[str, bytes]], text: str = "", channel: str = OPS
    ) -> dict[str, Any]:
        """One message sharing several files (the `message`/`file_share` event's `files[]`)."""
        ids = [self.slack.register_file(name, content, user=user, channel=channel)["id"] for name, content in files]
        message = self.slack.post_user_message(channel, user, text, files=ids)
        answer = self.via_lambda(self.signer.file_share_event(channel, message))
        assert answer["statusCode"] == 200, answer
        return message

    def send_event(self, event: dict[str, Any], **options: Any) -> SignedRequest:
        """Any Events API event, wrapped and signed as Slack sends it, through the Lambda handler."""
        request = self.signer.event_callback(event, **options)
        answer = self.via_lambda(request)
        assert answer["statusCode"] == 200, answer
        return request

    def bot_posts(self) -> list[str]:
        """Everything the bot wrote: text and blocks of every post, edit and ephemeral note."""
        methods = ("chat.postMessage", "chat.update", "chat.postEphemeral", "files.completeUploadExternal")
        return [json.dumps(call.params) for m in methods for call in self.slack.calls_to(m)]

    def command(self, user: str, text: str, channel: str = OPS, *, via_lambda: bool = True) -> SignedRequest:
        request = self.signer.slash_command("/table", text, user_id=user, channel_id=channel)
        if via_lambda:
            assert self.via_lambda(request)["statusCode"] == 200
        else:
            assert self.dispatch(request) == 200
        return request

    def click(self, message: dict[str, Any], action_id: str, user: str, channel: str = OPS) -> None:
        request = self.signer.click_button(message, action_id, user_id=user, channel_id=channel)
        assert self.via_lambda(request)["statusCode"] == 200

    # -- waiting and reading ---------------------------------------------------------------------

    def wait(self, predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
        return self.slack.wait_for(predicate, timeout)

    def job_in(self, thread_ts: str, state: JobState | None = None, timeout: float = 15.0) -> Job:
        def found() -> Job | None:
            for job in self.store.recent_jobs(limit=50):
                if job.thread_ts == thread_ts and (state is None or job.state is state):
                    return job
            return None

        job: Job = self.wait(found, timeout)
        return job

    def jobs(self) -> list[Job]:
        return self.store.recent_jobs(limit=100)

    def thread(self, thread_ts: str, channel: str = OPS) -> list[dict[str, Any]]:
        return self.slack.thread(channel, thread_ts)

    def transcript(self, thread_ts: str, channel: str = OPS) -> str:
        return self.slack.thread_transcript(channel, thread_ts)

    def message_with(self, thread_ts: str, action_id: str) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for message in reversed(self.thread(thread_ts)):
                for block in message.get("blocks", []):
                    for element in block.get("elements", []) if block.get("type") == "actions" else []:
                        if element.get("action_id") == action_id:
                            return message
            return None

        message: dict[str, Any] = self.wait(found)
        return message

    def ephemerals(self, user: str) -> list[str]:
        return [str(m["text"]) for m in self.slack.ephemeral_messages(user=user)]

    def responses(self, request: SignedRequest) -> list[str]:
        posts = self.slack.response_url_posts(request.payload["response_url"])
        return [
            "\n".join([str(p.payload.get("text", "")), *render_blocks(p.payload.get("blocks") or [])]) for p in posts
        ]

    def poll_until_ended(self, job: Job, timeout: float = 30.0) -> Job:
        poller = Poller(self.store, self.deps.service, PollerSettings(**{**FAST_LOOP.__dict__}))
        deadline = time.monotonic() + timeout
        while not self.store.get_job(job.job_id).is_terminal:
            assert time.monotonic() < deadline, f"job {job.job_id} did not end: {self.store.get_job(job.job_id)}"
            poller.run(run_seconds=0.5)
        return self.store.get_job(job.job_id)


def build_front(
    tmp_path: Path,
    store: JobStore,
    slack: LocalSlackApi,
    bigpanda_url: str,
    dengage_url: str,
    *,
    extra_env: dict[str, str] | None = None,
    s3_client: Any = None,
) -> Front:
    tables = write_slack_tables(tmp_path / "tables.toml", bigpanda_url, dengage_url)
    staging = FolderStaging(tmp_path / "staging")
    env = {
        **SANDBOX_ENV,
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_BASE_URL": slack.base_url,
        "TABLEBOT_SLACK_FILE_HOSTS": "127.0.0.1",
        "TABLEBOT_ALLOW_HTTP_DOWNLOADS": "1",
        "TABLEBOT_POLL_FIRST_CHECK_SECONDS": str(FAST.first_check_seconds),
        "TABLEBOT_POLL_MAX_CHECK_SECONDS": str(FAST.max_check_seconds),
        "TABLEBOT_LEASE_SECONDS": str(FAST.lease_seconds),
        "TABLEBOT_WORK_DIR": str(tmp_path),
        # These scenarios follow a job through `queued` (Cancel, Retry): the poller starts every
        # upload here; tests/test_start_and_idle.py covers the Slack function starting it at once.
        "TABLEBOT_START_UPLOAD_AT_ONCE": "false",
        **(extra_env or {}),
    }
    http = httpx.Client(timeout=httpx.Timeout(10.0, connect=2.0))
    client = WebClient(token=slack.bot_token, base_url=slack.base_url)
    deps = build_slack_deps(
        env, tables=tables, store=store, staging=staging, client=client, http=http, s3_client=s3_client
    )
    app = build_app(deps, process_before_response=True)
    lambdas = InProcessLambda()
    handle = make_handler(app, lambda_client=lambdas)
    lambdas.handle = handle
    direct = build_app(deps, process_before_response=True)
    return Front(slack, store, staging, tables, deps, app, handle, lambdas, slack.signer(SECRET), http, direct, env)
