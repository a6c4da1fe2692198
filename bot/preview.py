"""The change preview: what replacing a table with a new file would add, remove and change.

Compared with the last version uploaded through the bot (the normalized file of the table's
latest `done` job in staging). Rows are matched by their key columns (BigPanda's query columns);
when those are unknown, missing from a file, or not unique in the old version, the whole row is
the key (then a row is only added or removed, never changed).

Streaming, bounded memory: the old version becomes two 64-bit hashes per row (key and whole row)
in numpy arrays, sorted once; the new file is read in batches and matched with `searchsorted`.
Only a few example rows are kept; the removed and changed examples are read back from the old
file in a second pass by row number. Hashes are Python's own (`hash` of a tuple of strings):
fast, 64-bit, and stable within the process, which is all a comparison of two files needs.
"""

from __future__ import annotations

import csv
import io
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:  # numpy itself is imported by diff_versions: this module is on Slack's acknowledgement path
    import numpy as np
    import numpy.typing as npt

DEFAULT_EXAMPLES = 3
_BATCH = 8192
_DELIMITERS = ",;\t|"

Row = dict[str, str]


@dataclass(frozen=True)
class ChangePreview:
    old_rows: int
    new_rows: int
    added: int
    removed: int
    changed: int
    key_columns: tuple[str, ...]  # () when whole rows were compared
    previous_job_id: str | None = None
    added_examples: tuple[Row, ...] = field(default=(), compare=False)
    removed_examples: tuple[Row, ...] = field(default=(), compare=False)
    changed_examples: tuple[tuple[Row, Row], ...] = field(default=(), compare=False)  # (old, new)

    @property
    def unchanged(self) -> int:
        return self.old_rows - self.removed - self.changed

    @property
    def removed_share(self) -> float:
        return self.removed / self.old_rows if self.old_rows else 0.0


