"""`tablebot validate | upload | status | serve | demo | sandbox`.

Exit codes (DESIGN.md): 0 ok/valid/done, 1 invalid, 2 usage or config error,
3 upstream failed, 4 upstream unreachable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from bot.config import ConfigError, Settings
from bot.schema import TARGET_KINDS, Column, TableSchema

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_UPSTREAM_FAILED = 3
EXIT_UPSTREAM_UNREACHABLE = 4


class UsageError(Exception):
    """A command-line mistake; printed without a traceback, exit 2."""


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

    p = sub.add_parser("sandbox", help="serve an emulator of an upstream API on 127.0.0.1")
    p.add_argument("kind", choices=TARGET_KINDS)
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    p.add_argument("--settings", type=Path, help="sandbox settings (TOML): latency, faults, credentials")

    sub.add_parser("demo", help="run the bot end to end on embedded defaults (no accounts needed)")
    return parser


def _add_table_args(p: argparse.ArgumentParser, required: bool = False) -> None:
    p.add_argument("--table", required=required, help="table alias from the tables file")
    p.add_argument("--config", type=Path, help="tables file (default: $TABLEBOT_CONFIG)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {
        "validate": cmd_validate,
        "upload": cmd_upload,
        "sandbox": cmd_sandbox,
        "demo": cmd_demo,
    }
    try:
        return handlers[args.command](args)
    except (ConfigError, UsageError) as exc:
        print(f"tablebot {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _schema_from_args(args: argparse.Namespace) -> TableSchema:
    if args.table and args.target:
        raise UsageError("give either --table or --target, not both")
    if args.target:
        if not args.columns:
            raise UsageError("--target needs --columns a,b,c")
        names = [c.strip() for c in args.columns.split(",") if c.strip()]
        primary = {c.strip() for c in (args.primary_key or "").split(",") if c.strip()}
        unknown = primary - set(names)
        if unknown:
            raise UsageError(f"--primary-key names columns not in --columns: {', '.join(sorted(unknown))}")
        columns = tuple(Column(name=n, primary=n in primary, nullable=n not in primary) for n in names)
        return TableSchema(kind=args.target, columns=columns)
    if not args.table:
        raise UsageError("give --table ALIAS (with a tables file) or --target bigpanda|dengage --columns a,b,c")
    table = Settings.from_env().load_tables(args.config).table(args.table)
    schema = table.configured_schema()
    if schema is None:
        from bot.targets import fetch_schema  # imported here: only tables without columns reach upstream

        schema = fetch_schema(table)
    return schema


def cmd_validate(args: argparse.Namespace) -> int:
    from bot.validation import ValidationOptions, format_text, validate

    schema = _schema_from_args(args)
    options = ValidationOptions(drop_duplicates=args.drop_duplicates)
    try:
        source = args.file.open("rb")
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    with source:
        if args.output:
            with args.output.open("wb") as out:
                report = validate(source, schema, options, output=out)
        else:
            report = validate(source, schema, options)
    if args.format == "json":
        import json

        print(json.dumps(report.to_dict(), ensure_ascii=False))
    else:
        print(format_text(report, file_name=str(args.file)))
    return EXIT_OK if report.valid else EXIT_INVALID


def cmd_upload(args: argparse.Namespace) -> int:
    raise UsageError("upload is not built yet")


def cmd_sandbox(args: argparse.Namespace) -> int:
    raise UsageError("sandbox is not built yet")


def cmd_demo(args: argparse.Namespace) -> int:
    raise UsageError("demo is not built yet")


if __name__ == "__main__":
    sys.exit(main())
