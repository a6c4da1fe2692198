"""Slack files into staging, against a real local HTTP server playing Slack's file host."""

from __future__ import annotations

import hashlib
import logging
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.errors import ConfigError, SourceError
from bot.settings import load_settings
from bot.sources import SourceSettings, StagedFile, stage_slack_file
from bot.staging import FolderStaging, S3Staging, Staging
from bot.staging.folder import TMP_DIR_NAME

TOKEN = "xoxb-1111-2222-secret-test-token"
MB = 1000 * 1000
CSV_BODY = b"host,service,owner\nweb-1,checkout,payments\nweb-2,search,discovery\n"
LOGIN_PAGE = b"<!DOCTYPE html>\n<html><head><title>Sign in | Slack</title></head><body>sign in</body></html>\n"
KEY = "uploads/hosts/job-1/original.csv"
SHARED_BUCKET = "tablebot-startup-probe"  # see tests/test_staging_contract.py for why


class SlackFileHost(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, str | None]] = []  # (path, Authorization header)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def paths_requested(self) -> list[str]:
        return [path for path, _ in self.requests]


class _Handler(BaseHTTPRequestHandler):
    server: SlackFileHost

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, total: int, content_type: str = "text/csv", declared: int | None = None) -> None:
        # HTTP/1.0 with no Content-Length: the body runs until the server closes, as a big file might.
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        if declared is not None:
            self.send_header("Content-Length", str(declared))
        self.end_headers()
        line = b"web-000001,checkout,payments,eu-west-1\n"
        block = line * (65536 // len(line))
        sent = 0
        try:
            while sent < total:
                piece = block[: total - sent]
                self.wfile.write(piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading, as it should at the cap

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization")
        self.server.requests.append((self.path, auth))
        here = self.server.base
        if auth != f"Bearer {TOKEN}":
            # What Slack does when the bot may not read a file: a login page, status 200.
            self._send(200, LOGIN_PAGE, {"Content-Type": "text/html; charset=utf-8"})
            return
        match self.path:
            case "/files-pri/T1-F1/download/hosts.csv":
                self._send(200, CSV_BODY, {"Content-Type": "text/csv"})
            case "/files-pri/T1-F2/download/huge.csv":
                self._stream(3 * MB)
            case "/files-pri/T1-F3/download/big-multipart.csv":
                self._stream(14 * MB)
            case "/files-pri/T1-F4/download/declared-huge.csv":
                self._stream(64 * 1024, declared=3 * MB)
            case "/files-pri/T1-F5/download/page.csv":
                self._send(
                    200, b"\xef\xbb\xbf\r\n  <html><body>no</body></html>", {"Content-Type": "application/octet-stream"}
                )
            case "/redirect/same-host":
                self._send(302, headers={"Location": "/files-pri/T1-F1/download/hosts.csv"})
            case "/redirect/other-host":
                port = self.server.server_address[1]
                self._send(302, headers={"Location": f"http://localhost:{port}/files-pri/T1-F1/download/hosts.csv"})
            case "/redirect/protocol-relative":
                port = self.server.server_address[1]
                self._send(302, headers={"Location": f"//localhost:{port}/files-pri/T1-F1/download/hosts.csv"})
            case "/redirect/broken":
                self._send(302, headers={"Location": "http://[::1"})
            case "/redirect/loop":
                self._send(302, headers={"Location": f"{here}/redirect/loop"})
            case "/forbidden":
                self._send(403, b"forbidden", {"Content-Type": "text/plain"})
            case "/unavailable":
                self._send(503, b"try later", {"Content-Type": "text/plain"})
            case "/drops":
                self.send_response(200)
                self.send_header("Content-Type", "text/csv")
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self.wfile.write(CSV_BODY)  # then the connection closes early
            case _:
                self._send(404, b"not found", {"Content-Type": "text/plain"})


@pytest.fixture
def file_host() -> Iterator[SlackFileHost]:
    server = SlackFileHost()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


@pytest.fixture
def folder(tmp_path: Path) -> FolderStaging:
    return FolderStaging(tmp_path / "staging")


LOCAL = SourceSettings(slack_file_hosts=("127.0.0.1",), allow_http=True)


def stage(
    http: httpx.Client, staging: Staging, url: str, settings: SourceSettings = LOCAL, **kwargs: Any
) -> StagedFile:
    return stage_slack_file(
        http, staging, url=url, token=TOKEN, key=KEY, file_name="hosts.csv", settings=settings, **kwargs
    )


def refused(
    http: httpx.Client, staging: Staging, url: str, caplog: pytest.LogCaptureFixture, **kwargs: Any
) -> SourceError:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SourceError) as caught:
        stage(http, staging, url, **kwargs)
    error = caught.value
    for text in (str(error), repr(error), error.message, caplog.text):
        assert TOKEN not in text
        assert "secret-test-token" not in text
    return error


def assert_nothing_staged(staging: Staging) -> None:
    assert list(staging.list_blobs("")) == []
    if isinstance(staging, FolderStaging):
        assert list((staging.root / TMP_DIR_NAME).iterdir()) == []


def test_good_download_is_staged_with_hash_and_size(
    http: httpx.Client, folder: FolderStaging, file_host: SlackFileHost, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    staged = stage(http, folder, f"{file_host.base}/files-pri/T1-F1/download/hosts.csv", declared_size=len(CSV_BODY))
    assert staged == StagedFile(
        key=KEY, size=len(CSV_BODY), sha256=hashlib.sha256(CSV_BODY).hexdigest(), file_name="hosts.csv"
    )
    with folder.open(KEY) as stream:
        assert stream.read() == CSV_BODY
    assert file_host.requests == [("/files-pri/T1-F1/download/hosts.csv", f"Bearer {TOKEN}")]
    assert TOKEN not in caplog.text


def test_redirect_on_the_same_host_is_followed_with_the_token(
    http: httpx.Client, folder: FolderStaging, file_host: SlackFileHost
) -> None:
    staged = stage(http, folder, f"{file_host.base}/redirect/same-host")
    assert staged.sha256 == hashlib.sha256(CSV_BODY).hexdigest()
    assert file_host.requests == [
        ("/redirect/same-host", f"Bearer {TOKEN}"),
        ("/files-pri/T1-F1/download/hosts.csv", f"Bearer {TOKEN}"),
    ]


def test_redirect_to_another_host_is_refused_and_not_followed(
    http: httpx.Client, folder: FolderStaging, file_host: SlackFileHost, caplog: pytest.LogCaptureFixture
) -> None:
    error = refused(http, folder, f"{file_host.base}/redirect/other-host", caplog)
    assert error.code == "not_allowed"
    assert "localhost" in error.message and "Slack's file host" in error.message
    # `localhost` is this same server: had the redirect been followed, it would show here.
    assert file_host.paths_requested() == ["/redirect/other-host"]
    assert_nothing_staged(folder)


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/redirect/protocol-relative", "not_allowed"),
        # httpx itself rejects a malformed Location as a protocol error: a broken answer from Slack.
        ("/redirect/broken", "unreachable"),
    ],
)
def test_odd_redirects_are_refused(
    folder: FolderStaging, file_host: SlackFileHost, caplog: pytest.LogCaptureFixture, path: str, code: str
) -> None:
    with httpx.Client(timeout=10) as http:
        error = refused(http, folder, f"{file_host.base}{path}", caplog)
    assert error.code == code
    assert file_host.paths_requested() == [path]
    assert_nothing_staged(folder)


