"""Fixtures of the Slack scenarios: the local Slack Web API with the scenario's people and
channels, a SQLite job store, and the front end built through the Lambda handler (`front`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.store import JobStore, SqliteJobStore
from devtools.slack_api import LocalSlackApi
from tests.fixtures_upstream import Upstream
from tests.slack_support import ALICE, BOB, CAROL, DAVE, OPS, RANDOM, TEAM, Front, build_front


@pytest.fixture
def slack() -> Iterator[LocalSlackApi]:
    with LocalSlackApi() as api:
        api.add_channel(OPS, "ops")
        api.add_channel(RANDOM, "random")
        api.add_channel(TEAM, "hosts-team")
        for user, name in ((ALICE, "alice"), (BOB, "bob"), (CAROL, "carol"), (DAVE, "dave")):
            api.add_user(user, name)
        api.add_usergroup("S0ONCALL1", [DAVE])
        api.add_usergroup("S0LEADS01", [BOB])
        yield api
        assert api.internal_errors == []


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[JobStore]:
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    yield store
    store.close()


@pytest.fixture
def front(
    tmp_path: Path,
    sqlite_store: JobStore,
    slack: LocalSlackApi,
    bigpanda_upstream: Upstream,
    dengage_upstream: Upstream,
) -> Iterator[Front]:
    built = build_front(tmp_path, sqlite_store, slack, bigpanda_upstream.base_url, dengage_upstream.base_url)
    yield built
    built.lambdas.join()
    built.http.close()
