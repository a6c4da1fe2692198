"""Upload throughput and client memory, against each sandbox running in its own process.

    .venv/bin/python benchmarks/upload_bench.py [--size-mb 50] [--targets bigpanda,dengage]

For each target: generate a CSV of the size (MB = 10**6 bytes), start `tablebot sandbox KIND`,
upload with the real client (BigPanda: one streamed request; D·engage: streamed base64 JSON in
parts of at most 50 MB as sent, each after the previous part's job is done), and print MB/s of
the sending, the time until the upstream job(s) were done, and peak RSS of this (client) process
and of the sandbox process. Validation is not part of this measure (see validate_bench.py).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.config import parse_tables  # noqa: E402
from bot.targets import FileSource, build_client  # noqa: E402
from bot.targets.bigpanda import BigPandaClient  # noqa: E402
from bot.targets.dengage import DengageClient  # noqa: E402
from bot.targets.runner import run_upload  # noqa: E402

ENV = {"BP": "demo-bigpanda-token", "DU": "demo-userkey", "DP": "demo-password"}


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_of(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def generate(path: Path, kind: str, size: int) -> int:
    header = b"host,service,owner\n" if kind == "bigpanda" else b"event,happened_at,amount\n"
    rows = 0
    with path.open("wb") as out:
        out.write(header)
        written = len(header)
        batch: list[bytes] = []
        while written < size:
            if kind == "bigpanda":
                line = f"host-{rows:010d}.example.com,service-{rows % 997},team-{rows % 53}\n".encode()
            else:
                line = f"event-{rows:010d},2024-05-01 10:{rows % 60:02d}:00,{rows % 100000}.25\n".encode()
            batch.append(line)
            written += len(line)
            rows += 1
            if len(batch) >= 10_000:
                out.write(b"".join(batch))
                batch = []
        out.write(b"".join(batch))
    return rows


def start_sandbox(kind: str, workdir: Path) -> tuple[subprocess.Popen[str], str]:
    settings = workdir / f"{kind}.toml"
    settings.write_text("job_seconds = 0.5\ntable_call_spacing_seconds = 0.0\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "sandbox", kind, "--settings", str(settings)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def bench(kind: str, size_mb: float, workdir: Path) -> None:
    path = workdir / f"{kind}.csv"
    rows = generate(path, kind, int(size_mb * 1_000_000))
    size = path.stat().st_size
    process, base_url = start_sandbox(kind, workdir)
    tables = parse_tables(
        {
            "targets": {
                "bp": {"kind": "bigpanda", "base_url": base_url, "token_env": "BP"},
                "dg": {
                    "kind": "dengage",
                    "base_url": base_url,
                    "userkey_env": "DU",
                    "password_env": "DP",
                    "part_spacing_seconds": 0,
                },
            },
            "tables": {
                "t_bp": {"target": "bp", "enrichment_id": "demo"},
                "t_dg": {"target": "dg", "table_name": "demo_events"},
            },
        }
    )
    table = tables.table("t_bp" if kind == "bigpanda" else "t_dg")
    before = rss_mb()
    try:
        with httpx.Client(timeout=httpx.Timeout(600.0, connect=10.0)) as http:
            client = build_client(table.target, http, ENV)
            started = time.monotonic()
            send_seconds = 0.0
            if isinstance(client, BigPandaClient):
                job = client.start_upload(table, FileSource(path))
                send_seconds = time.monotonic() - started
                while (status := client.job_status(job)).state == "running":
                    time.sleep(0.5)
                outcome, parts = status.state, 1
            else:
                assert isinstance(client, DengageClient)
                sent: list[float] = []

                def progress(line: str) -> None:
                    if "sending" in line:
                        sent.append(time.monotonic())
                    elif "started" in line and sent:
                        sent[-1] = time.monotonic() - sent[-1]

                result = run_upload(client, table, path, wait=True, poll_interval=0.5, timeout=3600, progress=progress)
                outcome, parts, send_seconds = result.outcome, len(result.jobs), sum(sent)
            total = time.monotonic() - started
        sandbox_peak = peak_of(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)
    print(
        f"{kind:9} {size / 1e6:8.1f} MB {rows:>10,} rows  parts {parts:>3}  outcome {outcome:5}  "
        f"send {size / 1e6 / max(send_seconds, 1e-9):7.1f} MB/s  until done {total:6.1f} s  "
        f"client peak RSS {rss_mb():6.1f} MB (before {before:5.1f})  sandbox peak RSS {sandbox_peak:6.1f} MB",
        flush=True,
    )
    path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mb", type=float, default=50.0)
    parser.add_argument("--targets", default="bigpanda,dengage")
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="tablebot-upload-bench-") as tmp:
        for kind in args.targets.split(","):
            bench(kind.strip(), args.size_mb, Path(tmp))


if __name__ == "__main__":
    main()
