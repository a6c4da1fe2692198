"""`validate()`: one streaming pass over a CSV byte stream with all the rules of the target.

    source ─► ByteNormalizer (sniff, BOM/CR repairs, NUL, long lines, SHA-256, output, UTF-8 decode)
           ─► blocks of whole lines ─► RowPass (reading.py): the header, then each block either
              proved regular by vector work (fastpath.py) or read by csv.reader row by row
           ─► at the end: repeated rows and keys (dedupe.py), "no data rows"

Memory does not grow with the file: blocks of about a megabyte, a bounded issue list, and row
fingerprints sorted in runs of a million and spilled to a temporary file (dedupe.py). The cyclic
garbage collector is paused during the pass: the batches are many short-lived lists that it would
scan for nothing (reference counting still frees them); it is restored afterwards.

numpy is imported by the pass, not by this module: `bot.validation` is imported on Slack's
acknowledgement path, which must start fast.
"""

from __future__ import annotations

import csv
import gc
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO

from bot.schema import TableSchema
from bot.validation.bigpanda import BigPandaRules
from bot.validation.dengage import DengageRules
from bot.validation.model import IssueCollector, Report, Severity
from bot.validation.rules import TargetRules
from bot.validation.stream import ByteNormalizer, FatalInput, Sink


@dataclass(frozen=True)
class ValidationOptions:
    # Remove exact duplicate rows from the output (each removal is reported as `fixed`) instead
    # of reporting them as errors.
    drop_duplicates: bool = False
    # Issues kept in the report, at most (those nearest the start of the file, and the first of
    # every code); all are counted.
    max_issues: int = 1000
    # The largest file accepted (BigPanda: 500 MB); reading stops beyond it.
    max_bytes: int = 500 * 1024 * 1024
    # A physical line longer than this stops the pass: the input is not a table.
    max_line_bytes: int = 16 * 1024 * 1024
    # Bytes read from the source at a time.
    chunk_size: int = 1024 * 1024
    # Hash and write the output on a background thread.
    background_io: bool = True
    # The SHA-256 of the repaired bytes (Report.sha256; "" without it). `tablebot validate`
    # without --output has no use for it.
    digest: bool = True
    # Called with each batch of well-formed rows that stay in the output and their physical lines
    # (tests read the parsed values through it; a later feature may count or split rows).
    row_observer: Callable[[list[list[str]], list[int]], None] | None = None
    # Prove blocks regular with vector work and skip the parser there (see fastpath.py); False
    # reads every row with csv.reader: the reference the fast pass is tested against.
    fast: bool = True
    # Row fingerprints sorted in memory before a run goes to the temporary file (16 bytes each).
    dedupe_buffer_rows: int = 1 << 18
    # Where repeated-row runs are spilled (None: the system's temporary folder, TMPDIR).
    temp_dir: str | None = None
    # Forked processes that prove blocks regular and fingerprint them while this one reads the
    # file (0: all in this process). The CLI uses them for large files on a machine with spare
    # cores; the bot does not (a Lambda function of 1,024 MB has less than one vCPU).
    workers: int = 0


def rules_for(schema: TableSchema, issues: IssueCollector) -> TargetRules:
    if schema.kind == "bigpanda":
        return BigPandaRules(schema)
    return DengageRules(schema, issues)


def validate(
    source: BinaryIO | Iterable[bytes],
    schema: TableSchema,
    options: ValidationOptions | None = None,
    output: BinaryIO | None = None,
) -> Report:
    """Check `source` against `schema`'s target rules in one pass; write the repaired bytes to `output`."""
    from bot.validation.fastpath import LocalAnalyzer, ProcessAnalyzer
    from bot.validation.reading import RowPass  # imports numpy

    opts = options or ValidationOptions()
    # Forked first, before this pass starts any thread.
    analyzer = (
        ProcessAnalyzer(opts.workers, max(1, opts.chunk_size))
        if opts.workers > 0 and opts.fast and not opts.drop_duplicates
        else None
    )
    # A value may be as long as a line may be (csv's own default, 128 KiB, is no rule of any target).
    if csv.field_size_limit() < opts.max_line_bytes:
        csv.field_size_limit(opts.max_line_bytes)
    issues = IssueCollector(opts.max_issues)
    rules = rules_for(schema, issues)
    sink = Sink(output, threaded=opts.background_io, digest=opts.digest)
    normalizer = ByteNormalizer(
        source,
        issues,
        chunk_size=max(1, opts.chunk_size),
        max_bytes=opts.max_bytes,
        max_line_bytes=opts.max_line_bytes,
        long_line_bytes=rules.value_byte_limit,
        sink=None if opts.drop_duplicates else sink,
    )
    run = RowPass(normalizer, rules, issues, sink, opts, analyzer=analyzer or LocalAnalyzer())
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        rules.check_table(issues)
        try:
            run.read()
        except FatalInput as fatal:
            issues.add(fatal.code, Severity.ERROR, fatal.line, None, fatal.message)
        else:
            run.finish()
    finally:
        run.close()
        if analyzer is not None:
            analyzer.close()
        digest = sink.close()
        if gc_was_enabled:
            gc.enable()
    kept = issues.sorted_issues()
    return Report(
        valid=issues.errors == 0,
        rows=run.rows,
        columns=run.columns,
        issues=kept,
        issue_counts=dict(issues.counts),
        bytes_read=normalizer.bytes_read,
        bytes_written=sink.bytes_written,
        sha256=digest,
        delimiter=run.delimiter,
        truncated=issues.total > len(kept),
        severity_counts=dict(issues.severity_counts),
    )
