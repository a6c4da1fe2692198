"""Benchmark: `tablebot validate` as a user runs it, against a bare `csv.reader` loop over the same file.

    .venv/bin/python benchmarks/validate_bench.py [--size-mb 300] [--repeat 5] [--worst-mb 500] [--keep]

Everything runs as a child process, as a user would run it, and each child's own wall time and
peak RSS are read from `os.wait4` (the kernel's accounting for that process alone):

1. speed, on a realistic mapping table (6 columns, unique rows, a quarter of them with a quoted
   value holding a comma and a non-ASCII letter), of `--size-mb`: the baseline
   `python -c 'for row in csv.reader(open(path, newline="", encoding="utf-8")): pass'` and
   `tablebot validate FILE --target bigpanda --columns ... --format json`, interleaved, `--repeat`
   times each; the MEDIANS and their ratio are reported (target: ratio <= 0.5);
2. memory, on the two worst cases for duplicate detection, of `--worst-mb` each (default 500 MB,
   the upload limit; 0 skips them): short rows that are all the same row, and short rows that are
   all different; one run each, peak RSS reported (target: < 200 MB).

Peak memory of the worst cases is the larger of wait4's peak RSS and the peak of the summed
proportional set size (PSS: shared pages counted once) of the process and its forked helpers
(`tablebot validate` forks two for files of 32 MiB or more), sampled every 50 ms from /proc; the
speed runs are not sampled (reading a process's PSS slows it) and show wait4's peak RSS of the
largest process.

The machine may be shared: the ratio is what carries over, and both sides of it are timed in the
same run, interleaved, so that load from other processes hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = "host,service,owner,team,env,description"
BASELINE = 'import csv, sys\nfor row in csv.reader(open(sys.argv[1], newline="", encoding="utf-8")): pass\n'


def tablebot() -> list[str]:
    script = Path(sys.executable).parent / "tablebot"
    return [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]


def _write_rows(path: Path, header: str, size_mb: float, row: object) -> int:
    target = int(size_mb * 1024 * 1024)
    written = len(header.encode())
    rows = 0
    with path.open("w", encoding="utf-8", newline="") as f:
        f.write(header)
        block: list[str] = []
        while True:  # stop before the target: a 500 MB run must stay within the 500 MB limit
            line = row(rows)  # type: ignore[operator]
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


def mapping_row(i: int) -> str:
    envs = ("prod", "staging", "dev", "qa")
    # a quarter of the rows carry a quoted value with a comma and a non-ASCII letter
    description = f'"Rack {i % 40}, row {i % 7}, Zürich"' if i % 4 == 0 else f"rack {i % 40} row {i % 7}"
    return (
        f"host-{i:09d}.example.com,svc-{i % 997},owner{i % 53}@example.com,team-{i % 17},{envs[i % 4]},{description}\n"
    )


def generate_mapping(path: Path, size_mb: float) -> int:
    return _write_rows(path, COLUMNS + "\n", size_mb, mapping_row)


def generate_duplicates(path: Path, size_mb: float) -> int:
    # every row the same short row: 23 million rows in 500 MB
    return _write_rows(path, "host,service\n", size_mb, lambda i: "web-1.example,svc-1\n")


def generate_distinct(path: Path, size_mb: float) -> int:
    # short rows, all different: the largest set of distinct rows per megabyte
    return _write_rows(path, "host,service\n", size_mb, lambda i: f"h{i:010d},s{i % 10}\n")


def _pss_kb(pid: int) -> int:
    """Proportional set size of a process and its children (the validator's forked helpers), in KiB:
    pages shared between them (the interpreter, numpy) count once in the sum, not once per process."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as status:
            total += next((int(line.split()[1]) for line in status if line.startswith("Pss:")), 0)
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            total += sum(_pss_kb(int(child)) for child in children.read().split())
    except (OSError, ValueError):
        pass
    return total


class RssSampler(threading.Thread):
    """The peak of the summed PSS of a process tree, sampled every 50 ms."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kb = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.peak_kb = max(self.peak_kb, _pss_kb(self.pid))


def measure(cmd: list[str], sample_memory: bool = False) -> dict[str, float | int | str]:
    """Wall time, CPU, peak RSS (MB) and exit code of one child: wait4 for that child, and the sampled
    peak of the child with its helper processes."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        sampler = RssSampler(process.pid)
        if sample_memory:  # reading smaps_rollup walks the process's pages: not while timing
            sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        sampler.done.set()
        if sample_memory:
            sampler.join()
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if process.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed ({process.returncode}): {stderr[-2000:]}")
    return {
        "seconds": seconds,
        "cpu": usage.ru_utime + usage.ru_stime,
        # ru_maxrss of a waited child covers its reaped helpers as a maximum, not a sum: take the
        # larger of it and the sampled sum of the PSS of the process and its helpers
        "rss_mb": max(usage.ru_maxrss, sampler.peak_kb) / 1024,
        "code": process.returncode,
        "stdout": stdout,
    }


def validate_cmd(path: Path, columns: str) -> list[str]:
    return [*tablebot(), "validate", str(path), "--target", "bigpanda", "--columns", columns, "--format", "json"]


def summary(stdout: str) -> str:
    report = json.loads(stdout)
    counts = report.get("issue_counts") or {}
    return f"valid={report['valid']} rows={report['rows']:,} issues={counts}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mb", type=float, default=300, help="size of the mapping table (speed)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each side; medians are reported")
    parser.add_argument("--worst-mb", type=float, default=500, help="size of each memory worst case (0: skip)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files (their folder is printed)")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp(prefix="validate-bench-"))
    try:
        path = folder / f"mapping-{args.size_mb:g}mb.csv"
        started = time.perf_counter()
        rows = generate_mapping(path, args.size_mb)
        mb = path.stat().st_size / (1024 * 1024)
        print(f"file: {path.name} ({mb:,.1f} MB, {rows:,} rows, generated in {time.perf_counter() - started:.1f}s)")
        print(f"cmd:  {' '.join(validate_cmd(path, COLUMNS))}")
        baselines, validations = [], []
        for _ in range(max(1, args.repeat)):
            baselines.append(measure([sys.executable, "-c", BASELINE, str(path)]))
            validations.append(measure(validate_cmd(path, COLUMNS)))
        b = statistics.median(float(r["seconds"]) for r in baselines)
        v = statistics.median(float(r["seconds"]) for r in validations)
        b_cpu = statistics.median(float(r["cpu"]) for r in baselines)
        v_cpu = statistics.median(float(r["cpu"]) for r in validations)
        v_rss = max(float(r["rss_mb"]) for r in validations)
        print(f"runs: {len(baselines)} of each, interleaved; medians")
        print(f"bare csv.reader loop:   {b:6.2f}s  {mb / b:7.1f} MB/s  (cpu {b_cpu:.2f}s)")
        print(
            f"tablebot validate:      {v:6.2f}s  {mb / v:7.1f} MB/s  (cpu {v_cpu:.2f}s)  peak RSS {v_rss:.0f} MB"
            f"  {summary(str(validations[-1]['stdout']))}"
        )
        print(f"ratio validate/csv.reader: {v / b:.2f} (target <= 0.5); cpu ratio {v_cpu / b_cpu:.2f}")
        print(f"  all runs (s): baseline {[round(float(r['seconds']), 2) for r in baselines]}")
        print(f"                validate {[round(float(r['seconds']), 2) for r in validations]}")
        path.unlink()

        if args.worst_mb > 0:
            for name, make in (("all-duplicate", generate_duplicates), ("distinct", generate_distinct)):
                worst = folder / f"{name}-{args.worst_mb:g}mb.csv"
                n = make(worst, args.worst_mb)
                size = worst.stat().st_size / (1024 * 1024)
                result = measure(validate_cmd(worst, "host,service"), sample_memory=True)
                print(
                    f"memory worst case, {name} short rows ({size:,.0f} MB, {n:,} rows): "
                    f"peak RSS {float(result['rss_mb']):.0f} MB (target < 200 MB), "
                    f"{float(result['seconds']):.1f}s; {summary(str(result['stdout']))}"
                )
                if not args.keep:
                    worst.unlink()
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
