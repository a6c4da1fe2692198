"""The fast pass over a block of whole lines: prove it regular with byte-level vector work, or refuse.

A block is *regular* when `csv.reader(strict=True)` would read it as one record a line, each with
exactly the header's number of fields, and no line is empty. For such a block the pass needs no
parser: it counts the lines and fingerprints each line's canonical bytes (see dedupe.py). Anything
else (a value spanning lines, a wrong field count, a quote in the middle of a value, a blank line)
makes `analyze_block` return None, and the careful pass (csv.reader, row by row) reads the block and
the rest of the file. The two passes give the same report; tests/test_validation_differential.py
holds them to it.

How a block is proved regular, without a Python step per line:

1. The *skeleton*: the block with every byte except the delimiter, LF and `"` deleted
   (`bytes.translate` in C; about 7 % of a typical table's bytes).
2. Without any `"`: the skeleton must equal `(delimiter * (columns - 1) + LF) * lines`.
3. With quotes: quote parity in the skeleton says which delimiters and LFs are inside quotes; an LF
   inside quotes refuses the block; the delimiters and LFs outside quotes must make the pattern of
   2. Each `"` in the block must sit where RFC 4180 quoting puts it: an opening quote (even parity)
   after a delimiter, an LF or another quote (the second of a doubled `""`), a closing one (odd
   parity) before a delimiter, an LF or another quote. Under these rules the parity reading and
   csv.reader's state machine agree, so the block's first line starts a record and its last ends one.
4. The canonical bytes: `csv.writer` quotes a value only when it holds the delimiter, a quote or a
   line break; a value quoted without need (`"prod"`) loses its two quotes.
"""

from __future__ import annotations

import contextlib
import mmap
import multiprocessing
import struct
from collections import deque
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import NamedTuple

import numpy as np

_QUOTE = 34
_LF = 10


class RegularBlock(NamedTuple):
    records: int
    canonical: bytes  # the block as csv.writer would write its rows (the block itself when equal)


def skeleton_table(delimiter: str) -> bytes:
    """The bytes `bytes.translate` deletes to make a skeleton."""
    keep = {ord(delimiter), _QUOTE, _LF}
    return bytes(b for b in range(256) if b not in keep)


def analyze_block(block: bytes, delimiter: str, columns: int, delete: bytes) -> RegularBlock | None:
    """The block's records and canonical bytes when it is regular (see the module doc), else None."""
    if not block or block[-1] != _LF:
        return None
    d = ord(delimiter)
    skeleton = block.translate(None, delete)
    pattern = delimiter.encode("ascii") * (columns - 1) + b"\n"
    records = skeleton.count(b"\n")
    if columns == 1 and (block[0] == _LF or b"\n\n" in block):
        return None  # a blank line (with more columns, its missing delimiters refuse the block)
    if b'"' not in skeleton:
        return RegularBlock(records, block) if skeleton == pattern * records else None

    s = np.frombuffer(skeleton, dtype=np.uint8)
    is_quote = s == _QUOTE
    quotes = int(np.count_nonzero(is_quote))
    if quotes % 2:
        return None
    # parity before each byte: odd = inside quotes (for a quote: it closes, or is a doubled one)
    inside = (np.cumsum(is_quote, dtype=np.int64) - is_quote) & 1
    inside_mask = inside.astype(bool)
    if np.any(inside_mask & (s == _LF)):
        return None
    outside = s[~inside_mask & ~is_quote]
    if outside.tobytes() != pattern * records:
        return None

    a = np.frombuffer(block, dtype=np.uint8)
    at = np.flatnonzero(a == _QUOTE)
    if len(at) != quotes:
        return None
    # at - 1 is -1 for a quote at the start: a[-1] is the block's final LF, a line start as wanted
    before = a[at - 1]
    after = a[at + 1]  # a quote is never the last byte: the block ends with LF
    opening = (np.arange(quotes) & 1) == 0
    before_ok = (before == d) | (before == _LF)
    after_ok = (after == d) | (after == _LF)
    ok = np.where(opening, before_ok | (before == _QUOTE), after_ok | (after == _QUOTE))
    if not ok.all():
        return None

    # Pair each quoted value's opening and closing quote (doubled quotes inside are neither).
    opens = np.flatnonzero(opening & before_ok)
    closes = np.flatnonzero(~opening & after_ok)
    if len(opens) != len(closes):
        return None
    skeleton_at = np.flatnonzero(is_quote)
    # Nothing of the skeleton between them: no delimiter, no quote inside; LF is excluded above.
    needless = skeleton_at[closes] - skeleton_at[opens] == 1
    if columns == 1:
        needless &= at[closes] - at[opens] > 1  # csv.writer quotes a row of one empty value: ""
    if not needless.any():
        return RegularBlock(records, block)
    keep = np.ones(len(a), dtype=bool)
    keep[at[opens[needless]]] = False
    keep[at[closes[needless]]] = False
    return RegularBlock(records, a[keep].tobytes())


