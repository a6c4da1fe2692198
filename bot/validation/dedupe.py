"""Repeated rows and keys in bounded memory: 64-bit fingerprints, sorted in runs, spilled to disk.

A row's fingerprint is Python's `hash` of its canonical form: the bytes `csv.writer` would write
for its PARSED values (minimal quoting, LF line ending left out), so `a,b` and `"a",b` are the same
row and no separator can make two different rows look alike. The fast pass computes the same bytes
from the file itself (see fastpath.py); `row_fingerprints` computes them from parsed rows.

`RepeatFinder` takes (fingerprint, line) pairs in line order and reports every repeat with its line
and the line of the occurrence before it, through a callback that receives numpy arrays (so that
23 million repeats cost a few vectorised calls, not 23 million Python calls):

- pairs gather in a buffer of `buffer_rows` (16 bytes a row); a full buffer is sorted by
  fingerprint on a background thread: repeats inside it are found at once, and it shrinks to one
  entry per distinct fingerprint (fingerprint, first line, last line): a file of identical rows
  stays one entry a run;
- when more than one run exists, the runs go to one temporary file (16 bytes a distinct entry), each
  sorted, with the offsets of 256 fingerprint ranges; at the end ranges of about 64 Ki entries are
  read from every run, sorted (stable: runs are in line order) and their repeats across runs found.

Memory: the buffer and its sort (about 50 bytes a buffered row, 13 MB at the default 256 Ki rows),
the `keep` repeats nearest the start, and one range at the end. Disk: 16 bytes a distinct row per
run, e.g. 560 MB for a 500 MB file of 35 million distinct short rows, in the temporary folder (TMPDIR).

A 64-bit fingerprint can collide: for 10 million distinct rows the chance that any two collide
is about 3 in a million (n² / 2⁶⁵). Python's hash is keyed per process, so a collision is
not reproducible and cannot be crafted by a file's author.
"""

from __future__ import annotations

import csv
import io
import queue
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import numpy.typing as npt

Int64Array = npt.NDArray[np.int64]
# (lines of the repeats nearest the start, line of the occurrence before each, number of repeats)
RepeatSink = Callable[[Int64Array, Int64Array, int], None]

_PARTITION_BITS = 8
_PARTITIONS = 1 << _PARTITION_BITS


def stable_order(values: Int64Array) -> tuple[Int64Array, Int64Array]:
    """Indices that sort `values` as unsigned numbers, equal values in index order, and the sorted values.

    A plain sort of (high bits of the value, index) packed in one word, about seven times faster
    than a stable argsort; when two different values share those high bits and come out of
    order (rare: about 1 in 60 sorts of a million), the stable argsort decides.
    """
    n = len(values)
    unsigned = values.view(np.uint64)
    bits = np.uint64(max(1, (n - 1).bit_length()))
    keys = ((unsigned >> bits) << bits) | np.arange(n, dtype=np.uint64)
    keys.sort()
    order = (keys & ((np.uint64(1) << bits) - np.uint64(1))).astype(np.int64)
    del keys
    ordered = unsigned[order]
    if n > 1 and bool(np.any(ordered[1:] < ordered[:-1])):
        order = np.argsort(unsigned, kind="stable")
        ordered = unsigned[order]
    return order, ordered.view(np.int64)


def row_fingerprints(rows: Sequence[list[str]], delimiter: str) -> Int64Array:
    """The fingerprint of each row: the hash of the bytes `csv.writer` writes for it (without its LF).

    The text is encoded back with surrogateescape, so it is the file's own bytes, invalid UTF-8 too.
    """
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="\n").writerows(rows)
    data = out.getvalue().encode("utf-8", "surrogateescape")
    n = len(rows)
    if data.count(b"\n") == n:  # no value holds a line break: one line a row
        return np.fromiter(map(hash, data[:-1].split(b"\n")), dtype=np.int64, count=n)
    single = io.StringIO()
    writer = csv.writer(single, delimiter=delimiter, lineterminator="\n")
    result = np.empty(n, dtype=np.int64)
    for i, row in enumerate(rows):
        single.seek(0)
        single.truncate()
        writer.writerow(row)
        result[i] = hash(single.getvalue()[:-1].encode("utf-8", "surrogateescape"))
    return result


def value_fingerprints(rows: Sequence[list[str]], indices: Sequence[int]) -> Int64Array:
    """The fingerprint of the values at `indices` of each row (a primary key)."""
    from operator import itemgetter

    get = itemgetter(*indices)
    return np.fromiter(map(hash, map(get, rows)), dtype=np.int64, count=len(rows))


