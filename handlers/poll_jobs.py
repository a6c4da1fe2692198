"""Lambda entry point of the scheduled poller (EventBridge, every minute)."""

from __future__ import annotations

import logging
from typing import Any

from bot.observability import flush_metrics, job_context, setup_logging
from bot.poller import Poller
from bot.secrets import load_ssm_secrets
from bot.settings import POLL_FUNCTION, Settings, load_settings
from bot.wiring import build_poller

log = logging.getLogger("handlers.poll_jobs")

# Built on the first invocation and kept while the container is warm (connections, tokens, limiters).
_built: dict[str, Poller] = {}
_settings: dict[str, Settings] = {}
# Seconds kept free before Lambda's own timeout for the steps still in flight.
_MARGIN_SECONDS = 10.0


def handler(event: dict[str, Any], context: Any) -> dict[str, object]:
    poller = _built.get("poller")
    if poller is None:
        settings = _settings["settings"] = load_settings()
        setup_logging(settings, json_lines=True)
        load_ssm_secrets(POLL_FUNCTION)
        poller = _built["poller"] = build_poller()
    run_seconds = poller.settings.run_seconds
    if context is not None and hasattr(context, "get_remaining_time_in_millis"):
        run_seconds = min(run_seconds, context.get_remaining_time_in_millis() / 1000 - _MARGIN_SECONDS)
    with job_context(request_id=getattr(context, "aws_request_id", None)):
        try:
            report = poller.run(max(0.0, run_seconds)).to_dict()
        finally:
            flush_metrics(_settings["settings"])
        log.info("poller run: %s", report)
    return report
