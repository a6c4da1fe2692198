"""Fixtures that start the upstream sandboxes (devtools/sandbox) on free ports.

Each test gets a fresh emulator serving in a thread on 127.0.0.1 (its state starts empty, its
jobs take a fraction of a second), an admin client for its `/_sandbox` API, and a tables file
whose targets point at it. Retries back off in milliseconds so fault tests stay fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.config import TablesFile, load_tables_file
from bot.targets import LimiterRegistry
from devtools.sandbox import SandboxServer, start_sandbox
from devtools.sandbox.admin import SandboxAdmin

# Demo credentials of the sandboxes, set in the tables file's environment names.
SANDBOX_ENV = {
    "TEST_BIGPANDA_TOKEN": "demo-bigpanda-token",
    "TEST_DENGAGE_USERKEY": "demo-userkey",
    "TEST_DENGAGE_PASSWORD": "demo-password",
}
# Retry-After in hundredths of a second (our client reads a number of seconds, fractions too) keeps 429 tests fast.
FAST_JOBS = {"job_seconds": 0.3, "slow_seconds": 1.5, "retry_after": "0.01"}
PART_SPACING = 0.3


@dataclass
class Upstream:
    server: SandboxServer
    admin: SandboxAdmin

    @property
    def base_url(self) -> str:
        return self.server.base_url


def _start(kind: str, settings: dict[str, Any]) -> Iterator[Upstream]:
    server = start_sandbox(kind, settings)
    admin = SandboxAdmin(server.root_url)
    try:
        yield Upstream(server, admin)
    finally:
        admin.close()
        server.stop()


@pytest.fixture
def bigpanda_upstream() -> Iterator[Upstream]:
    yield from _start("bigpanda", dict(FAST_JOBS))


@pytest.fixture
def dengage_upstream() -> Iterator[Upstream]:
    yield from _start("dengage", {**FAST_JOBS, "table_call_spacing_seconds": PART_SPACING})


def write_tables_file(
    path: Path,
    *,
    bigpanda_url: str = "http://127.0.0.1:9",
    dengage_url: str = "http://127.0.0.1:9/rest",
    api_version: str = "2.1",
    extra_target: str = "",
    extra_tables: str = "",
) -> Path:
    """A tables file with a BigPanda target `bp` (table `hosts`) and a D·engage target `dg`
    (tables `contacts`, with a primary key, and `events`, appended to)."""
    path.write_text(
        f"""
[targets.bp]
kind = "bigpanda"
base_url = "{bigpanda_url}"
api_version = "{api_version}"
token_env = "TEST_BIGPANDA_TOKEN"
backoff_seconds = 0.01
max_backoff_seconds = 0.05
max_retry_after_seconds = 0.05
{extra_target}

[targets.dg]
kind = "dengage"
base_url = "{dengage_url}"
userkey_env = "TEST_DENGAGE_USERKEY"
password_env = "TEST_DENGAGE_PASSWORD"
part_spacing_seconds = {PART_SPACING}
backoff_seconds = 0.01
max_backoff_seconds = 0.05
max_retry_after_seconds = 0.05
{extra_target}

[tables.hosts]
target = "bp"
enrichment_id = "demo"
columns = ["host", "service", "owner"]
query_columns = ["host"]

[tables.contacts]
target = "dg"
table_name = "demo_contacts"
columns = ["contact_key", "email", "city"]
primary_key = ["contact_key"]

[tables.events]
target = "dg"
table_name = "demo_events"
columns = ["event", "happened_at", "amount"]
column_types = {{ happened_at = "DATETIME", amount = "DECIMAL" }}
{extra_tables}
"""
    )
    return path


@pytest.fixture
def sandbox_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The sandboxes' demo credentials in the environment (for the CLI)."""
    for key, value in SANDBOX_ENV.items():
        monkeypatch.setenv(key, value)
    return dict(SANDBOX_ENV)


@pytest.fixture
def upstream_tables(tmp_path: Path, bigpanda_upstream: Upstream, dengage_upstream: Upstream) -> TablesFile:
    path = write_tables_file(
        tmp_path / "tables.toml", bigpanda_url=bigpanda_upstream.base_url, dengage_url=dengage_upstream.base_url
    )
    return load_tables_file(path)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=httpx.Timeout(5.0, connect=2.0)) as client:
        yield client


@pytest.fixture
def pacing() -> LimiterRegistry:
    """Pacing private to the test, so tests do not wait on each other's limiters."""
    return LimiterRegistry()
