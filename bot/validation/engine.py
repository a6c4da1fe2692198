"""`validate()`: one streaming pass over a CSV byte stream with all the rules of the target.

The pass, from bytes to report:

    source ─► ByteNormalizer (sniff, BOM/CR repairs, long lines, SHA-256, output, UTF-8 decode)
           ─► lines (StringIO over blocks of whole lines) ─► csv.reader(strict=True)
           ─► rows in batches of 1024 ─► structure checks, fingerprints, target rules
           ─► at the end: duplicates and repeated keys (numpy sort), "no data rows"

`reader.line_num` counts physical lines. A batch whose line count equals its row count, whose
rows all have the header's field count and that holds no over-long line is "regular": no row in it
can break a structural rule, and it is checked with C-level maps only (that is what keeps the
pass near the speed of a bare csv.reader loop). Any other batch is walked row by row; a row's
lines are 1 + the line breaks inside its values, so every issue names the line where its record
starts.

Memory is constant except the row fingerprints (8-16 bytes a row, see dedupe.py). The cyclic
garbage collector is paused during the pass: the batches are many short-lived lists that it would
scan for nothing (reference counting still frees them); it is restored afterwards.
"""

from __future__ import annotations

import csv
import gc
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, islice, pairwise
from typing import BinaryIO

import numpy as np

from bot.schema import TableSchema
from bot.validation import codes
from bot.validation.bigpanda import BigPandaRules
from bot.validation.dedupe import Fingerprints, SeenFingerprints, repeated_groups
from bot.validation.dengage import DengageRules
from bot.validation.model import IssueCollector, Report, Severity
from bot.validation.rules import TargetRules
from bot.validation.stream import ByteNormalizer, FatalInput, Sink

_BATCH = 1024


@dataclass(frozen=True)
class ValidationOptions:
    # Remove exact duplicate rows from the output (each removal is reported as `fixed`) instead
    # of reporting them as errors.
    drop_duplicates: bool = False
    # Issues kept in the report (the first of every code is always kept); all are counted.
    max_issues: int = 1000
    # The largest file accepted (BigPanda: 500 MB); reading stops beyond it.
    max_bytes: int = 500 * 1024 * 1024
    # A physical line longer than this stops the pass: the input is not a table.
    max_line_bytes: int = 16 * 1024 * 1024
    # Bytes read from the source at a time.
    chunk_size: int = 1024 * 1024
    # Hash and write the output on a background thread.
    background_io: bool = True
    # Called with each batch of well-formed rows that stay in the output and their physical lines
    # (tests read the parsed values through it; a later feature may count or split rows).
    row_observer: Callable[[list[list[str]], list[int]], None] | None = None


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
    opts = options or ValidationOptions()
    issues = IssueCollector(opts.max_issues)
    rules = rules_for(schema, issues)
    sink = Sink(output, threaded=opts.background_io)
    normalizer = ByteNormalizer(
        source,
        issues,
        chunk_size=max(1, opts.chunk_size),
        max_bytes=opts.max_bytes,
        max_line_bytes=opts.max_line_bytes,
        long_line_bytes=rules.value_byte_limit,
        sink=None if opts.drop_duplicates else sink,
    )
    run = _Pass(normalizer, rules, issues, sink, opts)
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
        digest = sink.close()
        if gc_was_enabled:
            gc.enable()
    return Report(
        valid=issues.errors == 0,
        rows=run.rows,
        columns=run.columns,
        issues=issues.sorted_issues(),
        issue_counts=dict(issues.counts),
        bytes_read=normalizer.bytes_read,
        bytes_written=sink.bytes_written,
        sha256=digest,
        delimiter=run.delimiter,
        truncated=issues.dropped > 0,
        severity_counts=dict(issues.severity_counts),
    )


def _capture(lines: Iterable[str], store: list[str]) -> Iterator[str]:
    for line in lines:
        store.append(line)
        yield line


