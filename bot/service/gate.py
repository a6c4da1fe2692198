"""The table gate: one upload in flight per upstream table, and D·engage's spacing between calls.

A job takes its table's gate before it sends a part, renews it at every status check and
releases it when it ends (`bot.service.notices.finish`). The gate is keyed by the table's
upstream identity, so two aliases of one upstream table share it.
"""

from __future__ import annotations

from bot.config import TableConfig
from bot.targets.base import TargetClient


def gate_key(table: TableConfig) -> str:
    """The gate's key: the target and the table's upstream identity."""
    upstream = table.enrichment_id or table.table_id or table.table_name or table.alias
    return f"{table.target.name}:{upstream}"


def spacing_seconds(client: TargetClient) -> float:
    """The least time between two sends to one table (the target's rule; 0 for none)."""
    return client.part_spacing_seconds
