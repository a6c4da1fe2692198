"""S3 objects into staging: the allow-list, and real S3 answers (SeaweedFS, and a tiny server for 403s)."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from bot.errors import SourceError
from bot.sources import (
    S3Location,
    SourceSettings,
    StagedFile,
    check_s3_allowed,
    parse_s3_allow_list,
    parse_s3_uri,
    stage_s3_object,
)
from bot.staging import FolderStaging
from bot.staging.folder import TMP_DIR_NAME
from tests.fixtures_servers import FAKE_AWS

SHARED_BUCKET = "tablebot-startup-probe"  # see tests/test_staging_contract.py for why
KEY = "uploads/hosts/job-1/original.csv"
CSV_BODY = b"host,service\nweb-1,checkout\n"
MB = 1000 * 1000


@pytest.fixture
def run(s3_client: Any) -> str:
    """A folder of the shared bucket for this test, holding an allowed file and its neighbours."""
    run = f"sources-s3/{uuid.uuid4().hex}"
    for key, body in {
        f"{run}/uploads/hosts.csv": CSV_BODY,
        f"{run}/uploads/team a/hosts v2.csv": CSV_BODY + b"web-2,search\n",
        f"{run}/secret.csv": b"not for the bot\n",
        f"{run}/uploads-evil/x.csv": b"not for the bot either\n",
    }.items():
        s3_client.put_object(Bucket=SHARED_BUCKET, Key=key, Body=body)
    return run


@pytest.fixture
def folder(tmp_path: Path) -> FolderStaging:
    return FolderStaging(tmp_path / "staging")


def settings_for(run: str, max_bytes: int = 500 * MB) -> SourceSettings:
    return SourceSettings(
        max_bytes=max_bytes, s3_allowed_prefixes=parse_s3_allow_list([f"s3://{SHARED_BUCKET}/{run}/uploads/"])
    )


def assert_nothing_staged(staging: FolderStaging) -> None:
    assert list(staging.list_blobs("")) == []
    assert list((staging.root / TMP_DIR_NAME).iterdir()) == []


def test_object_under_an_allowed_prefix_is_staged(s3_client: Any, folder: FolderStaging, run: str) -> None:
    staged = stage_s3_object(
        s3_client, folder, uri=f"s3://{SHARED_BUCKET}/{run}/uploads/hosts.csv", key=KEY, settings=settings_for(run)
    )
    assert staged == StagedFile(
        key=KEY, size=len(CSV_BODY), sha256=hashlib.sha256(CSV_BODY).hexdigest(), file_name="hosts.csv"
    )
    with folder.open(KEY) as stream:
        assert stream.read() == CSV_BODY


def test_spaces_and_redundant_slashes_are_fine(s3_client: Any, folder: FolderStaging, run: str) -> None:
    uri = f"s3://{SHARED_BUCKET}/{run}//uploads/./team a/hosts v2.csv"
    staged = stage_s3_object(s3_client, folder, uri=uri, key=KEY, settings=settings_for(run))
    assert staged.file_name == "hosts v2.csv"
    assert staged.size == len(CSV_BODY) + len(b"web-2,search\n")


@pytest.mark.parametrize(
    "path",
    [
        "{run}/uploads/../secret.csv",  # climbs out of the allowed folder
        "{run}/uploads/./../secret.csv",
        "{run}/uploads//../../{run}/secret.csv",
        "{run}/uploads-evil/x.csv",  # shares the allowed prefix only as a string
        "{run}/secret.csv",
        "../{run}/uploads/hosts.csv",  # above the bucket
    ],
)
def test_paths_outside_the_allowed_prefix_are_refused(
    s3_client: Any, folder: FolderStaging, run: str, path: str
) -> None:
    uri = f"s3://{SHARED_BUCKET}/" + path.format(run=run)
    with pytest.raises(SourceError) as caught:
        stage_s3_object(s3_client, folder, uri=uri, key=KEY, settings=settings_for(run))
    assert caught.value.code == "not_allowed"
    assert_nothing_staged(folder)


def test_refusal_names_the_allowed_prefixes(s3_client: Any, folder: FolderStaging, run: str) -> None:
    with pytest.raises(SourceError) as caught:
        stage_s3_object(
            s3_client, folder, uri=f"s3://other-bucket/{run}/uploads/hosts.csv", key=KEY, settings=settings_for(run)
        )
    assert caught.value.code == "not_allowed"
    assert f"s3://{SHARED_BUCKET}/{run}/uploads/" in caught.value.message
    assert_nothing_staged(folder)


def test_nothing_is_allowed_by_default(s3_client: Any, folder: FolderStaging, run: str) -> None:
    with pytest.raises(SourceError) as caught:
        stage_s3_object(s3_client, folder, uri=f"s3://{SHARED_BUCKET}/{run}/uploads/hosts.csv", key=KEY)
    assert caught.value.code == "not_allowed"
    assert "not enabled" in caught.value.message
    assert_nothing_staged(folder)


def test_missing_object_is_not_found(s3_client: Any, folder: FolderStaging, run: str) -> None:
    uri = f"s3://{SHARED_BUCKET}/{run}/uploads/Hosts.csv"  # keys are case-sensitive
    with pytest.raises(SourceError) as caught:
        stage_s3_object(s3_client, folder, uri=uri, key=KEY, settings=settings_for(run))
    assert caught.value.code == "not_found"
    assert uri in caught.value.message and "case-sensitive" in caught.value.message
    assert_nothing_staged(folder)


def test_over_the_cap_is_refused_from_head_object(s3_client: Any, folder: FolderStaging, run: str) -> None:
    s3_client.put_object(Bucket=SHARED_BUCKET, Key=f"{run}/uploads/big.csv", Body=b"x" * 2_000_001)
    with pytest.raises(SourceError) as caught:
        stage_s3_object(
            s3_client,
            folder,
            uri=f"s3://{SHARED_BUCKET}/{run}/uploads/big.csv",
            key=KEY,
            settings=settings_for(run, max_bytes=2 * MB),
        )
    assert caught.value.code == "too_large"
    assert "2 MB limit" in caught.value.message and "stopped reading" not in caught.value.message
    assert_nothing_staged(folder)


def test_unreachable_s3(folder: FolderStaging, run: str) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()  # nobody listens there now
    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        **FAKE_AWS,
        config=Config(retries={"max_attempts": 1}, connect_timeout=2),
    )
    with pytest.raises(SourceError) as caught:
        stage_s3_object(
            client, folder, uri=f"s3://{SHARED_BUCKET}/{run}/uploads/hosts.csv", key=KEY, settings=settings_for(run)
        )
    assert caught.value.code == "unreachable"
    assert "Try again" in caught.value.message


class _LyingS3(BaseHTTPRequestHandler):
    """Answers like S3 would in cases SeaweedFS (no auth here) cannot: a denied key, a size that grew."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_HEAD(self) -> None:
        if "denied" in self.path:
            self.send_response(403)
            self.send_header("Content-Length", "0")
        else:  # claims a small object
            self.send_response(200)
            self.send_header("Content-Length", "10")
            self.send_header("ETag", '"abc"')
        self.end_headers()

    def do_GET(self) -> None:
        body = b"host,service\n" * 200_000  # 2.6 MB: far more than HEAD said
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", '"abc"')
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def lying_s3() -> Iterator[Any]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LyingS3)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{server.server_address[1]}",
            **FAKE_AWS,
            config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}),
        )
    finally:
        server.shutdown()
        server.server_close()