def test_endless_redirects_stop(
    http: httpx.Client, folder: FolderStaging, file_host: SlackFileHost, caplog: pytest.LogCaptureFixture
) -> None:
    error = refused(http, folder, f"{file_host.base}/redirect/loop", caplog)
    assert error.code == "unreachable"
    assert len(file_host.requests) == LOCAL.max_redirects + 1


def test_html_answer_means_no_access(
    http: httpx.Client, folder: FolderStaging, file_host: SlackFileHost, caplog: pytest.LogCaptureFixture
) -> None:
    # The server answers a wrong token the way Slack answers a bot without access: a login page.
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SourceError) as caught:
        stage_slack_file(
            http,
            folder,
            url=f"{file_host.base}/files-pri/T1-F1/download/hosts.csv",
            token="xoxb-wrong-token-999",
            key=KEY,
            file_name="hosts.csv",
            settings=LOCAL,
        )
    error = caught.value
    assert error.code == "no_access"
    assert "invite" in error.message.lower() and "files:read" in error.message and "check_file_info" in error.message
    assert "xoxb-wrong-token-999" not in f"{error} {error!r} {caplog.text}"
    assert_nothing_staged(folder)


def test_html_body_without_html_content_type_means_no_access(
    http: httpx.Client, folder: FolderStaging, file_host: SlackFileHost, caplog: pytest.LogCaptureFixture
) -> None:
    error = refused(http, folder, f"{file_host.base}/files-pri/T1-F5/download/page.csv", caplog)
    assert error.code == "no_access"
    assert_nothing_staged(folder)


