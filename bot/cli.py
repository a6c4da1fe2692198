"""`tablebot validate | upload | check | serve | demo | sandbox | jobs | status | quarantine | replay`.

Exit codes (DESIGN.md): 0 ok/valid/done, 1 invalid, 2 usage or config error,
3 upstream refused or failed (also: rate limited, not ended in time), 4 upstream unreachable.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from bot.config import load_tables
from bot.errors import InputError, TablebotError, UpstreamError, UsageError
from bot.ops_cli import OPS_COMMANDS, add_ops_commands
from bot.schema import TARGET_KINDS, Column, TableSchema
from bot.settings import Settings, load_settings

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_UPSTREAM_FAILED = 3
EXIT_UPSTREAM_UNREACHABLE = 4


EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report Ctrl-C
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as `cmd | head` reports a closed pipe


def exit_code(exc: TablebotError) -> int:
    """The one mapping from a branch of the error tree to the CLI's exit code (DESIGN.md)."""
    if isinstance(exc, UpstreamError):
        return upstream_exit_code(exc.kind)
    if isinstance(exc, InputError):
        return EXIT_INVALID
    return EXIT_USAGE  # the tables file, the environment, the command line, a file that cannot be read


def upstream_exit_code(kind: str) -> int:
    """4 only when the vendor could not be reached (no answer, or 5xx); any answer that refuses,
    a 429 (rate limited) included, is 3."""
    return EXIT_UPSTREAM_UNREACHABLE if kind in ("unreachable", "server") else EXIT_UPSTREAM_FAILED


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tablebot", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("validate", help="check a CSV file against a table's rules, upload nothing")
    p.add_argument("file", type=Path)
    _add_table_args(p)
    p.add_argument("--target", choices=TARGET_KINDS, help="validate against a target's rules without a tables file")
    p.add_argument("--columns", help="comma-separated column names (with --target)")
    p.add_argument("--primary-key", help="comma-separated primary-key columns (with --target dengage)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--output", type=Path, help="write the repaired file (BOM, line endings, final newline) here")
    p.add_argument("--drop-duplicates", action="store_true", help="remove exact duplicate rows, reporting each")

    p = sub.add_parser("upload", help="validate, then upload to the table's target")
    p.add_argument("file", type=Path)
    _add_table_args(p, required=True)
    p.add_argument("--wait", action="store_true", help="poll the upstream job until it ends")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--drop-duplicates", action="store_true", help="remove exact duplicate rows, reporting each")
    p.add_argument("--poll-interval", type=float, default=5.0, help="seconds between job status reads (default 5)")
    p.add_argument("--timeout", type=float, default=3600.0, help="give up waiting after this many seconds (3600)")

    p = sub.add_parser(
        "check",
        help="prove a table's configuration against its upstream: log in, find the table, compare its schema",
        description="Each step is reported with what to fix. Exit 0 when every step passed, 3 when the "
        "upstream refused or the schema differs from the tables file, 4 when it could not be reached, "
        "2 for a usage or configuration error.",
    )
    p.add_argument("--table", required=True, help="table alias from the tables file")
    p.add_argument("--config", type=Path, help="tables file (default: $TABLEBOT_CONFIG)")
    p.add_argument("--format", choices=("text", "json"), default="text")

    p = sub.add_parser("sandbox", help="serve an emulator of an upstream API on 127.0.0.1")
    p.add_argument("kind", choices=TARGET_KINDS)
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    p.add_argument("--settings", type=Path, help="sandbox settings (TOML): latency, faults, credentials")

    sub.add_parser("demo", help="run the bot end to end on embedded defaults (no accounts needed)")

    sub.add_parser(
        "serve",
        help="run the Slack app in Socket Mode with the poller in a background thread (one machine)",
        description="Needs SLACK_APP_TOKEN (xapp-, connections:write), SLACK_BOT_TOKEN, TABLEBOT_CONFIG. "
        "State goes to the embedded SQLite store and a local staging folder unless the environment "
        "names DynamoDB / S3 (see README, Configuration).",
    )
    add_ops_commands(sub)  # jobs, status, quarantine, replay (bot.ops_cli)
    return parser


