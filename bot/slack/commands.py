"""`/table ...`: the slash command's text parsed into one value. Pure; no Slack calls.

Anything that does not parse becomes `Help` with a note saying what was wrong, so unknown input
gets the help, never silence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CommandName = Literal["help", "tables", "upload", "validate", "status", "jobs", "history", "restore"]

USAGE: tuple[tuple[str, str], ...] = (
    ("help", "this help"),
    ("tables", "the tables this channel may upload to, their columns and target"),
    ("upload TABLE s3://bucket/key.csv", "validate and upload a file from S3 (or share a CSV here, naming the table)"),
    ("validate TABLE [s3://bucket/key.csv]", "check a file without uploading it (dry run)"),
    ("status [JOB]", "where an upload is (default: your latest)"),
    ("jobs [TABLE]", "recent uploads and how they ended"),
    ("history TABLE", "who uploaded what to the table, when, with which result"),
    ("restore TABLE", "upload the table's previous good version again"),
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
    if verb in ("history", "restore"):
        if len(args) != 1:
            return _help(f"`{verb}` needs exactly one table name, e.g. `{verb} hosts`.")
        return Command("history" if verb == "history" else "restore", table=args[0])
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
