"""Files shared in a channel or a direct message, each resolved on its own.

For every file of the message:

- a deleted file (`mode: "tombstone"`), a link to a file outside Slack (`mode: "external"`,
  e.g. Google Drive) or a file the bot cannot read (`files.info` refuses) gets its own line and
  does not stop the others;
- a file that is not a CSV gets a short line saying what is accepted;
- a CSV goes to the table its own name names (`hosts.csv` → `hosts`), else to the one table the
  message names, else the bot asks with a menu (several tables named, or none): ambiguity asks,
  it never guesses;
- then the person's permission for that table is checked, and the upload (or, with a message
  starting "validate" / "dry run", a dry run) starts in the message's thread.

The bot speaks only where it is expected to: in a direct message, in a channel some table may be
uploaded from, or when the message names a table. Anywhere else it stays quiet, so a CSV shared
in #random is nobody's business.

A file arrives twice (the `message`/`file_share` event and `file_shared`); the bot handles the
first only. Its retries are answered once by the guard; the job's delivery key (file id +
channel) makes one job per file even if two deliveries raced.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError

from bot.intake import SlackFileRef, Upload
from bot.slack import render
from bot.slack.context import SLACK_ERRORS
from bot.slack.guard import Request
from bot.slack.uploads import start_upload

log = logging.getLogger(__name__)

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
DRY_RUN_WORDS = ("validate", "dry run", "dry-run")


def file_stem(name: str) -> str:
    stem = name.rsplit("/", 1)[-1]
    return stem[:-4] if stem.lower().endswith(".csv") else stem


def is_csv(file: dict[str, Any]) -> bool:
    return file.get("filetype") == "csv" or str(file.get("name", "")).lower().endswith(".csv")


def named_tables(text: str, aliases: set[str] | dict[str, Any]) -> list[str]:
    """Tables the message names, in order, once each."""
    found: list[str] = []
    for raw in _WORD.findall(text.replace("`", " ")):
        word = raw.rstrip("._-")
        if word in aliases and word not in found:
            found.append(word)
    return found


@dataclass(frozen=True)
class Readable:
    ref: SlackFileRef
    info: dict[str, Any]


def _resolve(req: Request, raw: dict[str, Any]) -> Readable | str:
    """The file as the bot can read it, or the line saying why it cannot."""
    file = raw
    name = str(raw.get("name") or raw.get("title") or "a file")
    if raw.get("mode") == "tombstone":
        return render.deleted_file()
    if raw.get("file_access") == "check_file_info" or (
        "url_private_download" not in raw and raw.get("mode") != "external"
    ):
        try:
            file = dict(req.deps.client.files_info(file=raw["id"])["file"])
        except SlackApiError as exc:
            error = exc.response.get("error") if hasattr(exc.response, "get") else None
            if error in ("file_deleted",):
                return render.deleted_file()
            log.info("files.info %s refused: %s", raw.get("id"), error)
            return render.no_access(name)
        name = str(file.get("name") or name)
        if file.get("mode") == "tombstone":
            return render.deleted_file()
    if file.get("mode") == "external" or file.get("is_external"):
        return render.external_file(name, file.get("external_type") or None)
    if not is_csv(file):
        return render.not_csv(name, file.get("pretty_type") or None)
    url = file.get("url_private_download") or ""
    if not url:
        return render.no_access(name)
    return Readable(SlackFileRef(file_id=str(file["id"]), url=str(url), name=name, size=file.get("size")), file)


def on_file_share(req: Request) -> None:
    event = req.body["event"]
    deps = req.deps
    text = str(event.get("text") or "")
    named = named_tables(text, dict(deps.tables.tables))
    place_tables = deps.permissions.tables_for_place(req.place)
    if not place_tables and not named and not req.place.is_dm:
        log.info("files shared in %s, where no table may be uploaded and none was named: left alone", req.channel)
        return
    dry_run = text.strip().lower().startswith(DRY_RUN_WORDS)
    lines: list[str] = []
    menus: list[tuple[SlackFileRef, list[str]]] = []
    starts: list[tuple[str, SlackFileRef]] = []
    for raw in event.get("files") or []:
        resolved = _resolve(req, raw)
        if isinstance(resolved, str):
            lines.append(resolved)
            continue
        ref = resolved.ref
        stem = file_stem(ref.name)
        if stem in deps.tables.tables:  # its own name first
            table: str | None = stem
        elif len(named) == 1:
            table = named[0]
        else:
            table = None
        if table is None:
            choices = [t for t in named if req.can_upload(t)] if named else None
            if choices is None:
                choices = [t.alias for t in deps.permissions.tables_for_person(req.person, req.place)]
            if not choices:
                candidates = named or [t.alias for t in place_tables]
                reason = req.can_upload(candidates[0]).reason if candidates else render.no_table_here(req.place.is_dm)
                lines.append(render.refused_file(ref.name, reason or "No table here is yours to upload."))
            else:
                menus.append((ref, choices))
            continue
        decision = req.can_upload(table)
        if not decision:
            lines.append(render.refused_file(ref.name, decision.reason))
            continue
        starts.append((table, ref))
    if lines:
        req.replies.post(req.channel, req.thread_ts, render.file_lines(lines))
    for ref, choices in menus:
        req.replies.post(
            req.channel, req.thread_ts, render.choose_table(ref.file_id, ref.name, choices, asked_by=req.user)
        )
    for table, ref in starts:
        if dry_run:
            req.replies.post(req.channel, req.thread_ts, render.dry_run(table, deps.intake.dry_run(table, ref)))
            continue
        upload = Upload(
            table, req.user, ref, f"file:{ref.file_id}:{req.channel}", channel_id=req.channel, thread_ts=req.thread_ts
        )
        start_upload(deps, req.replies, upload)


def on_table_chosen(req: Request) -> None:
    """A pick from the "which table?" menu: the first pick wins, later pickers are told who chose what."""
    action = req.body["actions"][0]
    table = str(action["selected_option"]["value"])
    file_id = str(action.get("block_id", "")).removeprefix(render.CHOOSE_TABLE_BLOCK_PREFIX)
    if table not in req.deps.tables.tables:
        req.tell(f"There is no table {render.code(table)} any more.")
        return
    decision = req.can_upload(table)
    if not decision:
        req.tell(decision.reason)
        return
    first, value = req.deps.store.claim_once(
        f"menu:{req.channel}:{file_id}", f"{req.user} {table}", ttl_seconds=req.deps.delivery_memory_seconds
    )
    if not first:
        chooser, _, chosen = value.partition(" ")
        req.tell(render.already_chosen(chosen, chooser))
        return
    try:
        file = dict(req.deps.client.files_info(file=file_id)["file"])
    except SLACK_ERRORS:
        req.tell(render.no_access(file_id))
        return
    ref = SlackFileRef(
        file_id=file_id,
        url=str(file.get("url_private_download") or ""),
        name=str(file.get("name") or file_id),
        size=file.get("size"),
    )
    message = req.body.get("message") or {}
    if message.get("ts"):
        req.replies.edit(req.channel, message["ts"], render.table_chosen(ref.name, table, req.user))
    upload = Upload(
        table, req.user, ref, f"file:{file_id}:{req.channel}", channel_id=req.channel, thread_ts=req.thread_ts
    )
    if start_upload(req.deps, req.replies, upload) is None:
        req.tell(f"{render.code(ref.name)} is already being handled in this thread.")