def _add_table_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--table", required=required, help="table alias from the tables file")
    p.add_argument("--config", type=Path, help="tables file (default: $TABLEBOT_CONFIG)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {
        "validate": cmd_validate,
        "upload": cmd_upload,
        "check": cmd_check,
        "sandbox": cmd_sandbox,
        "demo": cmd_demo,
        "serve": cmd_serve,
        **OPS_COMMANDS,
    }
    try:
        try:
            settings = load_settings()
            return handlers[args.command](args, settings)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, inside the handler below
    except TablebotError as exc:  # e.g. the schema of a table without `columns` could not be fetched
        print(f"tablebot {args.command}: {exc.message}", file=sys.stderr)
        return exit_code(exc)
    except BrokenPipeError:
        # The reader went away (`tablebot validate ... | head`): stop quietly. Python would
        # complain again flushing stdout at exit, so point stdout at nothing first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print(f"tablebot {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _schema_from_args(args: argparse.Namespace, settings: Settings) -> TableSchema:
    target = getattr(args, "target", None)
    columns_arg = getattr(args, "columns", None)
    primary_arg = getattr(args, "primary_key", None)
    if args.table and target:
        raise UsageError("give either --table or --target, not both")
    if target:
        if not columns_arg:
            raise UsageError("--target needs --columns a,b,c")
        names = [c.strip() for c in columns_arg.split(",") if c.strip()]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise UsageError(f"--columns names a column more than once: {', '.join(repeated)}")
        primary = {c.strip() for c in (primary_arg or "").split(",") if c.strip()}
        if primary and target != "dengage":
            raise UsageError("--primary-key is for --target dengage (BigPanda tables have no primary key)")
        unknown = primary - set(names)
        if unknown:
            raise UsageError(f"--primary-key names columns not in --columns: {', '.join(sorted(unknown))}")
        columns = tuple(Column(name=n, primary=n in primary, nullable=n not in primary) for n in names)
        return TableSchema(kind=target, columns=columns)
    if not args.table:
        raise UsageError("give --table ALIAS (with a tables file) or --target bigpanda|dengage --columns a,b,c")
    if columns_arg or primary_arg:
        raise UsageError("--columns and --primary-key go with --target; with --table the tables file defines them")
    table = load_tables(settings, args.config).table(args.table)
    schema = table.configured_schema()
    if schema is None:
        from bot.targets import fetch_schema  # imported here: only tables without columns reach upstream

        schema = fetch_schema(table)
    return schema


def _validation_workers(path: Path) -> int:
    """Forked helpers for the fast pass (bot/validation/fastpath.py): two for a file of 32 MiB or more
    on a Linux machine with a second core, none otherwise (forking costs more than it saves on small
    files, and forking a process with numpy loaded is only safe on Linux)."""
    import os

    if not sys.platform.startswith("linux"):
        return 0
    try:
        large = path.stat().st_size >= 32 * 1024 * 1024
    except OSError:
        return 0
    return min(2, os.cpu_count() or 1) if large and (os.cpu_count() or 1) > 1 else 0


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from bot.validation import ValidationOptions, format_text, validate

    schema = _schema_from_args(args, settings)
    options = ValidationOptions(
        drop_duplicates=args.drop_duplicates,
        workers=_validation_workers(args.file),
        digest=args.output is not None,  # the SHA-256 of bytes nobody keeps is of no use
    )
    if args.output is not None and args.output.resolve() == args.file.resolve():
        raise UsageError("--output must not be the input file (it would be overwritten while read)")
    try:
        source = args.file.open("rb")
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    with source:
        if args.output:
            try:
                out = args.output.open("wb")
            except OSError as exc:
                raise UsageError(f"cannot write {args.output}: {exc.strerror or exc}") from None
            with out:
                report = validate(source, schema, options, output=out)
        else:
            report = validate(source, schema, options)
    if args.format == "json":
        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        print(format_text(report, file_name=str(args.file)))
        if args.output:
            state = "" if report.valid else " (the file is not valid yet: fix the errors above first)"
            print(f"\nrepaired file written to {args.output}{state}")
    return EXIT_OK if report.valid else EXIT_INVALID