@dataclass
class _Run:
    offset: int  # file offset of the run's fingerprints
    size: int  # distinct entries
    line_dtype: np.dtype[Any]
    bounds: list[int]  # entry index where each fingerprint range starts (+ size)


class RepeatFinder:
    """Values that occur more than once in a stream of (value, line) pairs; memory bounded.

    The sorting runs on a background thread (numpy releases the GIL), so on a second core it
    costs the pass nothing. Repeats are handed to `on_repeats` in `finish()`, on the caller's
    thread: (the lines of up to `keep` repeats nearest the start of the file, the line of the
    occurrence before each, how many repeats there were in all).
    """

    def __init__(
        self,
        on_repeats: RepeatSink,
        buffer_rows: int = 1 << 18,
        temp_dir: str | None = None,
        keep: int = 1001,
        background: bool = True,
    ) -> None:
        self._on_repeats = on_repeats
        self._capacity = max(2, buffer_rows)
        self._keep = max(1, keep)
        self._values = np.empty(self._capacity, dtype=np.int64)
        self._lines = np.empty(self._capacity, dtype=np.int64)
        self._n = 0
        self._temp_dir = temp_dir
        self._file: IO[bytes] | None = None
        self._runs: list[_Run] = []
        self._found: list[tuple[Int64Array, Int64Array, int]] = []
        self.count = 0  # pairs added
        self._error: BaseException | None = None
        self._queue: queue.Queue[tuple[Int64Array, Int64Array] | None] | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._queue = queue.Queue(maxsize=4)
            self._thread = threading.Thread(target=self._work, name="validation-repeats", daemon=True)
            self._thread.start()

    def add(self, values: Int64Array, lines: Int64Array) -> None:
        """Add pairs (the arrays are handed over: do not change them); `lines` ascending and after
        every line added before."""
        self.count += len(values)
        if self._queue is None:
            self._add(values, lines)
            return
        if self._error is not None:
            raise self._error
        self._queue.put((values, lines))

    def add_range(self, values: Int64Array, first_line: int) -> None:
        """Add pairs on consecutive lines first_line, first_line + 1, ..."""
        self.add(values, np.arange(first_line, first_line + len(values), dtype=np.int64))

    def finish(self) -> None:
        """Hand every repeat to `on_repeats`, then free the memory and the temporary file."""
        try:
            self._stop()
            if self._error is not None:
                raise self._error
            if self._n or not self._runs:
                self._flush(final=not self._runs)
            if self._runs:
                # Ranges of about 64 Ki entries each, read from every run in one go.
                total = sum(run.size for run in self._runs)
                ranges = min(_PARTITIONS, 1 << max(0, (total >> 16).bit_length()))
                step = _PARTITIONS // ranges
                for part in range(0, _PARTITIONS, step):
                    self._merge_partition(part, part + step)
            found, self._found = self._found, []
            for lines, previous, count in found:
                self._on_repeats(lines, previous, count)
        finally:
            self.close()

    def close(self) -> None:
        self._stop()
        if self._file is not None:
            self._file.close()
            self._file = None

    # internals ------------------------------------------------------------------------------

    def _stop(self) -> None:
        if self._thread is not None and self._queue is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
            self._queue = None

    def _work(self) -> None:
        assert self._queue is not None
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is None:
                try:
                    self._add(*item)
                except BaseException as exc:  # handed to the caller at its next add or finish
                    self._error = exc

    def _add(self, values: Int64Array, lines: Int64Array) -> None:
        start = 0
        total = len(values)
        while start < total:
            take = min(total - start, self._capacity - self._n)
            self._values[self._n : self._n + take] = values[start : start + take]
            self._lines[self._n : self._n + take] = lines[start : start + take]
            self._n += take
            start += take
            if self._n == self._capacity:
                self._flush()

    def _found_repeats(self, lines: Int64Array, previous: Int64Array) -> None:
        count = len(lines)
        if count > self._keep:
            nearest = np.argpartition(lines, self._keep - 1)[: self._keep]
            lines, previous = lines[nearest], previous[nearest]
        self._found.append((lines, previous, count))
        if len(self._found) > 64:  # keep the list short: merge what was found so far
            all_lines = np.concatenate([f[0] for f in self._found])
            all_previous = np.concatenate([f[1] for f in self._found])
            total = sum(f[2] for f in self._found)
            self._found = []
            if len(all_lines) > self._keep:
                nearest = np.argpartition(all_lines, self._keep - 1)[: self._keep]
                all_lines, all_previous = all_lines[nearest], all_previous[nearest]
            self._found.append((all_lines, all_previous, total))

    def _flush(self, final: bool = False) -> None:
        n = self._n
        self._n = 0
        if n == 0:
            return
        # Unsigned order: the top bits of a fingerprint name its range, ranges are contiguous.
        order, ordered = stable_order(self._values[:n])
        lines = self._lines[:n][order]
        del order
        new = np.empty(n, dtype=bool)
        new[0] = True
        np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
        repeats = np.flatnonzero(~new)
        if len(repeats):
            self._found_repeats(lines[repeats], lines[repeats - 1])
        if final:
            return
        if not len(repeats):  # all distinct (the usual case): no gathering
            del new, repeats
            self._spill(ordered, lines, lines)
            return
        del repeats
        starts = np.flatnonzero(new)
        del new
        last = lines[np.append(starts[1:] - 1, n - 1)]
        first = lines[starts]
        del lines
        self._spill(ordered[starts], first, last)

    def _spill(self, values: Int64Array, first: Int64Array, last: Int64Array) -> None:
        if self._file is None:
            # closed by close(), at the end of the pass
            self._file = tempfile.TemporaryFile(prefix="tablebot-repeats-", dir=self._temp_dir)  # noqa: SIM115
        line_dtype: np.dtype[Any] = np.dtype(np.uint32 if int(last.max()) < 2**32 else np.int64)
        edges = (np.arange(_PARTITIONS + 1, dtype=np.uint64) << np.uint64(64 - _PARTITION_BITS))[1:-1]
        bounds = [0, *np.searchsorted(values.view(np.uint64), edges).tolist(), len(values)]
        offset = self._file.seek(0, io.SEEK_END)
        values.tofile(self._file)
        for lines in (first, last):
            lines.astype(line_dtype).tofile(self._file)
        self._runs.append(_Run(offset, len(values), line_dtype, bounds))

    def _read(self, run: _Run, part: int, end: int) -> tuple[Int64Array, Int64Array, Int64Array]:
        assert self._file is not None
        lo, hi = run.bounds[part], run.bounds[end]
        file = self._file
        width = run.line_dtype.itemsize

        def read(base: int, dtype: np.dtype[Any]) -> Int64Array:
            file.seek(base + lo * dtype.itemsize)
            data = file.read((hi - lo) * dtype.itemsize)
            return np.frombuffer(data, dtype=dtype).astype(np.int64)

        values = read(run.offset, np.dtype(np.int64))
        first = read(run.offset + run.size * 8, run.line_dtype)
        last = read(run.offset + run.size * (8 + width), run.line_dtype)
        return values, first, last

    def _merge_partition(self, part: int, end: int) -> None:
        pieces = [self._read(run, part, end) for run in self._runs]
        values = np.concatenate([p[0] for p in pieces])
        if len(values) < 2:
            return
        first = np.concatenate([p[1] for p in pieces])
        last = np.concatenate([p[2] for p in pieces])
        del pieces
        order, values = stable_order(values)  # runs are in line order: a stable order keeps it
        first, last = first[order], last[order]
        again = np.flatnonzero(values[1:] == values[:-1]) + 1
        if len(again):
            self._found_repeats(first[again], last[again - 1])


