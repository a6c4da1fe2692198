"""What a file was checked against, so it is never sent anywhere else.

A job records its target identity when its file is validated (the intake) and the sender compares
it with the identity at sending time: the tables file may change between the two (a queued job,
an approval that takes a day, a Retry), and so may a schema read upstream. A different identity
ends the job with a clear message instead of sending ("the table's settings changed after this
file was checked; share it again").

The identity is the upstream table (enrichment id, or D·engage table id / name) on its target
(name, kind, base URL, API version) and the schema the file was checked against (each column's
name, type, role and key flag), plus the column mapping: everything that decides where the rows
go and what they mean. Permissions, approvals and notify channels are not part of it.
"""

from __future__ import annotations

import json
from typing import Any

from bot.config import TableConfig
from bot.schema import TableSchema


def identity_of(table: TableConfig, schema: TableSchema) -> dict[str, Any]:
    target = table.target
    return {
        "target": target.name,
        "kind": target.kind,
        "base_url": target.base_url,
        "api_version": target.api_version,
        "enrichment_id": table.enrichment_id,
        "table_id": table.table_id,
        "table_name": table.table_name,
        "columns": [
            {"name": c.name, "type": str(c.type), "role": c.role, "primary": c.primary} for c in schema.columns
        ],
        "column_mapping": dict(sorted(table.column_mapping.items())),
    }


def identity_json(table: TableConfig, schema: TableSchema) -> str:
    """The identity as the job record keeps it: canonical JSON, so equal identities compare equal."""
    return json.dumps(identity_of(table, schema), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def identity_changes(recorded: str, current: str) -> list[str]:
    """What differs between two identities, for people: ["columns: id,name,city → id,name,town", ...]."""
    try:
        before = json.loads(recorded)
    except ValueError:
        return ["the recorded identity cannot be read"]
    after = json.loads(current)
    changes = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if key == "columns":
            changes.append(f"columns: {_columns(old)} → {_columns(new)}")
        else:
            changes.append(f"{key}: {old if old is not None else '(none)'} → {new if new is not None else '(none)'}")
    return changes


def _columns(columns: Any) -> str:
    if not isinstance(columns, list):
        return "(none)"
    return ",".join(
        f"{c.get('name')}"
        + (f" {c.get('type')}" if c.get("type") not in (None, "TEXT") else "")
        + (" key" if c.get("primary") else "")
        for c in columns
        if isinstance(c, dict)
    )
