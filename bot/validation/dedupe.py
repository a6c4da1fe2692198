"""Row fingerprints: the only memory of the pass that grows with the file.

Each data row leaves a 64-bit fingerprint, `hash(tuple(values))`, of its PARSED values, so `a,b`
and `"a",b` are the same row; the values are hashed as a tuple, so no separator can make two
different rows look alike. Fingerprints go into an `array('q')` (8 bytes a row); the physical line
of each row is kept as "segments" of consecutive lines (one entry per multi-line record or gap, not
per row). At the end, a numpy sort finds repeated fingerprints and both lines are named.

Memory: 8 bytes a row (16 with D·engage primary keys) while reading, plus about 9 bytes a row
during the final sort. 8 million rows (a 500 MB file of 60-byte rows) is 64 MB + 72 MB.

`drop_duplicates` must decide while streaming, so it also keeps `SeenFingerprints`: sorted numpy
runs merged like an LSM tree (sizes roughly doubling), 8 bytes a distinct row plus a transient
copy of the largest run while merging: at most about 24 bytes a row in all.

A 64-bit fingerprint can collide: for 10 million distinct rows the chance that any two collide
is about 3 in a million (n² / 2⁶⁵). Python's string hash is keyed per process, so a collision is
not reproducible and cannot be crafted by a file's author.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Sequence
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt

Int64Array = npt.NDArray[np.int64]
_BLOCK = 1 << 20


class Fingerprints:
    """Fingerprints of every well-formed data row, and (optionally) of its primary key."""

    def __init__(self, key_indices: Sequence[int] = ()) -> None:
        self.rows = array("q")
        self.keys: array[int] | None = array("q") if key_indices else None
        self._key: Any = itemgetter(*key_indices) if key_indices else None
        self._seg_rows = array("q")
        self._seg_lines = array("q")
        self._next_line = -1

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, rows: list[list[str]], first_line: int, lines: Sequence[int] | None = None) -> int:
        """Fingerprint `rows` (on lines first_line, first_line+1, ... or on `lines`); returns the
        index of the first of them (`batch(start)` gives their fingerprints)."""
        start = len(self.rows)
        self.rows.extend(map(hash, map(tuple, rows)))
        if self.keys is not None:
            self.keys.extend(map(hash, map(self._key, rows)))
        if lines is None:
            if rows and first_line != self._next_line:
                self._seg_rows.append(start)
                self._seg_lines.append(first_line)
            self._next_line = first_line + len(rows)
        else:
            for i, line in enumerate(lines):
                if line != self._next_line:
                    self._seg_rows.append(start + i)
                    self._seg_lines.append(line)
                self._next_line = line + 1
        return start

    def batch(self, start: int) -> Int64Array:
        """A copy of the fingerprints from `start` on (a copy: the array keeps growing)."""
        return np.array(self.rows[start:], dtype=np.int64)

    def lines_of(self, index: Int64Array) -> Int64Array:
        """The physical line of each row index."""
        seg_rows = np.frombuffer(self._seg_rows, dtype=np.int64)
        seg_lines = np.frombuffer(self._seg_lines, dtype=np.int64)
        seg = np.searchsorted(seg_rows, index, side="right") - 1
        result: Int64Array = seg_lines[seg] + (index - seg_rows[seg])
        return result

    def line_of(self, index: int) -> int:
        return int(self.lines_of(np.array([index], dtype=np.int64))[0])


def repeated_groups(values: Int64Array) -> Iterator[Int64Array]:
    """Row indices sharing one value, ascending, for every value that occurs more than once."""
    n = len(values)
    if n < 2:
        return
    ordered = np.sort(values)
    same = ordered[1:] == ordered[:-1]
    if not same.any():
        return
    repeated = np.unique(ordered[1:][same])
    del ordered, same
    parts = []
    last = len(repeated) - 1
    for start in range(0, n, _BLOCK):
        block = values[start : start + _BLOCK]
        pos = np.searchsorted(repeated, block)
        np.minimum(pos, last, out=pos)
        parts.append(np.flatnonzero(repeated[pos] == block) + start)
    index = np.concatenate(parts).astype(np.int64)
    hv = values[index]
    order = np.argsort(hv, kind="stable")
    index, hv = index[order], hv[order]
    bounds = np.flatnonzero(hv[1:] != hv[:-1]) + 1
    yield from np.split(index, bounds)


class SeenFingerprints:
    """Membership of fingerprints seen so far, answered a batch at a time (for drop_duplicates)."""

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
