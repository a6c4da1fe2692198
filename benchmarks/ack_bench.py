"""How fast the Slack app acknowledges: request → Lambda handler response, warm, for a slash
command and for a file share; and the handler's cold start (import, then first build).

    .venv/bin/python benchmarks/ack_bench.py [--runs 200]

The lazy work is not part of the acknowledgement: the Lambda re-invocation is recorded, not run.
Slack wants the answer within 3 seconds, cold start included.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONTEXT = SimpleNamespace(function_name="bench", invoked_function_arn="arn:aws:lambda:us-east-1:0:function:bench")


class RecordingLambda:
    def __init__(self) -> None:
        self.invocations = 0

    def invoke(self, **_: Any) -> dict[str, int]:
        self.invocations += 1
        return {"StatusCode": 202}


def _cold_import() -> tuple[float, float]:
    code = (
        "import time; t = time.perf_counter(); import handlers.slack_events; "
        "a = time.perf_counter() - t; from bot.slack.app import build_app; from bot.slack.wiring import build_slack_deps; "
        "print(a, time.perf_counter() - t)"
    )
    runs = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
        runs.append(tuple(float(x) for x in out.stdout.split()))
    handler_s = min(r[0] for r in runs)
    full_s = min(r[1] for r in runs)
    return handler_s, full_s


def _stats(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[int(len(ordered) * 0.95) - 1]
    return (
        f"median {statistics.median(ordered) * 1000:.2f} ms, p95 {p95 * 1000:.2f} ms, max {ordered[-1] * 1000:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()

    from bot.slack.app import build_app
    from bot.slack.wiring import build_slack_deps
    from devtools.slack_api import LocalSlackApi
    from handlers.slack_events import make_handler
    from tests.slack_support import ALICE, OPS, SECRET, write_slack_tables

    with tempfile.TemporaryDirectory() as tmp, LocalSlackApi() as slack:
        write_slack_tables(Path(tmp) / "tables.toml", "http://127.0.0.1:9", "http://127.0.0.1:9/rest")
        env = {
            "TABLEBOT_CONFIG": str(Path(tmp) / "tables.toml"),
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_API_BASE_URL": slack.base_url,
            "TABLEBOT_STORE_PATH": str(Path(tmp) / "jobs.sqlite3"),
            "TABLEBOT_STAGING_DIR": str(Path(tmp) / "staging"),
        }
        started = time.perf_counter()
        app = build_app(build_slack_deps(env))
        lambdas = RecordingLambda()
        handle = make_handler(app, lambda_client=lambdas)
        build_s = time.perf_counter() - started
        signer = slack.signer(SECRET)
        shared = slack.register_file("hosts.csv", b"host,service,owner\nweb-1,a,b\n", user=ALICE, channel=OPS)
        message = slack.share_file(OPS, ALICE, shared["id"], text="hosts")

        first = signer.slash_command("/table", "jobs", user_id=ALICE, channel_id=OPS).lambda_event()
        t = time.perf_counter()
        assert handle(first, CONTEXT)["statusCode"] == 200
        first_s = time.perf_counter() - t  # includes auth.test, once per container

        results = {}
        for name, make in (
            (
                "slash command (/table jobs)",
                lambda: signer.slash_command("/table", "jobs", user_id=ALICE, channel_id=OPS),
            ),
            ("file share event", lambda: signer.file_share_event(OPS, message)),
            (
                "help (answered in the ack)",
                lambda: signer.slash_command("/table", "help", user_id=ALICE, channel_id=OPS),
            ),
        ):
            samples = []
            for _ in range(args.runs):
                event = make().lambda_event()
                t = time.perf_counter()
                answer = handle(event, CONTEXT)
                samples.append(time.perf_counter() - t)
                assert answer["statusCode"] == 200
            results[name] = _stats(samples)

    handler_import, full_import = _cold_import()
    print(
        f"runs per case: {args.runs} (warm container, lazy work recorded not run: {lambdas.invocations} re-invocations)"
    )
    for name, line in results.items():
        print(f"ack {name}: {line}")
    print(
        f"cold: import handlers.slack_events {handler_import * 1000:.0f} ms; with the app modules {full_import * 1000:.0f} ms"
    )
    print(
        f"cold: build_slack_deps + build_app {build_s * 1000:.0f} ms; first request (auth.test) {first_s * 1000:.0f} ms"
    )


if __name__ == "__main__":
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    main()
