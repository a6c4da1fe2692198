"""`tablebot demo`: the bot's pipeline end to end on embedded defaults, with no accounts.

It starts the BigPanda and D·engage sandboxes on 127.0.0.1, writes a tables file pointing at them,
and runs four scripted uploads through the same `tablebot upload` path a pipeline uses:
a good BigPanda table (saved by a spreadsheet: BOM and CRLF, repaired), a broken one (stopped before
sending, with its issues), a D·engage upsert sent in parts, and an upload whose upstream job fails
and is retried. Each ending is checked against the sandbox's stored table; any unexpected ending
makes the demo exit 1. (The Slack conversation around these steps arrives with the Slack front end.)
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bot.sandbox import SandboxServer, start_sandbox
from bot.sandbox.admin import SandboxAdmin

_DEMO_ENV = {
    "DEMO_BIGPANDA_TOKEN": "demo-bigpanda-token",
    "DEMO_DENGAGE_USERKEY": "demo-userkey",
    "DEMO_DENGAGE_PASSWORD": "demo-password",
}
# Small parts and short spacing so the multi-part upsert is visible within seconds.
_PART_BYTES = 4096
_PART_SPACING = 1.0


@dataclass
class Step:
    title: str
    expected_exit: int
    run: Callable[[], int]
    check: Callable[[], str | None]  # None when the upstream state is as expected, else what is wrong


def _tables_file(path: Path, bigpanda_url: str, dengage_url: str) -> Path:
    path.write_text(
        f"""
[targets.bigpanda]
kind = "bigpanda"
base_url = "{bigpanda_url}"
token_env = "DEMO_BIGPANDA_TOKEN"

[targets.dengage]
kind = "dengage"
base_url = "{dengage_url}"
userkey_env = "DEMO_DENGAGE_USERKEY"
password_env = "DEMO_DENGAGE_PASSWORD"
part_spacing_seconds = {_PART_SPACING}
max_request_bytes = {_PART_BYTES}

[tables.hosts]
target = "bigpanda"
enrichment_id = "demo"

[tables.contacts]
target = "dengage"
table_name = "demo_contacts"
""",
        encoding="utf-8",
    )
    return path


def _write_files(folder: Path) -> dict[str, Path]:
    good = folder / "hosts.csv"
    # As a spreadsheet saves it: a byte order mark and CRLF line endings, repaired before sending.
    rows = ["host,service,owner"] + [f"web-{i:02d},checkout,team-payments" for i in range(1, 13)]
    good.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode() + b"\r\n")

    broken = folder / "hosts-broken.csv"
    broken.write_text(
        "host,service,owner\n"
        "web-01,checkout,team-payments\n"
        "web-02,checkout\n"
        'web-03,"search\nindex",team-search\n'
        "web-01,checkout,team-payments\n",
        encoding="utf-8",
    )

    contacts = folder / "contacts.csv"
    lines = ["contact_key;email;city"] + [f"c{i:04d};user{i}@example.com;Istanbul" for i in range(1, 301)]
    contacts.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"good": good, "broken": broken, "contacts": contacts}


@contextlib.contextmanager
def _sandboxes() -> Iterator[tuple[SandboxServer, SandboxServer]]:
    fast = {"job_seconds": 1.0}
    bigpanda = start_sandbox("bigpanda", fast)
    try:
        dengage = start_sandbox("dengage", {**fast, "table_call_spacing_seconds": _PART_SPACING})
        try:
            yield bigpanda, dengage
        finally:
            dengage.stop()
    finally:
        bigpanda.stop()


def _run_cli(argv: list[str]) -> int:
    from bot.cli import main

    print(f"$ tablebot {' '.join(argv)}", flush=True)
    buffer = io.StringIO()  # progress (stderr) and result (stdout), in the order a terminal shows them
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        code = main(argv)
    for line in buffer.getvalue().rstrip().splitlines():
        print(f"  {line}")
    print(f"  (exit {code})", flush=True)
    return code


def run_demo() -> int:
    started = time.monotonic()
    os.environ.update(_DEMO_ENV)
    with tempfile.TemporaryDirectory(prefix="tablebot-demo-") as tmp, _sandboxes() as (bigpanda, dengage):
        folder = Path(tmp)
        config = str(_tables_file(folder / "tables.toml", bigpanda.base_url, dengage.base_url))
        files = _write_files(folder)
        bp_admin, dg_admin = SandboxAdmin(bigpanda.root_url), SandboxAdmin(dengage.root_url)

        def upload(name: str, table: str) -> Callable[[], int]:
            return lambda: _run_cli(
                ["upload", str(files[name]), "--table", table, "--config", config, "--wait", "--poll-interval", "0.3"]
            )

        def bigpanda_rows(expected: int) -> Callable[[], str | None]:
            def check() -> str | None:
                rows = bp_admin.table("demo").get("rows", [])
                return None if len(rows) == expected else f"BigPanda table holds {len(rows)} rows, expected {expected}"

            return check

        def nothing_sent() -> str | None:
            maps = [r for r in bp_admin.requests("/map") if r["method"] == "POST"]
            return None if len(maps) == 1 else f"{len(maps)} uploads reached BigPanda, expected only the first"

        def contacts_landed() -> str | None:
            rows = dg_admin.table("demo_contacts", limit=1000).get("rows", [])
            return None if len(rows) == 300 else f"D·engage table holds {len(rows)} rows, expected 300"

        def fail_next_job() -> int:
            bp_admin.fault("job_failed")
            return upload("good", "hosts")()

        steps = [
            Step(
                "1. A good BigPanda table, saved by a spreadsheet (BOM, CRLF): repaired, uploaded, done",
                0,
                upload("good", "hosts"),
                bigpanda_rows(12),
            ),
            Step(
                "2. A broken BigPanda table: stopped before sending, every issue with its line and column",
                1,
                upload("broken", "hosts"),
                nothing_sent,
            ),
            Step(
                "3. A D·engage upsert of 300 rows, too big for one request: sent in parts, spaced, done",
                0,
                upload("contacts", "contacts"),
                contacts_landed,
            ),
            Step(
                "4. A BigPanda upload whose upstream job fails: reported as failed (exit 3)",
                3,
                fail_next_job,
                bigpanda_rows(12),
            ),
            Step("5. ... and retried with the same file: done", 0, upload("good", "hosts"), bigpanda_rows(12)),
        ]
        failures = []
        for step in steps:
            print(f"\n== {step.title}", flush=True)
            code = step.run()
            problem = None if code == step.expected_exit else f"exit {code}, expected {step.expected_exit}"
            problem = problem or step.check()
            print(f"  -> {'as expected' if problem is None else 'UNEXPECTED: ' + problem}", flush=True)
            if problem:
                failures.append(f"{step.title}: {problem}")
        bp_admin.close()
        dg_admin.close()
    elapsed = time.monotonic() - started
    print(f"\n{len(steps) - len(failures)} of {len(steps)} endings as expected in {elapsed:.1f} s")
    for failure in failures:
        print(f"  FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0
