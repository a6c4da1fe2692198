"""Smoke test of the deployed entry point: `serverless-offline` serves the Slack function of
serverless.yml (its handler, runtime and HTTP API route, read through serverless.offline.yml)
as API Gateway and Lambda would, and a signed slash command goes through it over HTTP.

The function runs from the source tree with this virtualenv's Python; the package itself is
checked by scripts/check-deploy.sh. Needs `bash scripts/setup.sh` (npm installs the plugin).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from devtools.slack_api import LocalSlackApi, SignedRequest
from tests.slack_support import ALICE, OPS, SECRET, write_slack_tables

REPO = Path(__file__).resolve().parent.parent
OSLS = REPO / "node_modules" / ".bin" / "osls"
PLUGIN = REPO / "node_modules" / "serverless-offline" / "package.json"
START_TIMEOUT = 40.0

pytestmark = pytest.mark.timeout(90)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def _offline_env(slack: LocalSlackApi, tmp_path: Path, lambda_port: int) -> dict[str, str]:
    env = dict(os.environ)
    # No AWS account is reached: no SSM path, no profile; fake credentials only sign the lazy
    # re-invocation, which goes to serverless-offline's own Lambda API.
    for key in ("TABLEBOT_SSM_PATH", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        env.pop(key, None)
    venv_bin = str(Path(sys.executable).parent)
    env.update(
        {
            # serverless-offline spawns `python3` for a python3.x runtime, found on PATH (it
            # also puts $VIRTUAL_ENV/bin first): this virtualenv, where slack_bolt is installed.
            "VIRTUAL_ENV": sys.prefix,
            "PATH": venv_bin + os.pathsep + env.get("PATH", ""),
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_API_BASE_URL": slack.base_url,
            "TABLEBOT_CONFIG": str(tmp_path / "tables.toml"),
            "TABLEBOT_STORE_PATH": str(tmp_path / "jobs.sqlite3"),
            "TABLEBOT_STAGING_DIR": str(tmp_path / "staging"),
            "AWS_ENDPOINT_URL_LAMBDA": f"http://127.0.0.1:{lambda_port}",
            "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7EXAMPLE",
            "AWS_SECRET_ACCESS_KEY": "not-a-real-secret",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "SLS_TELEMETRY_DISABLED": "1",
            "SLS_NOTIFICATIONS_MODE": "off",
        }
    )
    return env


@dataclass
class Offline:
    url: str
    slack: LocalSlackApi
    log: Path

    def post(self, request: SignedRequest) -> httpx.Response:
        return httpx.post(f"{self.url}/slack/events", content=request.body, headers=request.headers, timeout=30.0)

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture
def offline(tmp_path: Path) -> Iterator[Offline]:
    if not OSLS.exists() or not PLUGIN.exists():
        pytest.fail("osls or serverless-offline is missing from node_modules; run: bash scripts/setup.sh")
    http_port, lambda_port = _free_port(), _free_port()
    with LocalSlackApi() as slack:
        write_slack_tables(tmp_path / "tables.toml", "http://127.0.0.1:9", "http://127.0.0.1:9/rest")
        log = tmp_path / "offline.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    str(OSLS),
                    "offline",
                    "start",
                    "--config",
                    "serverless.offline.yml",
                    "--host",
                    "127.0.0.1",
                    "--httpPort",
                    str(http_port),
                    "--lambdaPort",
                    str(lambda_port),
                ],
                cwd=REPO,
                env=_offline_env(slack, tmp_path, lambda_port),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own process group: node and the Python handler processes it spawns are
                # stopped together.
                start_new_session=True,
            )
        try:
            server = Offline(f"http://127.0.0.1:{http_port}", slack, log)
            deadline = time.monotonic() + START_TIMEOUT
            while not (_listening(http_port) and _listening(lambda_port)):
                if process.poll() is not None:
                    pytest.fail(f"serverless-offline exited with {process.returncode}:\n{server.log_tail()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"serverless-offline did not listen within {START_TIMEOUT:.0f} s:\n{server.log_tail()}")
                time.sleep(0.1)
            yield server
        finally:
            _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stops the whole group: node, and the Python handler processes it spawned."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(10.0)
    # A handler process may outlive node for a moment, or node may not have stopped.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(5.0)


def test_the_lambda_entry_point_answers_a_signed_command_and_refuses_a_forged_one(offline: Offline) -> None:
    signer = offline.slack.signer(SECRET)

    help_command = signer.slash_command("/table", "help", user_id=ALICE, channel_id=OPS)
    answer = offline.post(help_command)
    assert answer.status_code == 200, f"{answer.status_code} {answer.text}\n{offline.log_tail()}"
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json()
    assert body["text"] == "What I can do"
    assert "`/table upload TABLE s3://bucket/key.csv`" in answer.text

    forged = signer.slash_command("/table", "help", user_id=ALICE, channel_id=OPS)
    forged.headers["X-Slack-Signature"] = "v0=" + "1" * 64
    refused = offline.post(forged)
    assert refused.status_code == 401, f"{refused.status_code} {refused.text}\n{offline.log_tail()}"
    assert "What I can do" not in refused.text
