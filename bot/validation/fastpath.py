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
