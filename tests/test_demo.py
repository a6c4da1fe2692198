"""`tablebot demo`: the README's first command runs the real bot through a scripted Slack
conversation and exits 0 only when every ending is the expected one."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

from bot.store import JobState
from devtools.demo import demo


def _demo_command() -> list[str]:
    """The installed `tablebot` script next to this interpreter (as `make demo` runs it)."""
    script = Path(sys.executable).parent / "tablebot"
    if script.exists():
        return [str(script), "demo"]
    return [sys.executable, "-c", "import sys; from bot.cli import main; sys.exit(main(['demo']))"]


def test_tablebot_demo_prints_the_threads_and_exits_0_when_every_ending_is_as_expected() -> None:
    finished = subprocess.run(_demo_command(), capture_output=True, text=True, timeout=120, check=False)
    out = finished.stdout
    assert finished.returncode == 0, out + finished.stderr
    assert finished.stderr == "", "the demo is quiet: no log lines, no tracebacks"
    assert re.search(r"^4 of 4 endings as expected in \d+\.\d s$", out, re.MULTILINE)
    assert "UNEXPECTED" not in out and "NOT AS EXPECTED" not in out

    first, broken, contacts, retried = re.split(r"^== \d\. ", out, flags=re.MULTILINE)[1:]
    # 1. The spreadsheet's file, repaired and done; the status message shows the way there.
    assert "alice: hosts" in first and "[file: hosts.csv]" in first
    assert "`hosts.csv` is valid: 12 rows" in first and "byte order mark" in first
    assert "*Done*: BigPanda updated table `hosts`" in first
    # 2. The broken file: its issues with line, column and fix; never sent.
    assert "*Not uploaded*" in broken and "Done" not in broken
    assert "*line 3*" in broken and "*line 4, column `service`*" in broken and "*line 6*" in broken
    assert "share the file again" in broken
    # 3. Two files in one message, each resolved on its own: the spreadsheet is told what is
    #    accepted, the CSV goes to its table; the D·engage upsert, part after part.
    assert "`contacts.xlsx` (XLSX) is not a CSV file: I take CSV files" in contacts
    counts = {int(n) for n in re.findall(r"part \d of (\d)", contacts)}
    assert len(counts) == 1 and counts.pop() >= 3, "one split, in several parts"
    assert "*Done*: D·engage updated table `contacts` from `contacts.csv`, 300 rows" in contacts
    # 4. Failed with a Retry button, retried by alice, done; in that order.
    failed_at = retried.index("*Failed*")
    assert retried.index("[Retry]", failed_at) < retried.index("Retry by <@U0ALICE01>") < retried.rindex("*Done*")


def test_the_demo_reports_wrong_endings_and_exits_1() -> None:
    out = io.StringIO()
    result = demo(out, upstream_jobs_fail=True)  # a sandbox setting: every upstream job fails
    assert result.exit_code == 1
    assert [o.state for o in result.outcomes] == [JobState.FAILED, JobState.INVALID, JobState.FAILED, JobState.FAILED]
    printed = out.getvalue()
    assert re.search(r"^1 of 4 endings as expected in ", printed, re.MULTILINE)
    assert len(re.findall(r"^  -> UNEXPECTED: ended failed, expected done", printed, re.MULTILINE)) == 3
    assert "D·engage's table holds 0 rows, not the file's 300" in printed
    assert printed.count("NOT AS EXPECTED") == 3
    assert "NOT AS EXPECTED: 2." not in printed, "the broken file still ends invalid, as expected"