def test_access_denied_is_no_access(lying_s3: Any, folder: FolderStaging) -> None:
    settings = SourceSettings(s3_allowed_prefixes=parse_s3_allow_list(["s3://ops-tables/uploads/"]))
    with pytest.raises(SourceError) as caught:
        stage_s3_object(lying_s3, folder, uri="s3://ops-tables/uploads/denied.csv", key=KEY, settings=settings)
    assert caught.value.code == "no_access"
    assert "s3:GetObject" in caught.value.message
    assert_nothing_staged(folder)


def test_cap_is_enforced_while_streaming_whatever_head_said(lying_s3: Any, folder: FolderStaging) -> None:
    settings = SourceSettings(max_bytes=1 * MB, s3_allowed_prefixes=parse_s3_allow_list(["s3://ops-tables/uploads/"]))
    with pytest.raises(SourceError) as caught:
        stage_s3_object(lying_s3, folder, uri="s3://ops-tables/uploads/grew.csv", key=KEY, settings=settings)
    assert caught.value.code == "too_large"
    assert "stopped reading" in caught.value.message
    assert_nothing_staged(folder)


# --- the allow-list on its own -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://ops-tables/uploads/a.csv", S3Location("ops-tables", "uploads/a.csv")),
        ("s3://ops-tables//uploads///a.csv", S3Location("ops-tables", "uploads/a.csv")),
        ("s3://ops-tables/uploads/x/../a.csv", S3Location("ops-tables", "uploads/a.csv")),
        ("  s3://ops-tables/uploads/a b.csv ", S3Location("ops-tables", "uploads/a b.csv")),
    ],
)
def test_parse_s3_uri_normalises_the_key(uri: str, expected: S3Location) -> None:
    assert parse_s3_uri(uri) == expected


@pytest.mark.parametrize(
    "uri",
    [
        "https://ops-tables/uploads/a.csv",
        "s3://",
        "s3://ops-tables",
        "s3://ops-tables/",
        "s3://Ops_Tables/a.csv",
        "s3://ops-tables/../a.csv",
        "s3://ops-tables/a\\..\\b.csv",
        "s3://ops-tables/a\x00.csv",
    ],
)
def test_parse_s3_uri_refuses_what_is_not_a_file_address(uri: str) -> None:
    with pytest.raises(SourceError) as caught:
        parse_s3_uri(uri)
    assert caught.value.code == "not_allowed"
    assert "s3://bucket/folder/file.csv" in caught.value.message or "climbs" in caught.value.message


def test_allow_list_prefix_stops_at_a_folder_boundary() -> None:
    allowed = parse_s3_allow_list(["s3://ops-tables/uploads"])  # no trailing slash given
    assert check_s3_allowed("s3://ops-tables/uploads/a.csv", allowed).key == "uploads/a.csv"
    for outside in [
        "s3://ops-tables/uploads-evil/a.csv",
        "s3://ops-tables/uploadsa.csv",
        "s3://ops-tables/uploads",
        "s3://ops-tablesx/uploads/a.csv",
    ]:
        with pytest.raises(SourceError) as caught:
            check_s3_allowed(outside, allowed)
        assert caught.value.code == "not_allowed"
    whole_bucket = parse_s3_allow_list(["s3://ops-tables"])
    assert check_s3_allowed("s3://ops-tables/anything/a.csv", whole_bucket).key == "anything/a.csv"
