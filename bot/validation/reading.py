"""The row pass: the header, then blocks of rows, fast while they are regular, careful from the first that is not.

    blocks of whole lines (ByteNormalizer) ─► header (line 1)
        ─► fast: analyze_block proves the block regular ─► count, fingerprint lines, target rules
        ─► careful (from the first irregular block to the end): csv.reader(strict=True), rows in
           batches of 1024, every structural rule row by row where a batch is not regular
        ─► repeats (RepeatFinder: sorted runs, on disk past the first) ─► "no data rows"

The switch is one way and happens at a block start, which is a record start for csv.reader (every
block before it was proved regular), so the careful reader sees exactly what it would have seen
from line 1. A file with a problem is therefore read carefully from its first irregular block on:
its report is the careful pass's report. `ValidationOptions(fast=False)` reads everything carefully;
the differential tests compare the two on every kind of file.

In the careful pass, `reader.line_num` counts physical lines. A batch whose line count equals its
row count and whose rows all have the header's field count and hold no over-long line is "regular"
and checked with C-level maps only; any other batch is walked row by row; a row's lines are 1 + the
line breaks inside its values, so every issue names the line where its record starts.
"""

from __future__ import annotations

import csv
import io
from collections import deque
from collections.abc import Iterable, Iterator
from itertools import chain, islice

import numpy as np

from bot.validation import codes
from bot.validation.dedupe import (
    Int64Array,
    RepeatFinder,
    RepeatSink,
    SeenFingerprints,
    row_fingerprints,
    value_fingerprints,
)
from bot.validation.engine import ValidationOptions
from bot.validation.fastpath import LocalAnalyzer, ProcessAnalyzer, analyze_block, skeleton_table
from bot.validation.model import IssueCollector, Severity
from bot.validation.rules import TargetRules
from bot.validation.stream import Block, ByteNormalizer, FatalInput, Sink

_BATCH = 1024
Blocks = Iterator[Block]


def _capture(lines: Iterable[str], store: list[str]) -> Iterator[str]:
    for line in lines:
        store.append(line)
        yield line


def _lines_of(normalizer: ByteNormalizer, blocks: Iterable[Block]) -> Iterator[str]:
    for block in blocks:
        yield from io.StringIO(normalizer.decode(block), newline="")