def _delimiter(header_line: str) -> str:
    counts = {d: header_line.count(d) for d in _DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _reader(stream: BinaryIO) -> tuple[list[str], Iterator[list[str]]]:
    text = io.TextIOWrapper(stream, encoding="utf-8", errors="replace", newline="")
    first = text.readline()
    delimiter = _delimiter(first)
    header = next(csv.reader([first], delimiter=delimiter), [])
    return header, csv.reader(text, delimiter=delimiter)


@dataclass
class _Shape:
    header: list[str]
    key_idx: list[int] | None  # None: whole row
    row_idx: list[int]  # columns in name order, so a reordered file compares equal

    def key(self, row: list[str]) -> int:
        if self.key_idx is None:
            return self.row(row)
        return hash(tuple(row[i] if i < len(row) else "" for i in self.key_idx))

    def row(self, row: list[str]) -> int:
        return hash(tuple(row[i] if i < len(row) else "" for i in self.row_idx))

    def values(self, row: list[str]) -> Row:
        return {name: (row[i] if i < len(row) else "") for i, name in enumerate(self.header)}


def _shape(header: list[str], key_columns: Sequence[str] | None) -> _Shape:
    row_idx = sorted(range(len(header)), key=lambda i: header[i])
    key_idx = None
    if key_columns:
        key_idx = [header.index(c) for c in key_columns]
    return _Shape(header, key_idx, row_idx)


def _usable_keys(key_columns: Sequence[str], old: list[str], new: list[str]) -> tuple[str, ...]:
    keys = tuple(key_columns)
    if not keys or any(k not in old or k not in new for k in keys):
        return ()
    return keys


def diff_versions(
    old: BinaryIO,
    new: BinaryIO,
    key_columns: Sequence[str] = (),
    *,
    reopen_old: Callable[[], BinaryIO] | None = None,
    examples: int = DEFAULT_EXAMPLES,
    previous_job_id: str | None = None,
) -> ChangePreview:
    """Compare two CSV files (`old` the table as it is, `new` its replacement), streaming both.
    `reopen_old` gives the old file again for the examples of removed and changed rows."""
    import numpy as np

    old_header, old_rows = _reader(old)
    new_header, new_rows = _reader(new)
    keys = _usable_keys(key_columns, old_header, new_header)
    old_shape = _shape(old_header, keys)
    key_hashes: array[int] = array("q")
    row_hashes: array[int] = array("q")
    for row in old_rows:
        if not row:
            continue
        row_hashes.append(old_shape.row(row))
        key_hashes.append(old_shape.key(row))
    n_old = len(row_hashes)
    rows_arr: npt.NDArray[np.int64] = np.frombuffer(row_hashes, dtype=np.int64) if n_old else np.empty(0, np.int64)
    keys_arr: npt.NDArray[np.int64] = np.frombuffer(key_hashes, dtype=np.int64) if n_old else np.empty(0, np.int64)
    order = np.argsort(keys_arr, kind="stable")
    sorted_keys = keys_arr[order]
    if keys and n_old > 1 and bool(np.any(sorted_keys[1:] == sorted_keys[:-1])):
        keys = ()  # keys repeat in the table: rows cannot be paired by key
        old_shape = _shape(old_header, keys)
        keys_arr = rows_arr
        order = np.argsort(keys_arr, kind="stable")
        sorted_keys = keys_arr[order]
    del key_hashes
    sorted_rows = rows_arr[order]
    seen = np.zeros(n_old, dtype=bool)
    new_shape = _shape(new_header, keys)

    added = changed = n_new = 0
    added_examples: list[Row] = []
    changed_pairs: list[tuple[int, Row]] = []  # (old row number, new values)

    def match(batch: list[list[str]]) -> None:
        nonlocal added, changed
        kb = np.fromiter((new_shape.key(r) for r in batch), dtype=np.int64, count=len(batch))
        rb = np.fromiter((new_shape.row(r) for r in batch), dtype=np.int64, count=len(batch))
        if n_old:
            pos = np.searchsorted(sorted_keys, kb)
            clipped = np.minimum(pos, n_old - 1)
            found = (pos < n_old) & (sorted_keys[clipped] == kb)
            seen[clipped[found]] = True
            differs = found & (sorted_rows[clipped] != rb)
        else:
            clipped = np.zeros(len(batch), dtype=np.int64)
            found = differs = np.zeros(len(batch), dtype=bool)
        added += int((~found).sum())
        changed += int(differs.sum())
        if len(added_examples) < examples:
            for i in np.flatnonzero(~found)[: examples - len(added_examples)]:
                added_examples.append(new_shape.values(batch[int(i)]))
        if len(changed_pairs) < examples:
            for i in np.flatnonzero(differs)[: examples - len(changed_pairs)]:
                changed_pairs.append((int(order[clipped[i]]), new_shape.values(batch[int(i)])))

    batch: list[list[str]] = []
    for row in new_rows:
        if not row:
            continue
        batch.append(row)
        n_new += 1
        if len(batch) >= _BATCH:
            match(batch)
            batch = []
    if batch:
        match(batch)

    removed = int(n_old - seen.sum())
    removed_numbers: list[int] = []
    if removed and examples > 0:
        numbers = order[~seen]  # old row numbers; the examples are the first ones in the file
        if len(numbers) > examples:
            numbers = np.partition(numbers, examples - 1)[:examples]
        removed_numbers = sorted(int(i) for i in numbers)
    wanted = set(removed_numbers) | {n for n, _ in changed_pairs}
    old_values: dict[int, Row] = {}
    if wanted and reopen_old is not None:
        with reopen_old() as again:
            header, rows = _reader(again)
            shape = _shape(header, ())
            number = 0
            for row in rows:
                if not row:
                    continue
                if number in wanted:
                    old_values[number] = shape.values(row)
                    if len(old_values) == len(wanted):
                        break
                number += 1
    return ChangePreview(
        old_rows=n_old,
        new_rows=n_new,
        added=added,
        removed=removed,
        changed=changed,
        key_columns=keys,
        previous_job_id=previous_job_id,
        added_examples=tuple(added_examples),
        removed_examples=tuple(old_values[n] for n in removed_numbers if n in old_values),
        changed_examples=tuple((old_values[n], new) for n, new in changed_pairs if n in old_values),
    )