class SeenFingerprints:
    """Membership of fingerprints seen so far, answered a batch at a time (for drop_duplicates).

    In memory: 8 bytes a distinct row (plus a transient copy of the largest run while merging).
    """

    def __init__(self) -> None:
        self._runs: list[Int64Array] = []

    def add(self, batch: Int64Array) -> npt.NDArray[np.bool_]:
        """True for each fingerprint already seen (earlier in the stream or earlier in this batch)."""
        seen = np.zeros(len(batch), dtype=bool)
        if not len(batch):
            return seen
        for run in self._runs:
            pos = np.searchsorted(run, batch)
            np.minimum(pos, len(run) - 1, out=pos)
            seen |= run[pos] == batch
        _, first = np.unique(batch, return_index=True)
        again = np.ones(len(batch), dtype=bool)
        again[first] = False
        seen |= again
        new = np.sort(batch[~seen])
        if len(new):
            self._runs.append(new)
            # Merge while the newest run is at least half the size of the one before it, so run
            # sizes roughly double and a batch is looked up in O(log n) runs.
            while len(self._runs) > 1 and len(self._runs[-2]) <= 2 * len(self._runs[-1]):
                b = self._runs.pop()
                a = self._runs.pop()
                merged = np.concatenate((a, b))
                del a, b
                merged.sort(kind="stable")  # two sorted runs: timsort merges them in linear time
                self._runs.append(merged)
        return seen