class RowPass:
    def __init__(
        self,
        normalizer: ByteNormalizer,
        rules: TargetRules,
        issues: IssueCollector,
        sink: Sink,
        options: ValidationOptions,
        *,
        analyzer: LocalAnalyzer | ProcessAnalyzer | None = None,
    ) -> None:
        self.analyzer = analyzer or LocalAnalyzer()
        self.normalizer = normalizer
        self.rules = rules
        self.issues = issues
        self.sink = sink
        self.options = options
        self.drop = options.drop_duplicates
        self.fast = options.fast and not self.drop
        self.rows = 0
        self.columns: list[str] = []
        self.ncols = 0
        self.delimiter = ","
        self.header_end = 1
        self.seen: SeenFingerprints | None = SeenFingerprints() if self.drop else None
        self.observer = options.row_observer
        self.row_repeats: RepeatFinder | None = None
        self.key_repeats: RepeatFinder | None = None
        self.bad_records = 0  # records csv.reader could not read
        self._fatal: FatalInput | None = None
        self._long_index = 0

    # reading --------------------------------------------------------------------------------

    def read(self) -> None:
        """Read the file; a fatal input error (too large, a NUL byte, an absurd line) ends it after
        the rows of every block before the one where it was found (in both passes alike)."""
        try:
            self._read(self._guarded(self.normalizer.blocks()))
        except FatalInput:
            if self._fatal is None:
                raise
        if self._fatal is not None:
            raise self._fatal

    def _guarded(self, blocks: Blocks) -> Blocks:
        try:
            yield from blocks
        except FatalInput as fatal:
            self._fatal = fatal

    def _read(self, blocks: Blocks) -> None:
        first = next(blocks, None)
        if first is None:
            raise FatalInput(codes.EMPTY_FILE, "the file is empty: export the table with its header line and rows")
        data, text = first.data, self.normalizer.decode(first)
        first_line = text[: text.find("\n") + 1]
        self.delimiter = self.rules.choose_delimiter(first_line)
        header = self._simple_header(data, first_line) if self.fast else None
        if header is not None:
            self._set_header(header, 1)
            cut = data.find(b"\n") + 1
            self._fast(chain([Block(data[cut:], text[len(first_line) :], None)], blocks), 1)
            return
        lines: Iterable[str] = chain(io.StringIO(text, newline=""), _lines_of(self.normalizer, blocks))
        captured: list[str] = []
        if self.drop:
            lines = _capture(lines, captured)
        reader = csv.reader(lines, delimiter=self.delimiter, strict=True)
        self._read_header(reader)
        if self.drop:
            self._write_lines(captured, 1, set())
        self._careful(reader, 0, self.header_end, captured)

    def _simple_header(self, data: bytes, first_line: str) -> list[str] | None:
        """The header when line 1 is a whole, well-quoted record (else the careful pass reads it)."""
        try:
            header = next(csv.reader([first_line], delimiter=self.delimiter, strict=True), [])
        except csv.Error:
            return None
        if not header:
            return None
        line = data[: data.find(b"\n") + 1]
        if analyze_block(line, self.delimiter, len(header), skeleton_table(self.delimiter)) is None:
            return None
        return header

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
        end: int = reader.line_num  # type: ignore[attr-defined]
        if end > 1:
            self.issues.add(
                codes.NEWLINE_IN_HEADER,
                Severity.ERROR,
                1,
                None,
                f"the header spans lines 1-{end}: a title holds a line break; write every title on line 1",
            )
        self._set_header(header, end)

    def _set_header(self, header: list[str], end: int) -> None:
        self.header_end = end
        self.columns = header
        self.ncols = len(header)
        self.rules.check_header(header, self.delimiter, self.issues)
        if self.drop or not self.rules.key_indices:
            self.row_repeats = self._repeat_finder(self._report_row_repeats)
        if self.rules.key_indices:
            self.key_repeats = self._repeat_finder(self._report_key_repeats)

    def _repeat_finder(self, report: RepeatSink) -> RepeatFinder:
        opts = self.options
        return RepeatFinder(
            report,
            buffer_rows=opts.dedupe_buffer_rows,
            temp_dir=opts.temp_dir,
            keep=opts.max_issues + 1,
            background=opts.background_io,
        )

    # the fast pass -----------------------------------------------------------------------------

    def _fast(self, blocks: Blocks, line: int) -> None:
        """Regular blocks without a parser; the careful pass from the first block that is not.

        The analyzer (in this process, or forked workers) proves blocks regular and fingerprints
        them while this process reads the next ones; blocks in flight wait in `pending`.
        """
        delimiter = self.delimiter
        needs_rows = self.rules.needs_rows or self.observer is not None
        long_lines = self.normalizer.long_lines
        analyzer = self.analyzer
        normalizer = self.normalizer
        # With helper processes, they check the UTF-8 of blocks nobody needs the text of.
        defer = isinstance(analyzer, ProcessAnalyzer) and not needs_rows
        normalizer.defer_decoding = defer
        analyzer.configure(delimiter, self.ncols, self.row_repeats is not None, check_utf8=defer)
        pending: deque[Block] = deque()
        source = iter(blocks)
        exhausted = False
        while True:
            while not exhausted and analyzer.in_flight() < analyzer.workers:
                block = next(source, None)
                if block is None:
                    exhausted = True
                elif block.data:
                    analyzer.submit(block.data)
                    pending.append(block)
            if not pending:
                return
            block = pending.popleft()
            records, fingerprints, bad_utf8 = analyzer.take()
            if bad_utf8:
                block = block._replace(text=normalizer.decode(block))  # reports each bad sequence
            if records >= 0 and self._long_index < len(long_lines) and long_lines[self._long_index] <= line + records:
                records = -1  # a line that may hold a value over the target's limit: read it carefully
            if records < 0:
                while analyzer.in_flight():
                    analyzer.take()
                normalizer.defer_decoding = False
                rest = _lines_of(normalizer, chain([block], pending, source))
                reader = csv.reader(rest, delimiter=delimiter, strict=True)
                self._careful(reader, line, line, [])
                return
            first = line + 1
            self.rows += records
            if needs_rows:
                text = normalizer.decode(block)
                rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
                self._accept(rows, first, None)
            if self.row_repeats is not None and fingerprints is not None:
                self.row_repeats.add_range(fingerprints, first)
            line += records

    def _has_long_line(self, long_lines: list[int], last: int) -> bool:
        found = False
        while self._long_index < len(long_lines) and long_lines[self._long_index] <= last:
            found = True
            self._long_index += 1
        return found

    def _accept(self, rows: list[list[str]], first_line: int, lines: list[int] | None) -> None:
        """Well-formed rows that stay in the output: the target's rules, the observer, the key."""
        self.rules.check_rows(rows, first_line, lines)
        if self.observer is not None:
            self.observer(rows, lines if lines is not None else list(range(first_line, first_line + len(rows))))
        if self.key_repeats is not None and rows:
            keys = value_fingerprints(rows, self.rules.key_indices)
            if lines is None:
                self.key_repeats.add_range(keys, first_line)
            else:
                self.key_repeats.add(keys, np.array(lines, dtype=np.int64))

    # the careful pass --------------------------------------------------------------------------

    def _careful(self, reader: Iterator[list[str]], before: int, prev_end: int, captured: list[str]) -> None:
        """Rows from csv.reader; `before`: the lines before the reader's first line, `prev_end`: the
        last line read so far."""
        widths = {self.ncols}
        long_lines = self.normalizer.long_lines
        while True:
            batch: list[list[str]] = []
            error: csv.Error | None = None
            try:
                batch.extend(islice(reader, _BATCH))
            except csv.Error as exc:
                error = exc
            end: int = before + reader.line_num  # type: ignore[attr-defined]
            if not batch and error is None:
                break
            has_long = self._has_long_line(long_lines, end)
            if error is None and not has_long and end - prev_end == len(batch) and set(map(len, batch)) == widths:
                dropped = self._regular(batch, prev_end + 1)
            else:
                dropped = self._irregular(batch, prev_end + 1, end, error)
            if self.drop:
                self._write_lines(captured, prev_end + 1, dropped)
            prev_end = end

    def _good_rows(self, good: list[list[str]], first_line: int, lines: list[int] | None) -> set[int]:
        """Rows with the right field count: repeats, then the rules on the rows that stay."""
        line_array = (
            np.arange(first_line, first_line + len(good), dtype=np.int64)
            if lines is None
            else np.array(lines, dtype=np.int64)
        )
        if self.seen is None:
            self._accept(good, first_line, lines)
            if self.row_repeats is not None:
                self.row_repeats.add(row_fingerprints(good, self.delimiter), line_array)
            return set()
        fingerprints = row_fingerprints(good, self.delimiter)
        assert self.row_repeats is not None
        self.row_repeats.add(fingerprints, line_array)
        repeated = self.seen.add(fingerprints)
        if not repeated.any():
            self._accept(good, first_line, lines)
            return set()
        keep = np.flatnonzero(~repeated).tolist()
        kept = [good[i] for i in keep]
        self.rows -= len(good) - len(kept)
        self._accept(kept, first_line, [int(line_array[i]) for i in keep])
        return {int(line) for line in line_array[repeated]}

    def _regular(self, batch: list[list[str]], first_line: int) -> set[int]:
        self.rows += len(batch)
        return self._good_rows(batch, first_line, None)

    def _irregular(self, batch: list[list[str]], first_line: int, end: int, error: csv.Error | None) -> set[int]:
        rules = self.rules
        limit = rules.value_byte_limit
        short = limit // 4 if limit is not None else 0  # a value this long in characters may exceed it
        good: list[list[str]] = []
        good_lines: list[int] = []
        spans: dict[int, int] = {}
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
                    if breaks:
                        spans[line] = breaks
            line += breaks + 1
        if error is not None:
            self._csv_error(error, line, end)
        if not good:
            return set()
        dropped = self._good_rows(good, first_line, good_lines)
        # a dropped record takes all its lines out of the output
        return {n for start in dropped for n in range(start, start + spans.get(start, 0) + 1)}

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
        if not self.issues.wants(codes.FIELD_COUNT, line):
            self.issues.add(codes.FIELD_COUNT, Severity.ERROR, line, None, "")
            return
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

    def _column(self, index: int) -> str | None:
        return self.columns[index] if index < len(self.columns) else None

    def _newline_in_value(self, row: list[str], line: int, breaks: int) -> None:
        for index, value in enumerate(row):
            if "\n" in value:
                self.issues.add(
                    codes.NEWLINE_IN_VALUE,
                    Severity.ERROR,
                    line,
                    self._column(index),
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
                    self.issues.add(
                        codes.VALUE_TOO_LONG,
                        Severity.ERROR,
                        line,
                        self._column(index),
                        f"line {line}: a value is {size:,} bytes long (UTF-8); BigPanda accepts at most "
                        f"{limit:,} bytes (32K) per value: shorten it",
                    )

    def _csv_error(self, error: csv.Error, start: int, end: int) -> None:
        message = str(error)
        if self._fatal is not None and "unexpected end of data" in message:
            return  # the reading stopped there, the record did not: the fatal error says why
        self.bad_records += 1
        where = f"line {start}" if start >= end else f"the record starting on line {start} (read up to line {end})"
        if "field larger than field limit" in message:
            limit_mb = csv.field_size_limit() / (1024 * 1024)
            self.issues.add(
                codes.BAD_QUOTING,
                Severity.ERROR,
                start,
                None,
                f"{where}: a double-quoted value runs on for more than {limit_mb:,.0f} MB, so its closing "
                "double quote is most likely missing: close it",
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

    # repeats ----------------------------------------------------------------------------------

    def _report_row_repeats(self, lines: Int64Array, previous: Int64Array, count: int) -> None:
        if self.drop:

            def dropped(i: int) -> str:
                return f"removed line {lines[i]}: it repeated line {previous[i]} exactly"

            self.issues.add_many(codes.DUPLICATE_ROW_DROPPED, Severity.FIXED, lines, None, dropped, count)
            return
        severity, advice = self.rules.duplicate_row
        self.issues.add_many(
            codes.DUPLICATE_ROW,
            severity,
            lines,
            None,
            lambda i: f"line {lines[i]} repeats line {previous[i]} exactly{advice}",
            count,
        )

    def _report_key_repeats(self, lines: Int64Array, previous: Int64Array, count: int) -> None:
        label = self.rules.key_label
        self.issues.add_many(
            codes.REPEATED_KEY,
            Severity.WARNING,
            lines,
            label,
            lambda i: (
                f"line {lines[i]} has the same primary key ({label}) as line {previous[i]}; D·engage keeps "
                "the last row with this key, the earlier ones are overwritten"
            ),
            count,
        )

    # end of the pass --------------------------------------------------------------------------

    def finish(self) -> None:
        if self.rows == 0 and not self.bad_records:
            self.issues.add(
                codes.NO_DATA_ROWS,
                Severity.ERROR,
                None,
                None,
                "the file has a header but no data rows: a table needs at least one row",
            )
        for finder in (self.row_repeats, self.key_repeats):
            if finder is not None:
                finder.finish()

    def close(self) -> None:
        for finder in (self.row_repeats, self.key_repeats):
            if finder is not None:
                finder.close()