def line_fingerprints(canonical: bytes, records: int) -> np.ndarray:
    """The fingerprint of each line of a regular block's canonical bytes (as dedupe.row_fingerprints)."""
    # the split's last piece is the empty one after the final LF: count= leaves it out
    return np.fromiter(map(hash, canonical.split(b"\n")), dtype=np.int64, count=records)


# Analysis off the main process ---------------------------------------------------------------
#
# Proving a block regular and fingerprinting its lines take about two thirds of the fast pass and
# need nothing but the block's bytes, so they can run in forked worker processes while the main
# process reads and repairs the file (and decodes the blocks whose text it needs: the helpers check
# the UTF-8 of the others). A forked worker shares the parent's hash
# key, so its fingerprints equal the ones the parent computes for rows it reads carefully.

# (records or -1: not regular, fingerprints, whether the block holds invalid UTF-8 (when checked))
BlockResult = tuple[int, "np.ndarray | None", bool]
_Config = tuple[str, int, bytes, bool, bool]  # delimiter, columns, skeleton table, fingerprints, check UTF-8


class LocalAnalyzer:
    """Analyzes blocks in this process, in the order they were submitted."""

    def __init__(self) -> None:
        self._pending: deque[bytes] = deque()
        self._config: _Config = (",", 1, b"", False, False)

    def configure(self, delimiter: str, columns: int, fingerprints: bool, check_utf8: bool = False) -> None:
        self._config = (delimiter, columns, skeleton_table(delimiter), fingerprints, check_utf8)

    workers = 1  # blocks that may be in flight at once

    def submit(self, block: bytes) -> None:
        self._pending.append(block)

    def take(self) -> BlockResult:
        return _analyze(self._pending.popleft(), self._config)

    def in_flight(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        self._pending.clear()


def _analyze(block: bytes, config: _Config) -> BlockResult:
    delimiter, columns, delete, fingerprints, check_utf8 = config
    bad_utf8 = False
    if check_utf8 and not block.isascii():
        try:
            block.decode("utf-8")
        except UnicodeDecodeError:
            bad_utf8 = True
    shape = analyze_block(block, delimiter, columns, delete)
    if shape is None:
        return -1, None, bad_utf8
    return shape.records, line_fingerprints(shape.canonical, shape.records) if fingerprints else None, bad_utf8


_SLOTS = 2  # blocks in flight per worker (one analyzed while the next is copied in)
_SLOT_MESSAGE = struct.Struct("<qq")


def _worker(
    conn: Connection, inbox: mmap.mmap, outbox: mmap.mmap, slot_bytes: int
) -> None:  # pragma: no cover - runs in a forked child
    config: _Config = (",", 1, b"", False, False)
    try:
        while True:
            message = conn.recv_bytes()
            if not message:
                return
            if message[:1] == b"C":  # configuration: C<fingerprints 0|1><check UTF-8 0|1><delimiter><columns>
                delimiter = message[3:4].decode("ascii")
                config = (
                    delimiter,
                    int(message[4:]),
                    skeleton_table(delimiter),
                    message[1:2] == b"1",
                    message[2:3] == b"1",
                )
                continue
            slot, length = _SLOT_MESSAGE.unpack(message)
            block = inbox[slot * slot_bytes : slot * slot_bytes + length]
            records, fps, bad_utf8 = _analyze(block, config)
            if fps is not None:
                at = slot * slot_bytes * 4
                outbox[at : at + fps.nbytes] = fps.tobytes()
            conn.send_bytes(_SLOT_MESSAGE.pack(records, (0 if fps is None else 1) | (2 if bad_utf8 else 0)))
    except (EOFError, OSError, KeyboardInterrupt):
        return
    finally:
        conn.close()


class _Worker(NamedTuple):
    conn: Connection
    process: BaseProcess
    inbox: mmap.mmap  # _SLOTS blocks of slot_bytes, shared with the worker
    outbox: mmap.mmap  # _SLOTS fingerprint arrays of 4 * slot_bytes (a record is at least 2 bytes)


class ProcessAnalyzer:
    """Analyzes blocks in forked worker processes, results in submission order.

    Blocks and fingerprints travel through shared memory mapped before the fork; the pipes carry
    16-byte messages only, so neither side ever waits on a full pipe. Fork it before the pass
    starts any thread. A block too large for a slot, or a worker that fails, is analyzed here.
    """

    def __init__(self, workers: int, chunk_size: int) -> None:
        context = multiprocessing.get_context("fork")
        self._slot_bytes = 2 * chunk_size + 65536  # a chunk and the rest of its last line
        self._workers: list[_Worker] = []
        for _ in range(workers):
            inbox = mmap.mmap(-1, _SLOTS * self._slot_bytes)
            outbox = mmap.mmap(-1, _SLOTS * self._slot_bytes * 4)
            parent, child = context.Pipe()
            process = context.Process(
                target=_worker, args=(child, inbox, outbox, self._slot_bytes), name="validation-blocks", daemon=True
            )
            process.start()
            child.close()
            self._workers.append(_Worker(parent, process, inbox, outbox))
        self._order: deque[tuple[int, int, bytes]] = deque()  # (worker, slot, block) in submission order
        self._submitted = 0
        self._local = LocalAnalyzer()

    def configure(self, delimiter: str, columns: int, fingerprints: bool, check_utf8: bool = False) -> None:
        self._local.configure(delimiter, columns, fingerprints, check_utf8)
        flags = (b"1" if fingerprints else b"0") + (b"1" if check_utf8 else b"0")
        message = b"C" + flags + delimiter.encode("ascii") + str(columns).encode()
        for worker in self._workers:
            worker.conn.send_bytes(message)

    @property
    def workers(self) -> int:
        """Blocks that may be in flight at once."""
        return len(self._workers) * _SLOTS

    def submit(self, block: bytes) -> None:
        """Hand a block to the next worker's next slot (the caller keeps at most `workers` in flight,
        so that slot's previous block has been taken)."""
        k = self._submitted
        self._submitted += 1
        index, slot = k % len(self._workers), (k // len(self._workers)) % _SLOTS
        if len(block) > self._slot_bytes:
            self._order.append((-1, 0, block))
            return
        worker = self._workers[index]
        at = slot * self._slot_bytes
        worker.inbox[at : at + len(block)] = block
        try:
            worker.conn.send_bytes(_SLOT_MESSAGE.pack(slot, len(block)))
        except OSError:
            index = -1  # that worker is gone: analyze the block here
        self._order.append((index, slot, block))

    def take(self) -> BlockResult:
        index, slot, block = self._order.popleft()
        if index < 0:
            return self._local_result(block)
        worker = self._workers[index]
        try:
            records, flags = _SLOT_MESSAGE.unpack(worker.conn.recv_bytes())
        except (EOFError, OSError):
            return self._local_result(block)
        fps = None
        if flags & 1 and records >= 0:
            at = slot * self._slot_bytes * 4
            fps = np.frombuffer(worker.outbox, dtype=np.int64, count=records, offset=at).copy()
        return records, fps, bool(flags & 2)

    def in_flight(self) -> int:
        return len(self._order)

    def _local_result(self, block: bytes) -> BlockResult:
        self._local.submit(block)
        return self._local.take()

    def close(self) -> None:
        for worker in self._workers:
            with contextlib.suppress(OSError):
                worker.conn.send_bytes(b"")
            worker.conn.close()
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
            worker.inbox.close()
            worker.outbox.close()
        self._workers.clear()
        self._order.clear()