def cmd_upload(args: argparse.Namespace, settings: Settings) -> int:
    """Validate, upload the normalized bytes, and with --wait follow the upstream job(s).

    Exit 0 done (or started, without --wait), 1 invalid, 2 usage/config, 3 upstream refused or
    the job failed (or did not end within --timeout: it may still finish), 4 upstream unreachable.
    """
    import json
    import tempfile

    import httpx

    from bot.targets import UpstreamError, build_client
    from bot.targets.runner import run_upload
    from bot.validation import ValidationOptions, format_text, validate

    if args.poll_interval <= 0 or args.timeout <= 0:
        raise UsageError("--poll-interval and --timeout must be positive")
    table = load_tables(settings, args.config).table(args.table)
    if not args.file.is_file():
        raise UsageError(f"cannot read {args.file}: no such file")

    def progress(line: str) -> None:
        print(f"tablebot: {line}", file=sys.stderr, flush=True)

    def finish(payload: dict[str, object], text: str, code: int) -> int:
        if args.format == "json":
            print(json.dumps({**payload, "exit_code": code}, ensure_ascii=False))
        elif text:
            print(text)
        return code

    timeout = httpx.Timeout(float(table.target.options.get("timeout_seconds", 60)), connect=10.0)
    with httpx.Client(timeout=timeout) as http, tempfile.TemporaryDirectory(prefix="tablebot-upload-") as tmp:
        # With the deployment's DynamoDB store named (TABLEBOT_JOBS_TABLE), a pipeline's upload books
        # its requests there too, so it shares the vendors' limits with the bot; else this process only.
        pacing = None
        if settings.jobs_table:
            from bot.targets.shared_pacing import StorePacing
            from bot.wiring import store_from_settings

            pacing = StorePacing(store_from_settings(settings))
        client = build_client(table.target, http, pacing=pacing)  # exit 2 when a credential is not set
        base: dict[str, object] = {"file": str(args.file), "table": table.alias, "target": table.target.name}
        try:
            schema = table.configured_schema() or client.fetch_schema(table)
        except UpstreamError as exc:
            code = upstream_exit_code(exc.kind)
            progress(f"cannot read the table's schema: {exc.message}")
            return finish({**base, "state": "schema_unavailable", "message": exc.message}, "", code)
        normalized = Path(tmp) / "normalized.csv"
        with args.file.open("rb") as source, normalized.open("wb") as out:
            options = ValidationOptions(drop_duplicates=args.drop_duplicates, workers=_validation_workers(args.file))
            report = validate(source, schema, options, output=out)
        base.update(report.to_dict())
        if not report.valid:
            return finish({**base, "state": "invalid"}, format_text(report, file_name=str(args.file)), EXIT_INVALID)
        progress(f"{args.file} is valid ({report.rows:,} rows); uploading to {table.target.name}/{table.alias}")
        for issue in report.fixes + report.warnings:  # repairs are never silent, even on success
            progress(f"{issue.severity.value}: {issue.message}")
        try:
            result = run_upload(
                client,
                table,
                normalized,
                wait=args.wait,
                poll_interval=args.poll_interval,
                timeout=args.timeout,
                progress=progress,
            )
        except KeyboardInterrupt:
            progress("interrupted: an upload already started continues upstream")
            return 130
    if result.message:
        progress(result.message)
    code = {
        "done": EXIT_OK,
        "started": EXIT_OK,
        "failed": EXIT_UPSTREAM_FAILED,
        "timed_out": EXIT_UPSTREAM_FAILED,
        "unreachable": EXIT_UPSTREAM_UNREACHABLE,
        # The vendor answered (429): it was reachable, it refused for now. Not 4.
        "rate_limited": EXIT_UPSTREAM_FAILED,
    }[result.outcome]
    jobs = ", ".join(r.job.job_id for r in result.jobs) or "none"
    text = f"{table.alias}: {result.outcome} (upstream job{'s' if len(result.jobs) > 1 else ''}: {jobs})"
    return finish({**base, **result.to_dict()}, text, code)


