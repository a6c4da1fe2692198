"""What a target table looks like: the columns a file must carry, as the validator sees them.

A schema comes from the tables file (`columns = [...]`) or from the upstream API (the target
client's `fetch_schema`); both produce this one value, so validation never knows the source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

TargetKind = Literal["bigpanda", "dengage"]
TARGET_KINDS: tuple[TargetKind, ...] = ("bigpanda", "dengage")


class ColumnType(StrEnum):
    """D·engage column types; BigPanda columns are all TEXT."""

    TEXT = "TEXT"
    INTEGER = "INTEGER"
    DECIMAL = "DECIMAL"
    BOOLEAN = "BOOLEAN"
    DATE = "DATE"
    DATETIME = "DATETIME"
    EMAIL = "EMAIL"
    PHONE = "PHONE"


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType = ColumnType.TEXT
    primary: bool = False
    nullable: bool = True
    # BigPanda only: "query_tag" or "result_tag" (None when unknown, e.g. columns given on the CLI).
    role: str | None = None


@dataclass(frozen=True)
class TableSchema:
    kind: TargetKind
    columns: tuple[Column, ...]
    # D·engage: the upstream table name (rules refuse master_contact); BigPanda: the enrichment name.
    table_name: str | None = None
    # D·engage: table column -> file header (the API's tableColumn/fileColumnHeader), for files
    # whose headers differ from the table's column names.
    column_mapping: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def primary_key(self) -> list[str]:
        return [c.name for c in self.columns if c.primary]

    @property
    def result_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.role == "result_tag"]

    def column(self, name: str) -> Column | None:
        for c in self.columns:
            if c.name == name:
                return c
        return None
