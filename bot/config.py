"""The tables file, read when asked, never at import time (environment settings: `bot.settings`).

The tables file (TOML) names the upstream accounts (`[targets.X]`) and the tables people may
upload to (`[tables.Y]`). Keys this module does not know are kept in `options`/`extra`, so each
target module and later features (permissions, approvals) own their keys and defaults.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.errors import ConfigError
from bot.schema import TARGET_KINDS, Column, ColumnType, TableSchema, TargetKind
from bot.settings import Settings

DEFAULT_BIGPANDA_URL = "https://api.bigpanda.io"
DEFAULT_DENGAGE_URL = "https://api.dengage.com/rest"


@dataclass(frozen=True)
class TargetConfig:
    name: str
    kind: TargetKind
    base_url: str
    api_version: str = "2.1"
    token_env: str | None = None
    userkey_env: str | None = None
    password_env: str | None = None
    # Everything else under [targets.X]: the target module reads its own settings from here.
    options: Mapping[str, Any] = field(default_factory=dict)

    def secret(self, env_key: str | None, environ: Mapping[str, str] | None = None) -> str:
        """The value of the environment variable named by `env_key`; the name, never the value, in errors."""
        env = os.environ if environ is None else environ
        if not env_key:
            raise ConfigError(f"target {self.name!r}: no environment variable is named for its credentials")
        value = env.get(env_key)
        if not value:
            raise ConfigError(f"target {self.name!r}: environment variable {env_key} is not set")
        return value


ANY = "*"
DEFAULT_MAX_REMOVED_SHARE = 0.2


@dataclass(frozen=True)
class TableAccess:
    """A table's permissions and team channels, from `[tables.Y]`; the default is to deny.

    Checked once when the tables file is read (`ACCESS_KEYS`): a wrong type or an id of the wrong
    kind is a `ConfigError` naming the key and the table, never a silent "nobody may".
    """

    channels: tuple[str, ...] = ()  # where it may be uploaded from ("*": any channel)
    users: tuple[str, ...] = ()  # who may upload ("*": anyone in an allowed channel)
    usergroups: tuple[str, ...] = ()  # user groups whose members may upload
    approval: bool = False  # a second person must press Approve
    approvers: tuple[str, ...] = ()  # people (U...) and user groups (S...) who may approve
    max_removed_share: float = DEFAULT_MAX_REMOVED_SHARE  # BigPanda: more removed rows wait for a Confirm
    allow_external_users: bool = False  # Slack Connect: people of another organisation may act
    allow_dms: bool = False  # files may be shared with the bot in a direct message
    notify_channels: tuple[str, ...] = ()  # every ending is also announced here

    @property
    def helpers(self) -> tuple[str, ...]:
        """Who to ask about this table: its approvers, else the people allowed to upload."""
        return self.approvers or tuple(u for u in (*self.users, *self.usergroups) if u != ANY)


# key -> (what it holds, the id prefixes it accepts; None for non-list keys)
_ID_KEYS: dict[str, tuple[str, tuple[str, ...], bool]] = {
    "channels": ("channel ids", ("C", "G"), True),
    "users": ("user ids", ("U", "W"), True),
    "usergroups": ("user group ids", ("S",), False),
    "approvers": ("user or user group ids", ("U", "W", "S"), False),
    "notify_channels": ("channel ids", ("C", "G"), False),
}
_BOOL_KEYS = ("approval", "allow_external_users", "allow_dms")
ACCESS_KEYS = frozenset({*_ID_KEYS, *_BOOL_KEYS, "max_removed_share"})
_SLACK_ID = re.compile(r"[A-Z][A-Z0-9]{2,}")


def _parse_access(alias: str, raw: Mapping[str, Any], where: str) -> TableAccess:
    found: dict[str, Any] = {}
    for key, (what, prefixes, star) in _ID_KEYS.items():
        value = raw.get(key, [])
        example = f'{key} = ["{prefixes[0]}0123ABCD"]'
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: [tables.{alias}] {key} must be a list of Slack {what}, e.g. {example}")
        for item in value:
            if item == ANY and star:
                continue
            if not (_SLACK_ID.fullmatch(item) and item.startswith(prefixes)):
                allowed = " or ".join(f"{p}..." for p in prefixes) + (' or "*"' if star else "")
                raise ConfigError(
                    f"{where}: [tables.{alias}] {key} holds {item!r}, which is not one of its {what} ({allowed}); "
                    f"Slack ids are in a profile's or channel's details, e.g. {example}"
                )
        found[key] = tuple(value)
    for key in _BOOL_KEYS:
        value = raw.get(key, False)
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: [tables.{alias}] {key} must be true or false, not {value!r}")
        found[key] = value
    share = raw.get("max_removed_share", DEFAULT_MAX_REMOVED_SHARE)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
        raise ConfigError(
            f"{where}: [tables.{alias}] max_removed_share must be a number from 0 to 1 (0.2 is 20%), not {share!r}"
        )
    return TableAccess(max_removed_share=float(share), **found)


@dataclass(frozen=True)
class TableConfig:
    alias: str
    target: TargetConfig
    enrichment_id: str | None = None
    table_name: str | None = None
    table_id: str | None = None
    columns: tuple[Column, ...] | None = None
    column_mapping: Mapping[str, str] = field(default_factory=dict)
    # The target's own table options (D·engage `constants`); every key was checked at load.
    extra: Mapping[str, Any] = field(default_factory=dict)
    # Who may upload, approve and hear about this table (validated at load).
    access: TableAccess = field(default_factory=TableAccess)

    @property
    def kind(self) -> TargetKind:
        return self.target.kind

    def configured_schema(self) -> TableSchema | None:
        """The schema written in the tables file, or None when it must be fetched upstream."""
        if self.columns is None:
            return None
        return TableSchema(
            kind=self.kind,
            columns=self.columns,
            table_name=self.table_name or self.enrichment_id,
            column_mapping=dict(self.column_mapping),
        )


@dataclass(frozen=True)
class TablesFile:
    path: Path | None
    targets: Mapping[str, TargetConfig]
    tables: Mapping[str, TableConfig]

    def table(self, alias: str) -> TableConfig:
        try:
            return self.tables[alias]
        except KeyError:
            known = ", ".join(sorted(self.tables)) or "none"
            raise ConfigError(f"unknown table {alias!r}; the tables file defines: {known}") from None

    def credential_names(self) -> set[str]:
        """The environment variables the targets name for their credentials (secrets)."""
        return {
            name
            for target in self.targets.values()
            for name in (target.token_env, target.userkey_env, target.password_env)
            if name
        }


_TARGET_KEYS = {"kind", "base_url", "api_version", "token_env", "userkey_env", "password_env"}
_TABLE_KEYS = {
    "target",
    "enrichment_id",
    "table_name",
    "table_id",
    "columns",
    "column_mapping",
    "primary_key",
    "column_types",
    "query_columns",
}
# Table keys a target module reads from `extra` (D·engage: constant values for every row).
_TARGET_TABLE_KEYS = {"constants"}
TABLE_KEYS = frozenset(_TABLE_KEYS | _TARGET_TABLE_KEYS | ACCESS_KEYS)


def load_tables_file(path: str | Path) -> TablesFile:
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"tables file {p} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"tables file {p} is not valid TOML: {exc}") from None
    return parse_tables(data, path=p)


def parse_tables(data: Mapping[str, Any], path: Path | None = None) -> TablesFile:
    where = str(path) if path else "tables file"
    targets: dict[str, TargetConfig] = {}
    for name, raw in _section(data, "targets", where).items():
        targets[name] = _parse_target(name, raw, where)
    tables: dict[str, TableConfig] = {}
    for alias, raw in _section(data, "tables", where).items():
        tables[alias] = _parse_table(alias, raw, targets, where)
    return TablesFile(path=path, targets=targets, tables=tables)


def _section(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: [{key}] must be a table of named entries")
    return value


def _parse_target(name: str, raw: Any, where: str) -> TargetConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: [targets.{name}] must be a table")
    kind = raw.get("kind")
    if kind not in TARGET_KINDS:
        raise ConfigError(f"{where}: [targets.{name}] kind must be one of {', '.join(TARGET_KINDS)}, not {kind!r}")
    default_url = DEFAULT_BIGPANDA_URL if kind == "bigpanda" else DEFAULT_DENGAGE_URL
    api_version = str(raw.get("api_version", "2.1"))
    if kind == "bigpanda" and api_version not in ("2.1", "1.0"):
        raise ConfigError(f'{where}: [targets.{name}] api_version must be "2.1" or "1.0", not {api_version!r}')
    return TargetConfig(
        name=name,
        kind=kind,
        base_url=str(raw.get("base_url", default_url)).rstrip("/"),
        api_version=api_version,
        token_env=raw.get("token_env"),
        userkey_env=raw.get("userkey_env"),
        password_env=raw.get("password_env"),
        options={k: v for k, v in raw.items() if k not in _TARGET_KEYS},
    )


def _parse_table(alias: str, raw: Any, targets: Mapping[str, TargetConfig], where: str) -> TableConfig:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: [tables.{alias}] must be a table")
    target_name = str(raw.get("target", ""))
    if target_name not in targets:
        known = ", ".join(sorted(targets)) or "none"
        raise ConfigError(f"{where}: [tables.{alias}] target {target_name!r} is not defined; targets: {known}")
    target = targets[target_name]
    unknown = sorted(set(raw) - TABLE_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: [tables.{alias}] has unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(k) for k in unknown)} (a typo?); the keys are: {', '.join(sorted(TABLE_KEYS))}"
        )
    if target.kind == "bigpanda" and not raw.get("enrichment_id"):
        raise ConfigError(f"{where}: [tables.{alias}] needs enrichment_id (a BigPanda mapping enrichment)")
    if target.kind == "dengage" and not (raw.get("table_name") or raw.get("table_id")):
        raise ConfigError(f"{where}: [tables.{alias}] needs table_name or table_id (a D·engage data table)")
    mapping = raw.get("column_mapping", {})
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{where}: [tables.{alias}] column_mapping must map table columns to file headers")
    return TableConfig(
        alias=alias,
        target=target,
        enrichment_id=raw.get("enrichment_id"),
        table_name=raw.get("table_name"),
        table_id=raw.get("table_id"),
        columns=_parse_columns(alias, raw, target.kind, where),
        column_mapping={str(k): str(v) for k, v in mapping.items()},
        extra={k: v for k, v in raw.items() if k not in _TABLE_KEYS and k not in ACCESS_KEYS},
        access=_parse_access(alias, raw, where),
    )


def _parse_columns(alias: str, raw: Mapping[str, Any], kind: TargetKind, where: str) -> tuple[Column, ...] | None:
    """`columns = ["a", "b"]` plus optional `primary_key`, `column_types`, `query_columns`."""
    names = raw.get("columns")
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"{where}: [tables.{alias}] columns must be a list of column names")
    primary = set(raw.get("primary_key", []))
    query = set(raw.get("query_columns", []))
    types = raw.get("column_types", {})
    for key_name, given in (("primary_key", primary), ("query_columns", query), ("column_types", set(types))):
        unknown = given - set(names)
        if unknown:
            raise ConfigError(
                f"{where}: [tables.{alias}] {key_name} names unknown columns: {', '.join(sorted(unknown))}"
            )
    columns = []
    for name in names:
        type_name = str(types.get(name, "TEXT")).upper()
        try:
            col_type = ColumnType(type_name)
        except ValueError:
            allowed = ", ".join(t.value for t in ColumnType)
            raise ConfigError(
                f"{where}: [tables.{alias}] column {name!r} has type {type_name!r}; use one of {allowed}"
            ) from None
        role = None
        if kind == "bigpanda" and query:
            role = "query_tag" if name in query else "result_tag"
        columns.append(
            Column(name=name, type=col_type, primary=name in primary, nullable=name not in primary, role=role)
        )
    return tuple(columns)


def load_tables(settings: Settings, override: str | Path | None = None) -> TablesFile:
    """The tables file given on the command line (`override`), else `TABLEBOT_CONFIG`."""
    path = override or settings.config_path
    if path is None:
        raise ConfigError("no tables file: pass --config PATH or set TABLEBOT_CONFIG")
    return load_tables_file(path)
