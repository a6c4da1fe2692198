"""The one Bolt app: slash command, file shares, buttons. Built by `build_app(deps)`.

Every listener acknowledges at once (Slack wants an answer within 3 seconds) and does its work in
a lazy listener: on Lambda Bolt re-invokes the function for it; in a process (Socket Mode, tests)
it runs on Bolt's thread pool. Nothing here reads the environment: `bot.slack.wiring` builds
the parts, tests pass real local servers.

One upload = one thread: the file's message (or, for S3, a parent message the bot posts) is the
thread; a status message in it is edited in place (received → validating → waiting → queued →
the poller's uploading/done/failed), and every outcome is a reply. The two delivery paths of a
shared file (`message`/`file_share` and `file_shared`) are handled on the first only, and the job
store's delivery key (file id + channel) turns Slack's retries into one job.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slack_bolt import Ack, App, Respond
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from bot.config import TablesFile
from bot.errors import ConfigError, Refused, SourceError, StoreError
from bot.intake import FileRef, Intake, IntakeResult, S3Ref, SlackFileRef, Upload, state_words
from bot.preview import ChangePreview
from bot.service import TARGET_LABELS, JobService
from bot.slack import messages as m
from bot.slack.commands import USAGE, Command, parse_command
from bot.slack.errors import reply_for
from bot.slack.permissions import Permissions, mentions, policy_for
from bot.sources import SourceSettings, check_s3_allowed
from bot.store import Job, JobState, JobStore
from bot.validation import Report

log = logging.getLogger(__name__)
S = JobState

APPROVE_RESTORE_ACTION_ID = "approve_restore"
REJECT_RESTORE_ACTION_ID = "reject_restore"
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_OOPS = (
    "Something went wrong on the bot's side; nothing was changed. Try again, and tell the bot's admins if it repeats."
)


@dataclass
class SlackDeps:
    """What the Slack front end needs, built once per process (`bot.slack.wiring`)."""

    tables: TablesFile
    store: JobStore
    intake: Intake
    service: JobService  # Retry and restore
    client: WebClient
    permissions: Permissions
    source_settings: SourceSettings
    signing_secret: str | None = None
    command: str = "/table"


def build_app(deps: SlackDeps, *, socket_mode: bool = False, process_before_response: bool | None = None) -> App:
    """The bot's Bolt app. HTTP (Lambda): requests are verified with the signing secret and
    answered after the ack (`process_before_response`); Socket Mode: no HTTP signature to check."""
    if not socket_mode and not deps.signing_secret:
        raise ConfigError("SLACK_SIGNING_SECRET is not set: requests from Slack cannot be verified")
    app = App(
        client=deps.client,
        signing_secret=deps.signing_secret,
        process_before_response=(not socket_mode) if process_before_response is None else process_before_response,
        request_verification_enabled=not socket_mode,
        token_verification_enabled=False,  # auth.test runs on the first request, not at cold start
        name="tablebot",
    )
    front = Front(deps)

    def ack_only(ack: Ack) -> None:
        ack()

    def ack_command(ack: Ack, command: dict[str, Any]) -> None:
        parsed = parse_command(command.get("text", ""))
        if parsed.name == "help":
            text, blocks = front.help(deps.command, parsed.note)
            ack(text=text, blocks=blocks)
        elif parsed.name in ("upload", "validate", "restore"):
            ack(text=f":hourglass_flowing_sand: On it: `{deps.command} {command.get('text', '').strip()[:200]}`")
        else:
            ack()

    def run_command(body: dict[str, Any], respond: Respond) -> None:
        front.guarded(body, respond, lambda: front.command(body, respond))

    app.command(deps.command)(ack=ack_command, lazy=[run_command])

    def on_file_share(body: dict[str, Any]) -> None:
        front.guarded(body, None, lambda: front.file_share(body["event"]))

    app.event({"type": "message", "subtype": "file_share"})(ack=ack_only, lazy=[on_file_share])
    # Other messages and the second delivery path of a file are acknowledged and left alone
    # (unanswered events would be redelivered by Slack).
    app.event("message")(ack_only)
    app.event("file_shared")(ack_only)

    def action(action_id: str, work: Callable[[dict[str, Any]], None]) -> None:
        def lazy_action(body: dict[str, Any]) -> None:
            front.guarded(body, None, lambda: work(body))

        lazy_action.__name__ = lazy_action.__qualname__ = f"lazy_{action_id}"
        app.action(action_id)(ack=ack_only, lazy=[lazy_action])

    action(m.APPROVE_ACTION_ID, lambda b: front.decide(b, "approve"))
    action(m.REJECT_ACTION_ID, lambda b: front.decide(b, "reject"))
    action(m.CONFIRM_ACTION_ID, lambda b: front.decide(b, "confirm"))
    action(m.CANCEL_ACTION_ID, lambda b: front.decide(b, "cancel"))
    action(m.RETRY_ACTION_ID, lambda b: front.decide(b, "retry"))
    action(m.CHOOSE_TABLE_ACTION_ID, front.choose_table)
    action(APPROVE_RESTORE_ACTION_ID, lambda b: front.restore_decision(b, approve=True))
    action(REJECT_RESTORE_ACTION_ID, lambda b: front.restore_decision(b, approve=False))
    return app


def _file_name_stem(name: str) -> str:
    stem = name.rsplit("/", 1)[-1]
    return stem[:-4] if stem.lower().endswith(".csv") else stem


def _is_csv(file: dict[str, Any]) -> bool:
    return file.get("filetype") == "csv" or str(file.get("name", "")).lower().endswith(".csv")


class Front:
    """The listeners' work, in plain methods (each called from one lazy listener)."""

    def __init__(self, deps: SlackDeps) -> None:
        self.deps = deps
        self.client = deps.client
        self.intake = deps.intake
        self.permissions = deps.permissions

    # -- plumbing ----------------------------------------------------------------------------------

    def guarded(self, body: dict[str, Any], respond: Respond | None, work: Callable[[], None]) -> None:
        """Run `work`; an unexpected error is logged and the person told, never shown a traceback."""
        try:
            work()
        except Exception:
            log.exception("Slack listener failed")
            user = (body.get("user") or {}).get("id") or body.get("user_id") or (body.get("event") or {}).get("user")
            channel = (
                (body.get("channel") or {}).get("id")
                or body.get("channel_id")
                or (body.get("event") or {}).get("channel")
            )
            try:
                if respond is not None:
                    respond(text=_OOPS, response_type="ephemeral")
                elif user and channel:
                    self.client.chat_postEphemeral(channel=channel, user=user, text=_OOPS)
            except (SlackApiError, SlackClientError, OSError):
                log.warning("could not tell the user about the failure")

    def tell(self, channel: str, user: str, text: str, thread_ts: str | None = None) -> None:
        """An ephemeral note to one person (refusals: the channel does not need to see them)."""
        try:
            self.client.chat_postEphemeral(channel=channel, user=user, text=text, thread_ts=thread_ts)
        except (SlackApiError, SlackClientError, OSError) as exc:
            log.warning("ephemeral message not posted: %s", type(exc).__name__)

    def reply(self, channel: str, thread_ts: str | None, text: str, blocks: m.Blocks | None = None) -> dict[str, Any]:
        response = self.client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=text, blocks=blocks)
        return dict(response.data) if isinstance(response.data, dict) else {}

    def set_status(self, job: Job, text: str, *, icon: str, cancellable: bool) -> None:
        if not (job.channel_id and job.status_ts):
            return
        plain, blocks = m.intake_status(job, text, icon=icon, cancellable=cancellable)
        try:
            self.client.chat_update(channel=job.channel_id, ts=job.status_ts, text=plain, blocks=blocks)
        except (SlackApiError, SlackClientError, OSError) as exc:
            log.warning("job %s: status message not updated (%s)", job.job_id, type(exc).__name__)

    # -- uploads -----------------------------------------------------------------------------------

    def start_upload(self, upload: Upload) -> IntakeResult | None:
        """Create the job (once per delivery), post its status in the thread, check the file."""
        job, created = self.intake.open(upload)
        if not created:
            log.info("delivery %s is job %s already; nothing more to do", upload.delivery_key, job.job_id)
            return None
        assert upload.channel_id is not None
        text, blocks = m.intake_status(job, f"Received `{upload.file.name}` for table `{job.table}`…")
        status = self.reply(upload.channel_id, upload.thread_ts, text, blocks)
        try:
            job = self.intake.attach_status(job, thread_ts=upload.thread_ts, status_ts=status.get("ts"))
        except StoreError:  # cancelled in the instant between: its status message says so already
            return None
        policy = policy_for(self.deps.tables.table(job.table))

        def progress(current: Job, text: str) -> None:
            self.set_status(current, text, icon=":hourglass_flowing_sand:", cancellable=True)

        max_share = policy.max_removed_share
        label = TARGET_LABELS.get(self.deps.tables.table(job.table).kind, job.target)

        def on_valid(current: Job, report: Report, preview: ChangePreview | None, waits: bool) -> None:
            # Posted before the job is queued: once queued, the poller may report at any moment.
            rows = f"{report.rows:,} rows"
            lines = [f":white_check_mark: `{current.file_name}` is valid: {rows}."]
            if self.deps.tables.table(current.table).kind == "bigpanda":
                lines.append(m.preview_text(preview, max_share))
            self.reply(channel, upload.thread_ts, *m.plain("\n".join(lines) + self._repairs_note(report)))
            if not waits:
                self.set_status(
                    current, f"Valid ({rows}); queued for upload to {label}…", icon=":inbox_tray:", cancellable=True
                )

        channel = upload.channel_id
        result = self.intake.run(
            job,
            upload.file,
            approval=policy.approval,
            max_removed_share=max_share,
            progress=progress,
            on_valid=on_valid,
        )
        self.render(result, upload, policy.approvers)
        return result

    def render(self, result: IntakeResult, upload: Upload, approvers: tuple[str, ...]) -> None:
        job = result.job
        channel, thread = upload.channel_id or "", upload.thread_ts
        if result.kind == "invalid" and result.report is not None:
            report = result.report
            full = m.needs_full_report(report)
            self.set_status(
                job, f"*Not uploaded*: `{job.file_name}` has problems (details below).", icon=":x:", cancellable=False
            )
            text, blocks = m.invalid_message(job.file_name, report, report_attached=full)
            self.reply(channel, thread, text, blocks)
            if full:
                self.client.files_upload_v2(
                    channel=channel,
                    thread_ts=thread,
                    content=m.report_csv(report),
                    filename=f"{_file_name_stem(job.file_name)}-report.csv",
                    title=f"Validation report for {job.file_name}",
                    initial_comment="The full validation report (line, column, code, severity, message).",
                )
        elif result.kind in ("unreadable", "stopped"):
            self.set_status(
                job, f"*Not uploaded*: `{job.file_name}` could not be checked.", icon=":x:", cancellable=False
            )
            self.reply(channel, thread, *m.plain(f":x: {result.message}"))
        elif result.kind in ("awaiting_approval", "awaiting_confirmation"):
            confirm = result.kind == "awaiting_confirmation"
            who = f"<@{job.requested_by}> to confirm" if confirm else f"approval from {mentions(approvers)}"
            self.set_status(job, f"Valid; waiting for {who}.", icon=":raised_hand:", cancellable=True)
            self.reply(channel, thread, *m.decision_request(job, approvers=mentions(approvers), confirm=confirm))

    @staticmethod
    def _repairs_note(report: Report) -> str:
        if not report.fixes and not report.warnings:
            return ""
        notes = [f"• {i.message}" for i in (report.fixes + report.warnings)[:5]]
        return "\n*Repairs and warnings*:\n" + "\n".join(notes)

    def _table_for(self, text: str, file_name: str) -> str | None:
        aliases = self.deps.tables.tables
        for word in _WORD.findall(text.replace("`", " ")):
            if word in aliases:
                return str(word)
        stem = _file_name_stem(file_name)
        return stem if stem in aliases else None

    def file_share(self, event: dict[str, Any]) -> None:
        channel, user = event.get("channel"), event.get("user")
        if not channel or not user:
            return
        text = str(event.get("text") or "")
        thread_ts = event.get("thread_ts") or event.get("ts")
        dry_run = text.strip().lower().startswith(("validate", "dry run", "dry-run"))
        for raw in event.get("files") or []:
            file = raw
            if raw.get("file_access") == "check_file_info" or "url_private_download" not in raw:
                file = self.client.files_info(file=raw["id"])["file"]
            if not _is_csv(file):
                continue
            ref = SlackFileRef(
                file_id=file["id"],
                url=file.get("url_private_download", ""),
                name=file.get("name", file["id"]),
                size=file.get("size"),
            )
            table = self._table_for(text, ref.name)
            if table is None:
                self.ask_table(channel, user, thread_ts, ref)
                continue
            decision = self.permissions.can_upload(table, user, channel)
            if not decision:
                self.reply(
                    channel,
                    thread_ts,
                    *m.plain(f":no_entry: <@{user}>, `{ref.name}` was not uploaded. {decision.reason}"),
                )
                continue
            if dry_run:
                self.reply(channel, thread_ts, *self.dry_run_message(table, ref))
                continue
            upload = Upload(table, user, ref, f"file:{ref.file_id}:{channel}", channel_id=channel, thread_ts=thread_ts)
            self.start_upload(upload)

    def ask_table(self, channel: str, user: str, thread_ts: str | None, ref: SlackFileRef) -> None:
        allowed = [t.alias for t in self.permissions.tables_for_channel(channel)]
        if not allowed:
            self.reply(
                channel,
                thread_ts,
                *m.plain(
                    f"<@{user}>, no table can be uploaded from this channel, so I left `{ref.name}` alone. "
                    f"`{self.deps.command} tables` in an upload channel lists what is possible."
                ),
            )
            return
        self.reply(channel, thread_ts, *m.choose_table_message(ref.file_id, ref.name, allowed))

    def choose_table(self, body: dict[str, Any]) -> None:
        action = body["actions"][0]
        table = action["selected_option"]["value"]
        file_id = str(action.get("block_id", "")).removeprefix(m.CHOOSE_TABLE_BLOCK_PREFIX)
        user, channel = body["user"]["id"], body["channel"]["id"]
        message = body.get("message") or {}
        thread_ts = message.get("thread_ts") or body.get("container", {}).get("thread_ts") or message.get("ts")
        decision = self.permissions.can_upload(table, user, channel)
        if not decision:
            self.tell(channel, user, decision.reason, thread_ts)
            return
        file = self.client.files_info(file=file_id)["file"]
        ref = SlackFileRef(
            file_id=file_id,
            url=file.get("url_private_download", ""),
            name=file.get("name", file_id),
            size=file.get("size"),
        )
        if message.get("ts"):
            self.client.chat_update(
                channel=channel,
                ts=message["ts"],
                text=f"`{ref.name}` → table `{table}` (chosen by <@{user}>)",
                blocks=[],
            )
        result = self.start_upload(
            Upload(table, user, ref, f"file:{file_id}:{channel}", channel_id=channel, thread_ts=thread_ts)
        )
        if result is None:
            self.tell(channel, user, f"`{ref.name}` is already being handled in this thread.", thread_ts)

    def dry_run_message(self, table: str, ref: FileRef) -> tuple[str, m.Blocks]:
        outcome = self.intake.dry_run(table, ref)
        if outcome.report is None:
            return m.plain(f":x: Dry run of `{outcome.file_name}` for `{table}`: {outcome.message}")
        report = outcome.report
        from bot.validation import summary_line

        if report.valid:
            lines = [f":white_check_mark: Dry run: {summary_line(report, outcome.file_name)}. Nothing was uploaded."]
            lines += m.issue_lines(report.fixes + report.warnings, 10)
            return m.plain("\n".join(lines))
        text, blocks = m.invalid_message(outcome.file_name, report)
        return text, [*blocks, m._context("Dry run: nothing was uploaded.")]

    # -- slash commands ----------------------------------------------------------------------------

    def help(self, command: str, note: str | None = None) -> tuple[str, m.Blocks]:
        lines = [f"• `{command} {usage}`: {what}" for usage, what in USAGE]
        head = (f"{note}\n\n" if note else "") + "*What I can do*"
        tail = (
            "To upload a file from your computer, share the CSV in an upload channel and name the table in the message."
        )
        return m.sections(head, [*lines, "", tail])

    def command(self, body: dict[str, Any], respond: Respond) -> None:
        parsed = parse_command(str(body.get("text", "")))
        if parsed.name == "help":
            return  # answered in the acknowledgement
        user, channel = str(body.get("user_id")), str(body.get("channel_id"))

        def say(text: str, blocks: m.Blocks | None = None) -> None:
            respond(text=text, blocks=blocks, response_type="ephemeral")

        if parsed.table is not None and parsed.table not in self.deps.tables.tables:
            known = ", ".join(f"`{t.alias}`" for t in self.permissions.tables_for_channel(channel)) or "none here"
            say(f"There is no table `{parsed.table}`. Tables this channel may use: {known}.")
            return
        handler = getattr(self, f"cmd_{parsed.name}")
        handler(parsed, user, channel, say, body)

    def cmd_tables(
        self, parsed: Command, user: str, channel: str, say: Callable[..., None], body: dict[str, Any]
    ) -> None:
        tables = self.permissions.tables_for_channel(channel)
        if not tables:
            say("No table can be uploaded from this channel. Ask the bot's admins to add it to a table's `channels`.")
            return
        lines = []
        for table in tables:
            policy = policy_for(table)
            schema = table.configured_schema()
            if schema is None:
                columns = f"columns read from {TARGET_LABELS[table.kind]} at upload"
            else:
                columns = ", ".join(
                    f"`{c.name}`" + (" (key)" if c.role == "query_tag" or c.primary else "") for c in schema.columns
                )
            upstream = table.enrichment_id or table.table_name or table.table_id
            who = mentions([*policy.users, *policy.usergroups])
            approval = f"; approval by {mentions(policy.approvers)}" if policy.approval else ""
            lines.append(
                f"• *{table.alias}* → {TARGET_LABELS[table.kind]} `{upstream}` "
                f"({'replaced' if table.kind == 'bigpanda' else 'upserted'}): {columns}. Uploaders: {who}{approval}."
            )
        say(*m.sections("*Tables this channel may upload to*", lines, per_block=8))

    def cmd_upload(
        self, parsed: Command, user: str, channel: str, say: Callable[..., None], body: dict[str, Any]
    ) -> None:
        assert parsed.table and parsed.uri
        decision = self.permissions.can_upload(parsed.table, user, channel)
        if not decision:
            say(f":no_entry: Not uploaded. {decision.reason}")
            return
        try:
            check_s3_allowed(parsed.uri, self.deps.source_settings.s3_allowed_prefixes)
        except SourceError as exc:
            say(reply_for(exc))
            return
        ref = S3Ref(parsed.uri)
        try:
            parent = self.reply(
                channel, None, *m.plain(f"<@{user}> asked to upload `{parsed.uri}` to table `{parsed.table}`.")
            )
        except SlackApiError as exc:
            say(self._post_refused(exc))
            return
        key = f"command:{body.get('trigger_id') or parent.get('ts')}"
        self.start_upload(Upload(parsed.table, user, ref, key, channel_id=channel, thread_ts=parent.get("ts")))
        say(f"Follow the upload in its thread: `{ref.name}` → `{parsed.table}`.")

    @staticmethod
    def _post_refused(exc: SlackApiError) -> str:
        error = exc.response.get("error") if hasattr(exc.response, "get") else None
        if error in ("not_in_channel", "channel_not_found"):
            return "I am not in this channel, so I cannot start a thread here: invite me (`/invite @tablebot`) and try again."
        return f"Slack refused my message ({error}); try again in a minute."

    def cmd_validate(
        self, parsed: Command, user: str, channel: str, say: Callable[..., None], body: dict[str, Any]
    ) -> None:
        assert parsed.table
        decision = self.permissions.can_upload(parsed.table, user, channel)
        if not decision:
            say(f":no_entry: {decision.reason}")
            return
        if parsed.uri is None:
            say(
                f"Share the CSV in this channel with the message `validate {parsed.table}`: I will check it without uploading it."
            )
            return
        try:
            check_s3_allowed(parsed.uri, self.deps.source_settings.s3_allowed_prefixes)
        except SourceError as exc:
            say(reply_for(exc))
            return
        say(*self.dry_run_message(parsed.table, S3Ref(parsed.uri)))

    def _describe(self, job: Job) -> str:
        rows = f", {job.row_count:,} rows" if job.row_count is not None else ""
        when = job.created_at.strftime("%Y-%m-%d %H:%M UTC")
        why = (
            f" — {job.last_error}"
            if job.last_error and job.state in (S.FAILED, S.INVALID, S.CANCELLED, S.TIMED_OUT)
            else ""
        )
        return f"`{job.job_id}` {when} · `{job.table}` · `{job.file_name}`{rows} · <@{job.requested_by}> · *{state_words(job.state)}*{why}"

    def cmd_status(
        self, parsed: Command, user: str, channel: str, say: Callable[..., None], body: dict[str, Any]
    ) -> None:
        if parsed.job_id:
            try:
                job = self.deps.store.get_job(parsed.job_id)
            except StoreError:
                say(f"There is no upload `{parsed.job_id}`. `{self.deps.command} jobs` lists recent ones.")
                return
        else:
            mine = [j for j in self.deps.store.recent_jobs(limit=100) if j.requested_by == user]
            if not mine:
                say(f"You have no recent uploads. `{self.deps.command} jobs` lists everyone's.")
                return
            job = mine[0]
        lines = [self._describe(job)]
        if job.upstream_job_ids:
            lines.append("Upstream job(s): " + ", ".join(f"`{i}`" for i in job.upstream_job_ids))
        if job.approver:
            lines.append(f"Approved/decided by <@{job.approver}>")
        say(*m.plain("\n".join(lines)))

    def cmd_jobs(
        self, parsed: Command, user: str, channel: str, say: Callable[..., None], body: dict[str, Any]
    ) -> None:
        jobs = self.deps.store.recent_jobs(parsed.table, limit=15)
        if not jobs:
            say("No uploads yet" + (f" for `{parsed.table}`." if parsed.table else "."))
            return
        title = f"*Recent uploads{f' to `{parsed.table}`' if parsed.table else ''}*"
        say(*m.sections(title, [f"• {self._describe(j)}" for j in jobs], per_block=8))

    def cmd_history(
        self, parsed: Command, user: str, channel: str, say: Callable[..., None], body: dict[str, Any]
    ) -> None:
        assert parsed.table
        entries = self.deps.store.history_for_table(parsed.table, limit=40)
        if not entries:
            say(f"No uploads to `{parsed.table}` yet.")
            return

        def actor(who: str) -> str:
            return f"<@{who}>" if who.startswith("U") else who

        lines = [
            f"• {e.at:%Y-%m-%d %H:%M} · `{e.job_id}` · {actor(e.actor)} · {e.from_state or 'new'} → *{e.to_state}* · {e.reason[:150]}"
            for e in reversed(entries)
        ]
        say(*m.sections(f"*History of `{parsed.table}`* (newest first)", lines, per_block=10))

    def cmd_restore(
        self, parsed: Command, user: str, channel: str, say: Callable[..., None], body: dict[str, Any]
    ) -> None:
        assert parsed.table
        decision = self.permissions.can_upload(parsed.table, user, channel)
        if not decision:
            say(f":no_entry: Not restored. {decision.reason}")
            return
        policy = self.permissions.policy(parsed.table)
        try:
            parent = self.reply(
                channel, None, *m.plain(f"<@{user}> asked to restore the previous version of `{parsed.table}`.")
            )
        except SlackApiError as exc:
            say(self._post_refused(exc))
            return
        thread_ts = parent.get("ts")
        if policy.approval:
            value = json.dumps({"table": parsed.table, "by": user, "channel": channel, "thread": thread_ts})
            ask = f"Restoring `{parsed.table}` needs approval from {mentions(policy.approvers)} (not <@{user}>)."
            blocks: m.Blocks = [
                m._section(ask),
                {
                    "type": "actions",
                    "elements": [
                        m._button(APPROVE_RESTORE_ACTION_ID, "Approve", value, "primary"),
                        m._button(REJECT_RESTORE_ACTION_ID, "Reject", value, "danger"),
                    ],
                },
            ]
            self.reply(channel, thread_ts, ask, blocks)
            return
        self.restore(parsed.table, user, channel, thread_ts)

    def restore(self, table: str, actor: str, channel: str, thread_ts: str | None) -> None:
        try:
            job = self.deps.service.restore_previous(table, actor, channel_id=channel, thread_ts=thread_ts)
        except (Refused, ConfigError) as exc:
            self.reply(channel, thread_ts, *m.plain(reply_for(exc)))
            return
        text, blocks = m.intake_status(
            job, f"Restoring `{table}` from job `{job.source.removeprefix('restore:')}`: queued…", icon=":rewind:"
        )
        status = self.reply(channel, thread_ts, text, blocks)
        for _ in range(5):  # the poller may step the job meanwhile: re-read and record the status message
            try:
                self.deps.store.update(job, changes={"status_ts": status.get("ts")})
                return
            except StoreError:
                job = self.deps.store.get_job(job.job_id)
                if job.status_ts or job.is_terminal:
                    return

    def restore_decision(self, body: dict[str, Any], *, approve: bool) -> None:
        value = json.loads(body["actions"][0]["value"])
        user, channel = body["user"]["id"], body["channel"]["id"]
        message = body.get("message") or {}
        decision = self.permissions.can_approve(value["table"], user, value["by"])
        if not decision:
            self.tell(channel, user, decision.reason, value.get("thread"))
            return
        verdict = "approved" if approve else "rejected"
        if message.get("ts"):
            self.client.chat_update(
                channel=channel,
                ts=message["ts"],
                text=f"Restore of `{value['table']}` {verdict} by <@{user}>.",
                blocks=[],
            )
        if approve:
            self.restore(value["table"], value["by"], value["channel"], value.get("thread"))

    # -- buttons on a job --------------------------------------------------------------------------

    def decide(self, body: dict[str, Any], what: str) -> None:
        job_id = body["actions"][0]["value"]
        user, channel = body["user"]["id"], body["channel"]["id"]
        message = body.get("message") or {}
        thread_ts = message.get("thread_ts") or message.get("ts")
        try:
            job = self.deps.store.get_job(job_id)
        except StoreError:
            self.tell(channel, user, f"There is no upload `{job_id}` any more.", thread_ts)
            return
        if what in ("approve", "reject"):
            decision = self.permissions.can_approve(job.table, user, job.requested_by)
        else:
            decision = self.permissions.can_manage(job.table, user, job.requested_by, channel)
        if not decision:
            self.tell(channel, user, f":no_entry: {decision.reason}", thread_ts)
            return
        try:
            if what in {"approve", "confirm"}:
                job = self.intake.release(job_id, user, how="approved" if what == "approve" else "confirmed")
                note = f":white_check_mark: {'Approved' if what == 'approve' else 'Confirmed'} by <@{user}>; queued for upload."
                self.set_status(job, f"{note.split(' ', 1)[1]}", icon=":inbox_tray:", cancellable=True)
            elif what == "reject":
                job = self.intake.reject(job_id, user)
                note = f":no_entry_sign: Rejected by <@{user}>; nothing was uploaded."
                self.set_status(job, f"Rejected by <@{user}>; not uploaded.", icon=":no_entry_sign:", cancellable=False)
            elif what == "cancel":
                job = self.intake.cancel(job_id, user)
                note = f":no_entry_sign: Cancelled by <@{user}>; nothing was uploaded."
                self.set_status(
                    job, f"Cancelled by <@{user}>; not uploaded.", icon=":no_entry_sign:", cancellable=False
                )
            else:
                job = self.deps.service.retry_job(job_id, user)
                note = f":repeat: Retry by <@{user}>: the same validated file is queued again."
                self.set_status(job, f"Retry by <@{user}>; queued for upload…", icon=":repeat:", cancellable=True)
        except Refused as exc:
            self.tell(channel, user, reply_for(exc), thread_ts)
            return
        if message.get("ts") and what in ("approve", "reject", "confirm"):
            # The decision is taken: the buttons go, the message says who decided.
            kept = [b for b in message.get("blocks", []) if b.get("type") != "actions"]
            self.client.chat_update(channel=channel, ts=message["ts"], text=note, blocks=[*kept, m._section(note)])
        else:
            self.reply(channel, job.thread_ts or thread_ts, *m.plain(note))
