"""`tablebot check --table ALIAS`: prove a table's configuration against its upstream, step by step.

Steps, each reported with what was seen and, when it fails, what to fix:

1. config:      the target's settings are ones it knows, the credentials' variables are set;
2. login:       the vendor accepts them (D·engage logs in; BigPanda has no login step);
3. table:       the upstream table exists (D·engage by `table_name` through the table list, or
                `table_id`; BigPanda the enrichment);
4. schema:      its schema can be read;
5. compare:     the tables file's columns, key and roles agree with the schema (a table without
                `columns` is read upstream at every upload: nothing to compare, said so); a
                D·engage column type the tables file checks differently is a warning.

A failed step stops the steps after it (they would fail for the same reason). Nothing is uploaded.
The job status path and words cannot be proved without an upload: the last line says so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from bot.config import TableConfig
from bot.errors import ConfigError, UpstreamError
from bot.schema import TableSchema

STEPS = ("config", "login", "table", "schema", "compare")


@dataclass
class CheckStep:
    name: str
    ok: bool
    detail: str
    fix: str | None = None
    kind: str | None = None  # the UpstreamError kind of a failed step


@dataclass
class CheckResult:
    table: str
    target: str
    steps: list[CheckStep] = field(default_factory=list)
    config_error: bool = False

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps) and len(self.steps) == len(STEPS)

    @property
    def failed_kind(self) -> str | None:
        return next((s.kind for s in self.steps if not s.ok), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "target": self.target,
            "ok": self.ok,
            "steps": [{"step": s.name, "ok": s.ok, "detail": s.detail, "fix": s.fix} for s in self.steps],
        }


_FIX_BY_KIND = {
    "auth": "check the credentials' environment variables and that the account may use this API",
    "address_not_allowed": "add the bot's outgoing address to the account's IP allow-list",
    "unreachable": "check base_url in the tables file and that this machine can reach it",
    "server": "the vendor failed; try again later",
    "rate_limited": "the vendor asked to wait; run the check again in a minute",
    "rejected": "see the vendor's answer above",
    "status_unreadable": "see the vendor's answer above",
}


def check_table(table: TableConfig, http: httpx.Client, environ: Mapping[str, str] | None = None) -> CheckResult:
    """Run the steps against the table's target; never raises for the upstream's answers."""
    from bot.targets import build_client

    result = CheckResult(table=table.alias, target=table.target.name)
    try:
        client = build_client(table.target, http, environ)
    except ConfigError as exc:
        result.config_error = True
        result.steps.append(
            CheckStep("config", False, str(exc), "fix [targets] in the tables file or set the variable it names")
        )
        return result
    names = [n for n in (table.target.token_env, table.target.userkey_env, table.target.password_env) if n]
    result.steps.append(CheckStep("config", True, f"{', '.join(names)} set"))

    def step(name: str, run: Callable[[], str]) -> bool:
        try:
            detail = run()
        except UpstreamError as exc:
            result.steps.append(CheckStep(name, False, exc.message, _FIX_BY_KIND.get(exc.kind), exc.kind))
            return False
        result.steps.append(CheckStep(name, True, detail))
        return True

    if not step("login", client.login) or not step("table", lambda: client.locate(table)):
        return result
    upstream: list[TableSchema] = []

    def read_schema() -> str:
        schema = client.fetch_schema(table)
        upstream.append(schema)
        return f"{len(schema.columns)} columns: {', '.join(_describe(c, schema) for c in schema.names)}"

    if not step("schema", read_schema):
        return result
    problems, notes = compare(table, upstream[0])
    if problems:
        result.steps.append(
            CheckStep(
                "compare",
                False,
                "; ".join(problems),
                "make `columns`, `primary_key`, `query_columns` and `column_types` of "
                f"[tables.{table.alias}] match the table upstream (or remove `columns` to read them at upload)",
                "rejected",
            )
        )
    else:
        result.steps.append(CheckStep("compare", True, "; ".join(notes) or "the tables file matches the upstream"))
    return result


def _describe(name: str, schema: TableSchema) -> str:
    column = schema.column(name)
    if column is None:
        return name
    extra = [column.role] if column.role else []
    if schema.kind == "dengage":
        extra.append(str(column.type))
        if column.primary:
            extra.append("key")
    return f"{name} ({', '.join(extra)})" if extra else name


def compare(table: TableConfig, upstream: TableSchema) -> tuple[list[str], list[str]]:
    """What differs between the tables file and the upstream schema (problems), and notes."""
    configured = table.configured_schema()
    notes: list[str] = []
    if upstream.kind == "dengage" and (upstream.table_name or "").lower() == "master_contact":
        return ["master_contact cannot be written with UpsertData: choose another table"], notes
    mapped = [c for c in table.column_mapping if upstream.column(c) is None]
    problems = [f"column_mapping names table columns the table does not have: {', '.join(mapped)}"] if mapped else []
    if configured is None:
        notes.append("the tables file lists no columns: they are read from the upstream at every upload")
        return problems, notes
    mine, theirs = configured.names, upstream.names
    missing = [n for n in theirs if n not in mine]
    unknown = [n for n in mine if n not in theirs]
    if missing:
        problems.append(f"the table has columns the tables file does not list: {', '.join(missing)}")
    if unknown:
        problems.append(f"the tables file lists columns the table does not have: {', '.join(unknown)}")
    if upstream.kind == "dengage":
        if configured.primary_key != upstream.primary_key and set(configured.primary_key) != set(upstream.primary_key):
            problems.append(
                f"primary key: tables file {configured.primary_key or 'none'}, table {upstream.primary_key or 'none'}"
            )
        for column in configured.columns:
            other = upstream.column(column.name)
            if other is not None and other.type != column.type:
                # Not fatal: the vendor checks its own types; the bot only checks them earlier.
                notes.append(
                    f"warning: column {column.name} is {other.type} upstream but checked as {column.type} "
                    f'(add {column.name} = "{other.type}" to column_types to check it before sending)'
                )
    else:
        for column in configured.columns:
            other = upstream.column(column.name)
            if other is not None and column.role and other.role and column.role != other.role:
                problems.append(f"column {column.name}: tables file {column.role}, enrichment {other.role}")
    return problems, notes


def format_check(result: CheckResult) -> str:
    lines = [f"tablebot check {result.table} (target {result.target})"]
    for s in result.steps:
        lines.append(f"  {'ok  ' if s.ok else 'FAIL'} {s.name}: {s.detail}")
        if s.fix and not s.ok:
            lines.append(f"       fix: {s.fix}")
    done = {s.name for s in result.steps}
    for name in STEPS:
        if name not in done:
            lines.append(f"  skip {name}: not run (an earlier step failed)")
    if result.ok:
        lines.append(
            "all steps passed. Not provable without an upload: the job status path and words "
            "(the first upload's status is shown in its thread)"
        )
    return "\n".join(lines)
