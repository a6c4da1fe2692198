"""`/table check TABLE` in Slack: an approver proves the table against its sandbox, step by step;
anyone else is told who may."""

from __future__ import annotations

from tests.fixtures_upstream import Upstream
from tests.slack_support import ALICE, BOB, Front


def answer(front: Front, user: str, text: str) -> str:
    """The answer to the command: its response, or the ephemeral note it posted."""
    before = len(front.ephemerals(user))
    request = front.command(user, text, via_lambda=False)
    front.wait(lambda: front.responses(request) or front.ephemerals(user)[before:])
    return (front.responses(request) or front.ephemerals(user)[before:])[0]


def test_an_approver_gets_every_step(front: Front) -> None:
    text = answer(front, BOB, "check gated")
    assert "Check of" in text and "gated" in text and "all steps passed" in text
    for step in ("config", "login", "table", "schema", "compare"):
        assert f"*{step}*" in text
    assert "enrichment demo" in text


def test_a_failed_step_says_what_to_fix(front: Front, bigpanda_upstream: Upstream) -> None:
    bigpanda_upstream.admin.settings(allowed_addresses=["10.9.9.9"])
    text = answer(front, BOB, "check gated")
    assert "not ready" in text and "not allowed" in text and "IP allow-list" in text


def test_someone_who_is_not_an_approver_is_told_who_is(front: Front) -> None:
    text = answer(front, ALICE, "check gated")
    assert "Only approvers of" in text and "S0LEADS01" in text
    nobody = answer(front, ALICE, "check hosts")  # a table without approvers
    assert "tablebot check --table hosts" in nobody
