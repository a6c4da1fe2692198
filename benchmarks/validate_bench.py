"""Benchmark: streaming validation against a bare `csv.reader` loop over the same file.

    .venv/bin/python benchmarks/validate_bench.py [--size-mb 300] [--keep] [--target bigpanda|dengage]

Generates a realistic mapping table (6 columns, unique rows, about a quarter of them with a quoted
value holding a comma) of the given size in a temporary folder, then runs, each in its own child
process so that peak memory (ru_maxrss) is the child's own:

1. the baseline: `for row in csv.reader(open(path, newline="", encoding="utf-8")): pass`
2. `bot.validation.validate` with all the target's rules (output hashed, not written)

and prints both throughputs, their ratio (target: validation at most 1.5x the baseline time) and
the validator's peak RSS (target: under 300 MB on a 500 MB file).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def generate(path: Path, size_mb: float) -> int:
    target = int(size_mb * 1024 * 1024)
    envs = ("prod", "staging", "dev", "qa")
    written = 0
    rows = 0
    with path.open("w", encoding="utf-8", newline="") as f:
        header = "host,service,owner,team,env,description\n"
        f.write(header)
        written += len(header)
        block: list[str] = []
        while True:  # stop before the target: a 500 MB run must stay within the 500 MB limit
            i = rows
            # a quarter of the rows carry a quoted value with a comma and a non-ASCII letter
            description = f'"Rack {i % 40}, row {i % 7}, Zürich"' if i % 4 == 0 else f"rack {i % 40} row {i % 7}"
            line = (
                f"host-{i:09d}.example.com,svc-{i % 997},owner{i % 53}@example.com,"
                f"team-{i % 17},{envs[i % 4]},{description}\n"
            )
            size = len(line.encode("utf-8"))
            if written + size > target:
                break
            block.append(line)
            written += size
            rows += 1
            if len(block) >= 10_000:
                f.write("".join(block))
                block.clear()
        f.write("".join(block))
    return rows


def child_baseline(path: str) -> dict[str, float]:
    import csv

    start, cpu = time.perf_counter(), time.process_time()
    rows = 0
    with open(path, newline="", encoding="utf-8") as f:
        for _ in csv.reader(f):
            rows += 1
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "cpu": time.process_time() - cpu,
        "rows": rows - 1,
        "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def child_validate(path: str, target: str) -> dict[str, object]:
    from bot.schema import Column, ColumnType, TableSchema
    from bot.validation import validate

    names = ["host", "service", "owner", "team", "env", "description"]
    if target == "dengage":
        types = {"owner": ColumnType.EMAIL}
        columns = tuple(
            Column(n, type=types.get(n, ColumnType.TEXT), primary=n == "host", nullable=n != "host") for n in names
        )
        schema = TableSchema(kind="dengage", columns=columns, table_name="hosts")
    else:
        roles = {"host": "query_tag"}
        schema = TableSchema(kind="bigpanda", columns=tuple(Column(n, role=roles.get(n, "result_tag")) for n in names))
    start, cpu = time.perf_counter(), time.process_time()
    with open(path, "rb") as f:
        report = validate(f, schema)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "cpu": time.process_time() - cpu,
        "rows": report.rows,
        "valid": report.valid,
        "issues": report.issue_counts,
        "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def run_child(kind: str, path: Path, target: str) -> dict[str, object]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, str(path), "--target", target]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mb", type=float, default=300)
    parser.add_argument("--keep", action="store_true", help="keep the generated file (its path is printed)")
    parser.add_argument("--target", choices=("bigpanda", "dengage"), default="bigpanda")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each side; the fastest counts")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        kind, path = args.child
        result = child_baseline(path) if kind == "baseline" else child_validate(path, args.target)
        print(json.dumps(result))
        return 0

    folder = Path(tempfile.mkdtemp(prefix="validate-bench-"))
    path = folder / f"mapping-{args.size_mb:g}mb.csv"
    try:
        started = time.perf_counter()
        rows = generate(path, args.size_mb)
        size = path.stat().st_size
        mb = size / (1024 * 1024)
        print(f"file: {path} ({mb:,.1f} MB, {rows:,} rows, generated in {time.perf_counter() - started:.1f}s)")
        # Interleaved, so that load from other processes hits both sides alike; the fastest run counts.
        baselines, validations = [], []
        for _ in range(args.repeat):
            baselines.append(run_child("baseline", path, args.target))
            validations.append(run_child("validate", path, args.target))
        baseline, validation = min(baselines, key=_seconds), min(validations, key=_seconds)
        b, v = _seconds(baseline), _seconds(validation)
        print(
            f"bare csv.reader:     {b:6.2f}s  {mb / b:7.1f} MB/s  cpu {baseline['cpu']:6.2f}s"
            f"  peak RSS {_mb(baseline):6.1f} MB"
        )
        print(
            f"validate ({args.target}): {v:6.2f}s  {mb / v:7.1f} MB/s  cpu {validation['cpu']:6.2f}s"
            f"  peak RSS {_mb(validation):6.1f} MB  rows={validation['rows']:,} valid={validation['valid']}"
        )
        print(f"ratio validate/baseline: {v / b:.2f}x (target <= 1.5x); peak RSS target < 300 MB")
        if validation["issues"]:
            print(f"issues: {validation['issues']}")
    finally:
        if args.keep:
            print(f"kept {path}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


def _seconds(result: dict[str, object]) -> float:
    value = result["seconds"]
    assert isinstance(value, float)
    return value


def _mb(result: dict[str, object]) -> float:
    value = result["maxrss_kb"]
    assert isinstance(value, int)
    return value / 1024


if __name__ == "__main__":
    sys.exit(main())