def test_403_means_no_access(
    http: httpx.Client, folder: FolderStaging, file_host: SlackFileHost, caplog: pytest.LogCaptureFixture
) -> None:
    assert refused(http, folder, f"{file_host.base}/forbidden", caplog).code == "no_access"


def test_404_means_not_found(
    http: httpx.Client, folder: FolderStaging, file_host: SlackFileHost, caplog: pytest.LogCaptureFixture
) -> None:
    error = refused(http, folder, f"{file_host.base}/files-pri/T1-F9/download/gone.csv", caplog)
    assert error.code == "not_found"
    assert "Share the file again" in error.message
    assert_nothing_staged(folder)


def test_server_error_means_unreachable(
    http: httpx.Client, folder: FolderStaging, file_host: SlackFileHost, caplog: pytest.LogCaptureFixture
) -> None:
    error = refused(http, folder, f"{file_host.base}/unavailable", caplog)
    assert error.code == "unreachable"
    assert "503" in error.message and "Try again" in error.message


def test_connection_dropped_mid_download_leaves_nothing(
    http: httpx.Client, folder: FolderStaging, file_host: SlackFileHost, caplog: pytest.LogCaptureFixture
) -> None:
    error = refused(http, folder, f"{file_host.base}/drops", caplog)
    assert error.code == "unreachable"
    assert_nothing_staged(folder)


def test_nobody_listening_means_unreachable(
    http: httpx.Client, folder: FolderStaging, caplog: pytest.LogCaptureFixture
) -> None:
    server = SlackFileHost()  # bound, then closed: its port is known to be free now
    url = f"{server.base}/files-pri/T1-F1/download/hosts.csv"
    server.server_close()
    error = refused(http, folder, url, caplog)
    assert error.code == "unreachable"


@dataclass
class StagingUnderTest:
    staging: Staging
    s3_client: Any = None  # set for S3 staging, to look for multipart uploads left behind


@pytest.fixture(params=["folder", "s3"])
def any_staging(request: pytest.FixtureRequest, tmp_path: Path) -> StagingUnderTest:
    if request.param == "s3":
        s3_client = request.getfixturevalue("s3_client")
        prefix = f"sources-tests/{uuid.uuid4().hex}/"
        return StagingUnderTest(
            S3Staging(s3_client, SHARED_BUCKET, prefix=prefix, part_size=5 * 1024 * 1024), s3_client
        )
    return StagingUnderTest(FolderStaging(tmp_path / "staging"))


@pytest.mark.parametrize(
    ("path", "cap"),
    [("/files-pri/T1-F2/download/huge.csv", 1 * MB), ("/files-pri/T1-F3/download/big-multipart.csv", 12 * MB)],
    ids=["small-cap", "after-s3-parts"],
)
def test_cap_exceeded_mid_stream_is_too_large_and_leaves_nothing(
    any_staging: StagingUnderTest, file_host: SlackFileHost, caplog: pytest.LogCaptureFixture, path: str, cap: int
) -> None:
    staging = any_staging.staging
    settings = SourceSettings(slack_file_hosts=("127.0.0.1",), allow_http=True, max_bytes=cap)
    with httpx.Client(timeout=10) as http:
        error = refused(http, staging, f"{file_host.base}{path}", caplog, settings=settings)
    assert error.code == "too_large"
    assert f"{cap // MB} MB limit" in error.message and "stopped reading" in error.message
    assert_nothing_staged(staging)
    if isinstance(staging, S3Staging):
        uploads = any_staging.s3_client.list_multipart_uploads(Bucket=staging.bucket, Prefix=staging.prefix)
        assert uploads.get("Uploads", []) == []