def cmd_check(args: argparse.Namespace, settings: Settings) -> int:
    """`tablebot check --table ALIAS`: the steps of `bot.targets.check`, one line each."""
    import json

    import httpx

    from bot.targets.check import check_table, format_check

    table = load_tables(settings, args.config).table(args.table)
    timeout = httpx.Timeout(float(table.target.options.get("timeout_seconds", 60)), connect=10.0)
    with httpx.Client(timeout=timeout) as http:
        result = check_table(table, http)
    code = EXIT_OK if result.ok else upstream_exit_code(result.failed_kind or "rejected")
    if result.config_error:
        code = EXIT_USAGE
    if args.format == "json":
        print(json.dumps({**result.to_dict(), "exit_code": code}, ensure_ascii=False))
    else:
        print(format_check(result))
    return code


def cmd_sandbox(args: argparse.Namespace, settings: Settings) -> int:
    """Serve an emulator on 127.0.0.1 until interrupted; its base URL is the one line on stdout."""
    import signal

    from devtools.sandbox import create_sandbox, load_settings_file

    try:
        sandbox_settings = load_settings_file(args.settings) if args.settings else {}
        server = create_sandbox(args.kind, sandbox_settings, port=args.port)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror}") from None
    print(server.base_url, flush=True)
    print(
        f"tablebot sandbox: {args.kind} emulator listening; admin API at {server.root_url}/_sandbox/; Ctrl-C stops it",
        file=sys.stderr,
        flush=True,
    )

    def stop_on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM stops it like Ctrl-C: its temp files are removed

    signal.signal(signal.SIGTERM, stop_on_term)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """The real bot in a local Slack, against the sandboxes: 0 when every ending is as expected, else 1."""
    from devtools.demo import run_demo

    return run_demo()


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """The same Bolt app as on Lambda, over Socket Mode, and the poller in a thread."""
    import threading

    if not settings.slack_app_token:
        raise UsageError("set SLACK_APP_TOKEN to the app-level token (xapp-..., scope connections:write)")
    for name, value in (("SLACK_BOT_TOKEN", settings.slack_bot_token), ("TABLEBOT_CONFIG", settings.config_path)):
        if not value:
            raise UsageError(f"set {name} (see README, Configuration)")
    from bot.observability import setup_logging

    setup_logging(settings)  # text lines on stderr, the job named on each; TABLEBOT_LOG_LEVEL

    from slack_bolt.adapter.socket_mode import SocketModeHandler

    from bot.poller import Poller
    from bot.slack.app import build_app
    from bot.slack.wiring import build_slack_deps
    from bot.wiring import poller_settings

    deps = build_slack_deps(settings=settings)
    app = build_app(deps, socket_mode=True)
    poller = Poller(deps.service.store, deps.service, poller_settings(settings))
    stop = threading.Event()

    def poll_until_stopped() -> None:
        while not stop.is_set():
            poller.run(stop=stop)

    thread = threading.Thread(target=poll_until_stopped, name="poller", daemon=True)
    thread.start()
    try:
        SocketModeHandler(app, settings.slack_app_token).start()  # type: ignore[no-untyped-call]
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        thread.join(timeout=poller.settings.run_seconds + 10)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