class _Pass:
    def __init__(
        self,
        normalizer: ByteNormalizer,
        rules: TargetRules,
        issues: IssueCollector,
        sink: Sink,
        options: ValidationOptions,
    ) -> None:
        self.normalizer = normalizer
        self.rules = rules
        self.issues = issues
        self.sink = sink
        self.drop = options.drop_duplicates
        self.rows = 0
        self.columns: list[str] = []
        self.delimiter = ","
        self.fingerprints = Fingerprints()
        self.seen: SeenFingerprints | None = SeenFingerprints() if self.drop else None
        self.observer = options.row_observer
        self.dropped_rows = 0
        self._long_index = 0

    # reading --------------------------------------------------------------------------------

    def read(self) -> None:
        text = chain.from_iterable(self.normalizer.text_blocks())
        first = next(text, "")
        if not first:
            raise FatalInput(codes.EMPTY_FILE, "the file is empty: export the table with its header line and rows")
        self.delimiter = self.rules.choose_delimiter(first)
        lines: Iterable[str] = chain((first,), text)
        captured: list[str] = []
        if self.drop:
            lines = _capture(lines, captured)
        reader = csv.reader(lines, delimiter=self.delimiter, strict=True)
        self._read_header(reader)
        if self.drop:
            self._write_lines(captured, 1, set())
        self.fingerprints = Fingerprints(self.rules.key_indices)
        self._read_rows(reader, captured)

    def _read_header(self, reader: Iterator[list[str]]) -> None:
        try:
            header = next(reader)
        except csv.Error as exc:
            raise FatalInput(
                codes.BAD_QUOTING,
                f"the header (line 1) cannot be read: {exc}; write the titles separated by "
                f"'{self.delimiter}', with double quotes only around a whole title",
                1,
            ) from None
        except StopIteration:
            raise FatalInput(codes.EMPTY_FILE, "the file is empty: export the table with its header line") from None
        if not header:
            raise FatalInput(
                codes.MISSING_HEADER,
                "line 1 is empty: the first line must be the header with the column titles; "
                "delete the empty lines before it",
                1,
            )
        self.header_end = reader.line_num  # type: ignore[attr-defined]
        if self.header_end > 1:
            self.issues.add(
                codes.NEWLINE_IN_HEADER,
                Severity.ERROR,
                1,
                None,
                f"the header spans lines 1-{self.header_end}: a title holds a line break; write every title on line 1",
            )
        self.columns = header
        self.ncols = len(header)
        self.rules.check_header(header, self.delimiter, self.issues)

    def _read_rows(self, reader: Iterator[list[str]], captured: list[str]) -> None:
        widths = {self.ncols}
        prev_end = self.header_end
        long_lines = self.normalizer.long_lines
        regular = self._regular
        irregular = self._irregular
        while True:
            batch: list[list[str]] = []
            error: csv.Error | None = None
            try:
                batch.extend(islice(reader, _BATCH))
            except csv.Error as exc:
                error = exc
            end: int = reader.line_num  # type: ignore[attr-defined]
            if not batch and error is None:
                break
            has_long = False
            while self._long_index < len(long_lines) and long_lines[self._long_index] <= end:
                has_long = True
                self._long_index += 1
            if error is None and not has_long and end - prev_end == len(batch) and set(map(len, batch)) == widths:
                dropped = regular(batch, prev_end + 1)
            else:
                dropped = irregular(batch, prev_end + 1, end, error)
            if self.drop:
                self._write_lines(captured, prev_end + 1, dropped)
            prev_end = end

    def _regular(self, batch: list[list[str]], first_line: int) -> set[int]:
        self.rows += len(batch)
        start = self.fingerprints.add(batch, first_line)
        if self.seen is None or not (repeated := self.seen.add(self.fingerprints.batch(start))).any():
            self.rules.check_rows(batch, first_line, None)
            if self.observer is not None:
                self.observer(batch, list(range(first_line, first_line + len(batch))))
            return set()
        keep = np.flatnonzero(~repeated)
        kept = [batch[i] for i in keep]
        kept_lines = [first_line + int(i) for i in keep]
        self.rows -= len(batch) - len(kept)
        self.dropped_rows += len(batch) - len(kept)
        self.rules.check_rows(kept, first_line, kept_lines)
        if self.observer is not None:
            self.observer(kept, kept_lines)
        return {first_line + int(i) for i in np.flatnonzero(repeated)}

    def _irregular(self, batch: list[list[str]], first_line: int, end: int, error: csv.Error | None) -> set[int]:
        rules = self.rules
        limit = rules.value_byte_limit
        short = limit // 4 if limit is not None else 0  # a value this long in characters may exceed it
        good: list[list[str]] = []
        good_lines: list[int] = []
        spans: list[int] = []
        line = first_line
        for row in batch:
            breaks = sum(v.count("\n") for v in row) if any("\n" in v for v in row) else 0
            if not row:
                self._blank_line(line)
            else:
                self.rows += 1
                if breaks and not rules.multiline_values:
                    self._newline_in_value(row, line, breaks)
                if limit is not None and max(map(len, row)) > short:
                    self._long_values(row, line, limit)
                if len(row) != self.ncols:
                    self._field_count(row, line, breaks)
                else:
                    good.append(row)
                    good_lines.append(line)
                    spans.append(breaks)
            line += breaks + 1
        if error is not None:
            self._csv_error(error, line, end)
        if not good:
            return set()
        start = self.fingerprints.add(good, first_line, good_lines)
        if self.seen is None:
            rules.check_rows(good, first_line, good_lines)
            if self.observer is not None:
                self.observer(good, good_lines)
            return set()
        repeated = self.seen.add(self.fingerprints.batch(start))
        dropped: set[int] = set()
        kept: list[list[str]] = []
        kept_lines: list[int] = []
        for row, row_line, extra, again in zip(good, good_lines, spans, repeated.tolist(), strict=True):
            if again:
                dropped.update(range(row_line, row_line + extra + 1))
            else:
                kept.append(row)
                kept_lines.append(row_line)
        self.rows -= len(good) - len(kept)
        self.dropped_rows += len(good) - len(kept)
        rules.check_rows(kept, first_line, kept_lines)
        if self.observer is not None:
            self.observer(kept, kept_lines)
        return dropped

    def _write_lines(self, captured: list[str], first_line: int, dropped: set[int]) -> None:
        if dropped:
            text = "".join(line for n, line in enumerate(captured, first_line) if n not in dropped)
        else:
            text = "".join(captured)
        captured.clear()
        self.sink.write(text.encode("utf-8", "surrogateescape"))

    # row issues -----------------------------------------------------------------------------

    def _blank_line(self, line: int) -> None:
        self.issues.add(
            codes.BLANK_LINE,
            Severity.ERROR,
            line,
            None,
            f"line {line} is empty: delete it (an empty line is not a valid row)",
        )

    def _field_count(self, row: list[str], line: int, breaks: int) -> None:
        span = f" (the record spans lines {line}-{line + breaks})" if breaks else ""
        d = self.delimiter
        hint = (
            f"a value that contains '{d}' must be in double quotes"
            if len(row) > self.ncols
            else f"every row needs every column (an empty value is written as nothing between two '{d}')"
        )
        self.issues.add(
            codes.FIELD_COUNT,
            Severity.ERROR,
            line,
            None,
            f"line {line} has {len(row)} values but the header has {self.ncols} columns{span}: {hint}",
        )

    def _newline_in_value(self, row: list[str], line: int, breaks: int) -> None:
        for index, value in enumerate(row):
            if "\n" in value:
                column = self.columns[index] if index < len(self.columns) else None
                self.issues.add(
                    codes.NEWLINE_IN_VALUE,
                    Severity.ERROR,
                    line,
                    column,
                    f"line {line}: a value holds a line break (the record spans lines {line}-{line + breaks}); "
                    "BigPanda does not accept line breaks in values: remove them (or check for a "
                    "double quote that is never closed)",
                )

    def _long_values(self, row: list[str], line: int, limit: int) -> None:
        short = limit // 4
        for index, value in enumerate(row):
            if len(value) > short:
                size = len(value.encode("utf-8", "surrogateescape"))
                if size > limit:
                    column = self.columns[index] if index < len(self.columns) else None
                    self.issues.add(
                        codes.VALUE_TOO_LONG,
                        Severity.ERROR,
                        line,
                        column,
                        f"line {line}: a value is {size:,} bytes long (UTF-8); BigPanda accepts at most "
                        f"{limit:,} bytes (32K) per value: shorten it",
                    )

    def _csv_error(self, error: csv.Error, start: int, end: int) -> None:
        message = str(error)
        where = f"line {start}" if start >= end else f"the record starting on line {start} (read up to line {end})"
        if "field larger than field limit" in message:
            self.issues.add(
                codes.VALUE_TOO_LONG,
                Severity.ERROR,
                start,
                None,
                f"{where}: a value is longer than {csv.field_size_limit():,} characters; most likely a "
                "double quote opened there is never closed: close it (or shorten the value)",
            )
        elif "unexpected end of data" in message:
            self.issues.add(
                codes.BAD_QUOTING,
                Severity.ERROR,
                start,
                None,
                f"{where}: a double-quoted value is never closed (the file ends inside it): "
                "add the closing double quote",
            )
        elif "expected after" in message:
            self.issues.add(
                codes.BAD_QUOTING,
                Severity.ERROR,
                start,
                None,
                f"{where}: a closing double quote must be followed by '{self.delimiter}' or the end of "
                'the line; to put a double quote inside a value, write it twice ("") and put the whole '
                "value in double quotes",
            )
        else:
            self.issues.add(codes.BAD_QUOTING, Severity.ERROR, start, None, f"{where} cannot be read: {message}")

    # end of the pass --------------------------------------------------------------------------

    def finish(self) -> None:
        if self.rows == 0:
            self.issues.add(
                codes.NO_DATA_ROWS,
                Severity.ERROR,
                None,
                None,
                "the file has a header but no data rows: a table needs at least one row",
            )
        fingerprints = self.fingerprints
        if len(fingerprints) < 2:
            return
        rows = np.frombuffer(fingerprints.rows, dtype=np.int64)
        repeats = np.zeros(len(rows), dtype=bool)
        for group in repeated_groups(rows):
            lines = fingerprints.lines_of(group)
            first = int(lines[0])
            repeats[group[1:]] = True
            for line in lines[1:].tolist():
                if self.drop:
                    self.issues.add(
                        codes.DUPLICATE_ROW_DROPPED,
                        Severity.FIXED,
                        line,
                        None,
                        f"removed line {line}: it repeated line {first} exactly",
                    )
                else:
                    self.issues.add(
                        codes.DUPLICATE_ROW,
                        Severity.ERROR,
                        line,
                        None,
                        f"line {line} repeats line {first} exactly: delete one of them "
                        "(or use --drop-duplicates to remove repeats)",
                    )
        if fingerprints.keys is not None:
            self._repeated_keys(np.frombuffer(fingerprints.keys, dtype=np.int64), repeats)

    def _repeated_keys(self, keys: np.ndarray, exact_repeats: np.ndarray) -> None:
        label = self.rules.key_label
        for group in repeated_groups(keys):
            rows = group[~exact_repeats[group]]
            if len(rows) < 2:
                continue
            lines: Sequence[int] = self.fingerprints.lines_of(rows).tolist()
            for earlier, line in pairwise(lines):
                self.issues.add(
                    codes.REPEATED_KEY,
                    Severity.WARNING,
                    line,
                    label,
                    f"line {line} has the same primary key ({label}) as line {earlier}; D·engage keeps "
                    f"the last row (line {lines[-1]}), the earlier ones are overwritten",
                )