def test_too_large_from_content_length_or_slack_size_before_reading(
    http: httpx.Client, folder: FolderStaging, file_host: SlackFileHost, caplog: pytest.LogCaptureFixture
) -> None:
    settings = SourceSettings(slack_file_hosts=("127.0.0.1",), allow_http=True, max_bytes=1 * MB)
    error = refused(
        http, folder, f"{file_host.base}/files-pri/T1-F4/download/declared-huge.csv", caplog, settings=settings
    )
    assert error.code == "too_large"
    assert "stopped reading" not in error.message  # refused on the declared length, before the body

    requests_before = len(file_host.requests)
    error = refused(
        http,
        folder,
        f"{file_host.base}/files-pri/T1-F1/download/hosts.csv",
        caplog,
        settings=settings,
        declared_size=2 * MB,
    )
    assert error.code == "too_large"
    assert len(file_host.requests) == requests_before  # Slack's declared size is enough: no download
    assert_nothing_staged(folder)


@pytest.mark.parametrize(
    "url",
    [
        "https://files.slack.com.evil.example/files-pri/T1-F1/download/hosts.csv",
        "https://evil.example/files.slack.com/hosts.csv",
        "https://files.slack.com@evil.example/hosts.csv",
        "ftp://files.slack.com/hosts.csv",
        "http://files.slack.com/files-pri/T1-F1/download/hosts.csv",
        "not a url at all",
    ],
)
def test_links_off_slacks_file_host_or_not_https_are_refused_before_any_request(
    url: str, folder: FolderStaging, caplog: pytest.LogCaptureFixture
) -> None:
    def no_network(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"no request should be made, got {request.url}")

    with httpx.Client(transport=httpx.MockTransport(no_network)) as offline:
        error = refused(offline, folder, url, caplog, settings=SourceSettings())
    assert error.code == "not_allowed"
    assert_nothing_staged(folder)


def test_plain_http_needs_the_setting(
    folder: FolderStaging, file_host: SlackFileHost, http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    https_only = SourceSettings(slack_file_hosts=("127.0.0.1",))
    error = refused(http, folder, f"{file_host.base}/files-pri/T1-F1/download/hosts.csv", caplog, settings=https_only)
    assert error.code == "not_allowed"
    assert file_host.requests == []


def test_source_settings_from_the_environment() -> None:
    settings = SourceSettings.from_settings(
        load_settings(
            {
                "TABLEBOT_MAX_FILE_MB": "50",
                "TABLEBOT_SLACK_FILE_HOSTS": "files.slack.com, Files-Edge.Slack.com",
                "TABLEBOT_S3_ALLOWED_PREFIXES": "s3://ops-tables/uploads, s3://other-bucket/",
            }
        )
    )
    assert settings.max_bytes == 50 * MB
    assert settings.slack_file_hosts == ("files.slack.com", "files-edge.slack.com")
    assert settings.allow_http is False
    assert [p.uri for p in settings.s3_allowed_prefixes] == ["s3://ops-tables/uploads/", "s3://other-bucket/"]

    defaults = SourceSettings.from_settings(load_settings({}))
    assert (defaults.max_bytes, defaults.slack_file_hosts, defaults.s3_allowed_prefixes) == (
        500 * MB,
        ("files.slack.com",),
        (),
    )
    with pytest.raises(ConfigError, match="TABLEBOT_MAX_FILE_MB"):
        SourceSettings.from_settings(load_settings({"TABLEBOT_MAX_FILE_MB": "lots"}))
    with pytest.raises(ConfigError, match="s3://bucket/folder/"):
        SourceSettings.from_settings(load_settings({"TABLEBOT_S3_ALLOWED_PREFIXES": "https://ops-tables/uploads/"}))
