"""`/table ...`: the slash command's text parsed into one value (`parse_command`, pure), and one
function per command (`COMMANDS`), each behind the guard.

Anything that does not parse becomes `help` with a note saying what was wrong, so unknown input
gets the help, never silence. `help` is answered in the acknowledgement itself; the others answer
the person alone (ephemeral), except uploads and restores, which start a thread in the channel.
`status`, `jobs` and `history` show only tables the person may upload to or approve.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from slack_sdk.errors import SlackApiError

from bot.errors import SourceError, StoreError
from bot.intake import S3Ref, Upload, state_words
from bot.slack import render
from bot.slack.errors import reply_for
from bot.slack.guard import Request
from bot.slack.uploads import start_upload
from bot.sources import check_s3_allowed
from bot.store import Job

CommandName = Literal["help", "tables", "upload", "validate", "status", "jobs", "history", "restore", "check"]

USAGE: tuple[tuple[str, str], ...] = (
    ("help", "this help"),
    ("tables", "the tables this channel may upload to, their columns and target"),
    ("upload TABLE s3://bucket/key.csv", "validate and upload a file from S3 (or share a CSV here, naming the table)"),
    ("validate TABLE [s3://bucket/key.csv]", "check a file without uploading it (dry run)"),
    ("status [JOB]", "where an upload is (default: your latest)"),
    ("jobs [TABLE]", "recent uploads and how they ended"),
    ("history TABLE", "who uploaded what to the table, when, with which result"),
    ("check TABLE", "approvers: prove the table's settings against its upstream (log in, find it, compare columns)"),
    ("restore TABLE", "BigPanda: upload the table's previous good version again (preview, approval as for a file)"),
)


@dataclass(frozen=True)
class Command:
    name: CommandName
    table: str | None = None
    uri: str | None = None
    job_id: str | None = None
    note: str | None = None  # for help: what was wrong with the input


def _help(note: str | None = None) -> Command:
    return Command("help", note=note)


def parse_command(text: str) -> Command:
    words = text.split()
    if not words:
        return _help()
    verb, args = words[0].lower(), words[1:]
    if verb in ("help", "?", "-h", "--help"):
        return _help()
    if verb == "tables" and not args:
        return Command("tables")
    if verb == "status" and len(args) <= 1:
        return Command("status", job_id=args[0] if args else None)
    if verb == "jobs" and len(args) <= 1:
        return Command("jobs", table=args[0] if args else None)
    if verb in ("history", "restore", "check"):
        if len(args) != 1:
            return _help(f"`{verb}` needs exactly one table name, e.g. `{verb} hosts`.")
        name: CommandName = "history" if verb == "history" else "restore" if verb == "restore" else "check"
        return Command(name, table=args[0])
    if verb == "upload":
        if len(args) != 2 or not args[1].lower().startswith("s3://"):
            return _help(
                "`upload` needs a table and an S3 address, e.g. `upload hosts s3://bucket/hosts.csv`. "
                "To upload a file from your computer, share it in the channel and name the table in the message."
            )
        return Command("upload", table=args[0], uri=args[1])
    if verb == "validate":
        if len(args) not in (1, 2) or (len(args) == 2 and not args[1].lower().startswith("s3://")):
            return _help("`validate` needs a table and, optionally, an S3 address: `validate hosts s3://bucket/x.csv`.")
        return Command("validate", table=args[0], uri=args[1] if len(args) == 2 else None)
    return _help(f"I don't know `{text.strip()[:100]}`.")


def help_message(command: str, note: str | None = None) -> render.Message:
    return render.help_message(command, USAGE, note)


def cmd_tables(req: Request, parsed: Command) -> None:
    tables = req.deps.permissions.tables_for_place(req.place)
    if not tables:
        where = "direct messages" if req.place.is_dm else "this channel"
        req.tell(f"No table can be uploaded from {where}. Ask the bot's admins to add it to a table's `channels`.")
        return
    text, blocks = render.listing("*Tables that may be uploaded from here*", [render.table_line(t) for t in tables])
    _respond(req, text, blocks)


def _respond(req: Request, text: str, blocks: render.Blocks) -> None:
    if req.respond is not None:
        req.respond(text=text, blocks=blocks, response_type="ephemeral")
    else:
        req.replies.tell(req.channel, req.user, text, req.thread_ts)


def _parent(req: Request, line: str) -> str | None:
    """Slash commands cannot start threads: the bot posts a parent message to thread under."""
    try:
        return req.replies.post(req.channel, None, render.message(line)).get("ts")
    except SlackApiError as exc:
        error = exc.response.get("error") if hasattr(exc.response, "get") else None
        if error in ("not_in_channel", "channel_not_found"):
            req.tell(
                "I am not in this channel, so I cannot start a thread here: invite me (`/invite @tablebot`) and try again."
            )
        else:
            req.tell(f"Slack refused my message ({render.esc(error)}); try again in a minute.")
        return None


def cmd_upload(req: Request, parsed: Command) -> None:
    assert parsed.table and parsed.uri
    decision = req.can_upload(parsed.table)
    if not decision:
        req.tell(f":no_entry: Not uploaded. {decision.reason}")
        return
    try:
        check_s3_allowed(parsed.uri, req.deps.source_settings.s3_allowed_prefixes)
    except SourceError as exc:
        req.tell(reply_for(exc))
        return
    ref = S3Ref(parsed.uri)
    thread = _parent(
        req, f"{render.who(req.user)} asked to upload {render.code(parsed.uri)} to table {render.code(parsed.table)}."
    )
    if thread is None:
        return
    key = f"command:{req.body.get('trigger_id') or thread}"
    start_upload(
        req.deps, req.replies, Upload(parsed.table, req.user, ref, key, channel_id=req.channel, thread_ts=thread)
    )
    req.tell(f"Follow the upload in its thread: {render.code(ref.name)} → {render.code(parsed.table)}.")


def cmd_validate(req: Request, parsed: Command) -> None:
    assert parsed.table
    decision = req.can_upload(parsed.table)
    if not decision:
        req.tell(f":no_entry: {decision.reason}")
        return
    if parsed.uri is None:
        req.tell(
            f"Share the CSV here with the message `validate {render.esc(parsed.table)}`: "
            "I will check it without uploading it."
        )
        return
    try:
        check_s3_allowed(parsed.uri, req.deps.source_settings.s3_allowed_prefixes)
    except SourceError as exc:
        req.tell(reply_for(exc))
        return
    text, blocks = render.dry_run(parsed.table, req.deps.intake.dry_run(parsed.table, S3Ref(parsed.uri)))
    _respond(req, text, blocks)


def _visible_jobs(req: Request, table: str | None, limit: int) -> list[Job]:
    visible = req.visible_tables()
    return [j for j in req.deps.store.recent_jobs(table, limit=100) if j.table in visible][:limit]


def cmd_status(req: Request, parsed: Command) -> None:
    visible = req.visible_tables()
    if parsed.job_id:
        try:
            job = req.deps.store.get_job(parsed.job_id)
        except StoreError:
            job = None
        if job is None or job.table not in visible:  # another team's job: not even its existence
            req.tell(
                f"There is no upload {render.code(parsed.job_id)} that you may see. `{req.deps.command} jobs` lists yours."
            )
            return
    else:
        mine = [j for j in req.deps.store.recent_jobs(limit=100) if j.requested_by == req.user and j.table in visible]
        if not mine:
            req.tell(f"You have no recent uploads. `{req.deps.command} jobs` lists the tables you may see.")
            return
        job = mine[0]
    lines = [render.job_line(job, state_words(job.state))]
    if job.upstream_job_ids:
        lines.append("Upstream job(s): " + ", ".join(render.code(i) for i in job.upstream_job_ids))
    if job.approver:
        lines.append(f"Approved/decided by {render.who(job.approver)}")
    if job.confirmed_by:
        lines.append(f"Removals confirmed by {render.who(job.confirmed_by)}")
    text, blocks = render.message("\n".join(lines))
    _respond(req, text, blocks)


def cmd_jobs(req: Request, parsed: Command) -> None:
    jobs = _visible_jobs(req, parsed.table, 15)
    if not jobs:
        which = f" to {render.code(parsed.table)}" if parsed.table else ""
        req.tell(f"No uploads{which} that you may see (only tables you may upload to or approve are listed).")
        return
    title = f"*Recent uploads{f' to {render.code(parsed.table)}' if parsed.table else ''}*"
    text, blocks = render.listing(title, [f"• {render.job_line(j, state_words(j.state))}" for j in jobs], per_block=8)
    _respond(req, text, blocks)


def cmd_history(req: Request, parsed: Command) -> None:
    assert parsed.table
    if parsed.table not in req.visible_tables():
        req.tell(
            f"You may not see the history of {render.code(parsed.table)}: it is shown to the people who may "
            "upload to it or approve for it."
        )
        return
    entries = req.deps.store.history_for_table(parsed.table, limit=40)
    if not entries:
        req.tell(f"No uploads to {render.code(parsed.table)} yet.")
        return
    lines = [render.history_line(e) for e in reversed(entries)]
    text, blocks = render.listing(f"*History of {render.code(parsed.table)}* (newest first)", lines, per_block=10)
    _respond(req, text, blocks)


def cmd_restore(req: Request, parsed: Command) -> None:
    """A restore is an upload of the table's earlier version: the same checks, preview, removal
    guard, approval and history as a shared file."""
    assert parsed.table
    decision = req.can_upload(parsed.table)
    if not decision:
        req.tell(f":no_entry: Not restored. {decision.reason}")
        return
    source = req.deps.intake.restore_source(parsed.table)  # Refused: the guard tells why
    thread = _parent(
        req,
        f"{render.who(req.user)} asked to restore table {render.code(parsed.table)} to the version of job "
        f"{render.code(source.from_job_id)} ({render.code(source.name)}).",
    )
    if thread is None:
        return
    key = f"command:{req.body.get('trigger_id') or thread}"
    upload = Upload(parsed.table, req.user, source, key, channel_id=req.channel, thread_ts=thread)
    start_upload(req.deps, req.replies, upload)


def cmd_check(req: Request, parsed: Command) -> None:
    """`bot.targets.check` for an approver: each step, what was seen, what to fix (nothing is uploaded)."""
    assert parsed.table is not None
    decision = req.deps.permissions.can_check(parsed.table, req.person)
    if not decision:
        req.tell(f":no_entry: {decision.reason}")
        return
    if req.deps.check_table is None:
        req.tell("Checking tables is not set up in this bot.")
        return
    result = req.deps.check_table(req.deps.tables.table(parsed.table))
    lines = []
    for step in result.steps:
        mark = ":white_check_mark:" if step.ok else ":x:"
        fix = f"\n    fix: {render.esc(step.fix)}" if step.fix and not step.ok else ""
        lines.append(f"{mark} *{step.name}*: {render.esc(step.detail)}{fix}")
    verdict = "all steps passed" if result.ok else "not ready: fix the first failed step and check again"
    title = f"*Check of {render.code(parsed.table)}* ({render.esc(result.target)}): {verdict}"
    text, blocks = render.listing(title, lines)
    _respond(req, text, blocks)


def cmd_help(req: Request, parsed: Command) -> None:
    """Answered in the acknowledgement; nothing more to do."""


COMMANDS: dict[CommandName, Callable[[Request, Command], None]] = {
    "help": cmd_help,
    "tables": cmd_tables,
    "upload": cmd_upload,
    "validate": cmd_validate,
    "status": cmd_status,
    "jobs": cmd_jobs,
    "history": cmd_history,
    "restore": cmd_restore,
    "check": cmd_check,
}


def run_command(req: Request) -> None:
    parsed = parse_command(str(req.body.get("text", "")))
    if parsed.table is not None and parsed.table not in req.deps.tables.tables:
        known = ", ".join(render.code(t.alias) for t in req.deps.permissions.tables_for_place(req.place))
        req.tell(
            f"There is no table {render.code(parsed.table)}. Tables that may be uploaded from here: {known or 'none'}."
        )
        return
    COMMANDS[parsed.name](req, parsed)
