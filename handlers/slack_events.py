"""Lambda entry point of the Slack app (API Gateway → Bolt's AWS Lambda adapter).

Bolt acknowledges within Slack's 3 seconds and re-invokes this function asynchronously for the
lazy listeners (it needs `lambda:InvokeFunction` on itself).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slack_bolt import App
from slack_bolt.adapter.aws_lambda import SlackRequestHandler
from slack_bolt.adapter.aws_lambda.lazy_listener_runner import LambdaLazyListenerRunner

Handle = Callable[[dict[str, Any], Any], dict[str, Any]]

# Built on the first invocation and kept while the container is warm.
_built: dict[str, Handle] = {}
_settings: list[Any] = []


def make_handler(app: App, *, lambda_client: Any = None) -> Handle:
    """The Lambda handler for `app`. `lambda_client` (anything with boto3's `invoke`) replaces
    the Lambda API for the lazy re-invocation: tests run it in-process."""
    request_handler = SlackRequestHandler(app)
    if lambda_client is not None:
        app.listener_runner.lazy_listener_runner = LambdaLazyListenerRunner(request_handler.logger, lambda_client)
    return request_handler.handle


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    from bot.observability import flush_metrics, job_context, setup_logging
    from bot.settings import load_settings

    handle = _built.get("handle")
    if handle is None:
        from bot.secrets import load_ssm_secrets
        from bot.settings import SLACK_FUNCTION
        from bot.slack.app import build_app
        from bot.slack.wiring import build_slack_deps

        _settings.append(load_settings())
        setup_logging(_settings[0], json_lines=True)
        load_ssm_secrets(SLACK_FUNCTION)
        handle = _built["handle"] = make_handler(build_app(build_slack_deps()))
    try:
        with job_context(request_id=getattr(context, "aws_request_id", None)):
            return handle(event, context)
    finally:
        # Each invocation's metrics (files checked, uploads started by the lazy listeners) as EMF.
        flush_metrics(_settings[0])
