"""Local emulators of the upstream APIs (demo, local runs, tests), built from docs/upstream-apis.md.

`tablebot sandbox bigpanda|dengage [--port N] [--settings FILE]` serves one on 127.0.0.1; tests
start one in a thread with `start_sandbox(kind, ...)` and `stop()` it after.

Demo credentials (the defaults): BigPanda token `demo-bigpanda-token` (enrichment `demo`:
host -> service, owner); D·engage user key `demo-userkey`, password `demo-password` (tables
`demo_contacts` with primary key contact_key, and `demo_events` without one).

The settings file (TOML) holds the keys of `SandboxSettings` at the top level and the tables under
`[tables.ID]` (BigPanda: `fields = [{title, type}]` or `query = [...]`, `result = [...]`;
D·engage: `columns = [{name, type, primary, nullable}]`, `public_id`). Defining tables replaces
the demo tables.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devtools.sandbox.bigpanda import BigPandaSandbox
from devtools.sandbox.dengage import DengageSandbox
from devtools.sandbox.server import SandboxApp, SandboxServer, SandboxSettings

__all__ = ["SandboxServer", "SandboxSettings", "create_sandbox", "load_settings_file", "start_sandbox"]

_APPS: dict[str, type[SandboxApp]] = {"bigpanda": BigPandaSandbox, "dengage": DengageSandbox}


def load_settings_file(path: Path) -> dict[str, Any]:
    """The settings file as a dict (ValueError with the reason when it is not usable)."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ValueError(f"sandbox settings file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"sandbox settings file {path} is not valid TOML: {exc}") from None


def create_sandbox(kind: str, settings: Mapping[str, Any] | None = None, port: int = 0) -> SandboxServer:
    """A server (not started) for `kind`, with settings and tables from a settings mapping."""
    if kind not in _APPS:
        raise ValueError(f"no sandbox for {kind!r}; choose one of {', '.join(_APPS)}")
    values = dict(settings or {})
    tables = values.pop("tables", None)
    parsed = SandboxSettings()
    parsed.update(values)
    app = _APPS[kind](parsed, tables)
    return SandboxServer(app, port=port)


def start_sandbox(kind: str, settings: Mapping[str, Any] | None = None, port: int = 0) -> SandboxServer:
    """A started sandbox serving in a thread; its `base_url` is the target's base_url."""
    server = create_sandbox(kind, settings, port)
    server.start()
    return server
