"""The byte layer of the validation pass: read, sniff, repair, check UTF-8, hash and copy out.

`ByteNormalizer` sits between the source (a file object or any iterable of bytes chunks) and the
text decoder that feeds `csv.reader`. It works on large chunks (1 MiB by default) with C-speed
bytes methods, never per line, and it repairs the stream as it goes:

- a UTF-8 byte order mark is removed;
- CRLF and bare CR line endings become LF (everywhere, also inside quoted values: a value that
  spans lines gets LF inside it; BigPanda refuses such values anyway);
- blank lines at the very end are dropped and a missing final newline is added.

Every repair is reported once per kind, with a count and its first line. The line numbers of
the repaired stream equal the physical lines of the file as the user has it, because each line
ending becomes exactly one LF.

It also notes which physical lines are longer than a limit (32,768 bytes for BigPanda), so the
row loop only measures values on those lines, and it stops with one clear error when the input is
not a CSV at all (binary, UTF-16, HTML, empty), too large, or has an absurdly long line.
"""

from __future__ import annotations

import codecs
import hashlib
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import BinaryIO, NamedTuple

from bot.errors import InputError
from bot.validation import codes
from bot.validation.model import IssueCollector, Severity

BOM = b"\xef\xbb\xbf"
_SNIFF_BYTES = 64 * 1024
# Bytes that may appear in a text file: printable ASCII, tab, LF, CR, FF, VT, and all of 0x80..0xFF
# (UTF-8 multi-byte sequences). Anything else (NUL, other C0 controls, DEL) suggests binary.
_TEXT_BYTES = bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100)) + b"\t\n\r\x0b\x0c"
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "an Excel workbook (.xlsx) or a zip archive"),
    (b"\xd0\xcf\x11\xe0", "an old Excel workbook (.xls)"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
)


class FatalInput(InputError):
    """Raised inside the validator when the input cannot be validated further; the report turns
    it into the one issue that says why."""


class Sink:
    """The bytes that will be uploaded: their SHA-256, their size and an optional copy to `output`.

    Hashing (and writing) runs on a background thread: hashlib and file writes release the GIL
    for large buffers, so on a machine with a second core they cost the parse nothing.
    """

    def __init__(self, output: BinaryIO | None, threaded: bool = True, digest: bool = True) -> None:
        self._output = output
        self._sha = hashlib.sha256() if digest else None
        self.bytes_written = 0
        self._error: BaseException | None = None
        self._queue: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None
        if threaded and (digest or output is not None):
            # Bounded: the parse can run at most a few chunks ahead of the hashing.
            self._queue = queue.Queue(maxsize=4)
            self._thread = threading.Thread(target=self._drain, name="validation-sink", daemon=True)
            self._thread.start()
        self._digest: str | None = None

    def _consume(self, data: bytes) -> None:
        if self._sha is not None:
            self._sha.update(data)
        if self._output is not None:
            self._output.write(data)

    def _drain(self) -> None:
        assert self._queue is not None
        while True:
            data = self._queue.get()
            if data is None:
                return
            if self._error is None:
                try:
                    self._consume(data)
                except BaseException as exc:  # handed to the producing thread at the next write
                    self._error = exc

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.bytes_written += len(data)
        if self._sha is None and self._output is None:
            return
        if self._queue is None:
            self._consume(data)
            return
        if self._error is not None:
            raise self._error
        self._queue.put(data)

    def close(self) -> str:
        """Wait for the pending writes; the hex SHA-256 of everything written ("" without `digest`)."""
        if self._digest is None:
            if self._queue is not None and self._thread is not None:
                self._queue.put(None)
                self._thread.join()
            self._digest = self._sha.hexdigest() if self._sha is not None else ""
            if self._error is not None:
                raise self._error
        return self._digest


def iter_source(source: BinaryIO | Iterable[bytes], chunk_size: int) -> Iterator[bytes]:
    """Chunks of at least `chunk_size` bytes (except the last): small pieces are joined."""
    read = getattr(source, "read", None)
    readline = getattr(source, "readline", None)
    if read is not None and readline is not None:
        # A file: each chunk ends at a line end (a line longer than a chunk comes in chunk-sized
        # pieces), so the blocks of whole lines need no copying.
        def line_chunk() -> bytes:
            data: bytes = read(chunk_size) or b""
            if data and not data.endswith(b"\n"):
                data += readline(chunk_size) or b""
            return data

        pieces: Iterator[bytes] = iter(line_chunk, b"")
    elif read is not None:
        pieces = iter(lambda: read(chunk_size) or b"", b"")
    else:
        pieces = iter(source)
    pending: list[bytes] = []
    size = 0
    for piece in pieces:
        if not piece:
            continue
        if size == 0 and len(piece) >= chunk_size:
            yield bytes(piece)
            continue
        pending.append(bytes(piece))
        size += len(piece)
        if size >= chunk_size:
            yield b"".join(pending)
            pending.clear()
            size = 0
    if pending:
        yield b"".join(pending)


def _count_newlines(data: bytes) -> int:
    if len(data) < 65536:
        return data.count(b"\n")
    import numpy as np  # faster than bytes.count on large chunks; imported when first needed

    return int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8) == 10))


def _line_breaks(raw: bytes) -> int:
    """Line endings in raw (unrepaired) bytes: LF, CRLF and bare CR each count once."""
    return raw.count(b"\n") + raw.count(b"\r") - raw.count(b"\r\n")


def sniff(sample: bytes) -> FatalInput | None:
    """One clear error when the start of the file shows it is not a UTF-8 CSV at all."""
    save_as = "export or save it as CSV (UTF-8) and try again"
    if sample.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return FatalInput(codes.UTF16_FILE, f"the file is UTF-32 text, not UTF-8: {save_as}")
    if sample.startswith((b"\xff\xfe", b"\xfe\xff")):
        return FatalInput(
            codes.UTF16_FILE,
            f"the file is UTF-16 text (Excel's 'Unicode Text' export), not UTF-8: {save_as} ('CSV UTF-8' in Excel)",
        )
    for magic, what in _MAGIC:
        if sample.startswith(magic):
            return FatalInput(codes.BINARY_FILE, f"the file is {what}, not a CSV text file: {save_as}")
    head = sample[:_SNIFF_BYTES]
    if b"\x00" in head:
        # UTF-16 without a byte order mark: ASCII text leaves a NUL in every other byte.
        half = max(1, len(head) // 2)
        even, odd = head[0::2].count(0), head[1::2].count(0)
        if max(even, odd) > half * 0.3 and min(even, odd) < half * 0.05:
            return FatalInput(codes.UTF16_FILE, f"the file looks like UTF-16 text, not UTF-8: {save_as}")
        return nul_byte(head, 0)
    controls = len(head.translate(None, _TEXT_BYTES))
    if controls > max(2, len(head) // 100):
        return FatalInput(codes.BINARY_FILE, f"the file contains binary data, not CSV text: {save_as}")
    start = head.lstrip(b" \t\r\n" + BOM)[:64].lower()
    if start.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        return FatalInput(
            codes.HTML_FILE,
            "the file is a web page (HTML), not a CSV. When it came from Slack, the bot could not "
            "download the file (it needs the files:read scope and access to the channel); "
            "otherwise export the table as CSV and try again",
        )
    return None


def nul_byte(data: bytes, lines_before: int) -> FatalInput:
    """The error for the first NUL byte of `data` (which starts after `lines_before` lines)."""
    at = data.find(b"\x00")
    line = lines_before + _line_breaks(data[:at]) + 1
    return FatalInput(
        codes.BINARY_FILE,
        f"line {line} contains a NUL byte, so the file is not CSV text (a table export never has one): "
        "export or save it as CSV (UTF-8) and try again",
        line,
    )


class Block(NamedTuple):
    data: bytes  # repaired bytes of whole lines
    text: str | None  # their text; None: not decoded yet (ByteNormalizer.decode)
    context: tuple[bytes, int, bytes, int, bool] | None  # where the raw bytes were, for a later decode


class ByteNormalizer:
    """The repaired bytes of a source and their text, in blocks of whole lines (`blocks`)."""

    def __init__(
        self,
        source: BinaryIO | Iterable[bytes],
        issues: IssueCollector,
        *,
        chunk_size: int,
        max_bytes: int,
        max_line_bytes: int,
        long_line_bytes: int | None,
        sink: Sink | None,
    ) -> None:
        self._chunks = iter_source(source, chunk_size)
        self._issues = issues
        self._max_bytes = max_bytes
        self._max_line = max_line_bytes
        self._long_limit = long_line_bytes
        self._sink = sink
        self.bytes_read = 0
        # Physical lines longer than `long_line_bytes` (ascending): only these can hold a long value.
        self.long_lines: list[int] = []
        self.completed = False  # the whole source was read
        # Hand whole-chunk blocks on undecoded (the fast pass's helpers check their UTF-8).
        self.defer_decoding = False
        self._started = False
        self._done = False
        self._lines_emitted = 0  # LF bytes handed on so far
        self._emitted_any = False
        self._ends_with_newline = True
        self._held_newlines = 0  # a run of blank lines that may turn out to be the file's tail
        self._skip_lf = False  # the last chunk ended in CR: a leading LF here completes a CRLF
        self._utf8_pending = b""  # an incomplete UTF-8 sequence at the end of the last chunk
        # The raw chunk behind the latest repaired chunk, for naming invalid UTF-8 by file offset.
        self._raw = b""
        self._raw_offset = 0
        self._raw_before = b""  # the end of the raw chunk before it
        self._raw_lines_before = 0
        self._raw_skip_lf = False
        self._carry = 0  # bytes of the current (unfinished) line
        self._carry_flagged = False
        self._crlf = 0
        self._cr_only = 0
        self._first_cr_line: int | None = None
        self._offset = 0  # file offset of the next raw chunk to process

    def blocks(self) -> Iterator[Block]:
        """The repaired bytes and their text, in blocks of whole lines (each block ends with LF).

        Decoding happens once, here, per chunk (invalid UTF-8 is reported and kept as surrogate
        escapes, so the text encodes back to the same bytes). With `defer_decoding`, a block that
        is a whole chunk comes undecoded (text None): `decode(block)` decodes it later, reporting
        invalid UTF-8 exactly as it would have here.
        """
        carry_bytes = b""
        carry_text = ""
        while True:
            data = self._next()
            final = not data
            if (
                self.defer_decoding
                and not final
                and not carry_bytes
                and not self._utf8_pending
                and data.endswith(b"\n")
            ):
                yield Block(data, None, self._context())
                continue
            text = self._decode(data, final)
            if final:
                if carry_bytes or text:
                    yield Block(carry_bytes, carry_text + text, None)
                return
            if not carry_bytes and data.endswith(b"\n") and text.endswith("\n"):
                yield Block(data, text, None)  # the usual case with a file source: no copy
                continue
            data = carry_bytes + data if carry_bytes else data
            text = carry_text + text if carry_text else text
            cut = data.rfind(b"\n") + 1
            if cut == 0:
                carry_bytes, carry_text = data, text
                continue
            text_cut = text.rfind("\n") + 1
            if cut == len(data):
                carry_bytes = b""
                yield Block(data, text if text_cut == len(text) else text[:text_cut], None)
            else:
                carry_bytes = data[cut:]
                yield Block(data[:cut], text[:text_cut], None)
            carry_text = text[text_cut:]

    def _context(self) -> tuple[bytes, int, bytes, int, bool]:
        return (self._raw, self._raw_offset, self._raw_before, self._raw_lines_before, self._raw_skip_lf)

    def decode(self, block: Block) -> str:
        """The text of a block (decoding it now if `blocks` deferred it)."""
        if block.text is not None:
            return block.text
        assert block.context is not None
        saved, pending = self._context(), self._utf8_pending
        self._raw, self._raw_offset, self._raw_before, self._raw_lines_before, self._raw_skip_lf = block.context
        self._utf8_pending = b""
        try:
            return self._decode(block.data, False)
        finally:
            self._raw, self._raw_offset, self._raw_before, self._raw_lines_before, self._raw_skip_lf = saved
            self._utf8_pending = pending

    def _decode(self, data: bytes, final: bool) -> str:
        pending = self._utf8_pending
        buf = pending + data if pending else data
        try:
            text, used = codecs.utf_8_decode(buf, "strict", final)
        except UnicodeDecodeError:
            if data:
                self._report_bad_utf8(len(pending))
            else:
                self._report_truncated_utf8(len(pending))
            text, used = codecs.utf_8_decode(buf, "surrogateescape", final)
        self._utf8_pending = buf[used:]
        return text

    # the pass -----------------------------------------------------------------------------

    def _pull(self) -> bytes | None:
        data = next(self._chunks, None)
        if data is None:
            return None
        self.bytes_read += len(data)
        if self.bytes_read > self._max_bytes:
            limit_mb = self._max_bytes / (1024 * 1024)
            raise FatalInput(
                codes.FILE_TOO_LARGE,
                f"the file is larger than {limit_mb:,.0f} MB, the most a table upload accepts: "
                "split it or remove rows (validation stopped there)",
            )
        return data

    def _next(self) -> bytes:
        while not self._done:
            data = self._pull()
            if data is None:
                self._done = True
                out = self._finish()
                if out:
                    return out
                break
            if not self._started:
                self._started = True
                # The first chunk is at least _SNIFF_BYTES (or the whole file), whatever the
                # source's chunking: enough to see a BOM and to tell text from binary.
                parts, size, at_eof = [data], len(data), False
                while size < _SNIFF_BYTES:
                    more = self._pull()
                    if more is None:
                        at_eof = True
                        break
                    parts.append(more)
                    size += len(more)
                data = b"".join(parts) if len(parts) > 1 else data
                fatal = sniff(data)
                if fatal is None and at_eof and not data.lstrip(BOM).strip():
                    fatal = FatalInput(
                        codes.EMPTY_FILE,
                        "the file is empty: export the table with its header line and at least one data row",
                    )
                if fatal is not None:
                    raise fatal
                out = self._process(data, first=True)
            else:
                out = self._process(data, first=False)
            if out:
                return out
        return b""

    def _process(self, raw: bytes, first: bool) -> bytes:
        self._raw_before = self._raw[-4:]
        self._raw, self._raw_offset = raw, self._offset
        self._raw_lines_before = self._lines_emitted + self._held_newlines
        self._raw_skip_lf = self._skip_lf
        self._offset += len(raw)
        data = raw
        if first and data.startswith(BOM):
            data = data[len(BOM) :]
            self._issues.add(
                codes.BOM_REMOVED,
                Severity.FIXED,
                1,
                None,
                "removed the UTF-8 byte order mark (BOM) at the start of the file; "
                "it would otherwise become part of the first column's title",
            )
        if self._skip_lf:
            self._skip_lf = False
            if data.startswith(b"\n"):
                data = data[1:]
                self._cr_only -= 1
                self._crlf += 1
        if b"\r" in data:
            if self._first_cr_line is None:
                at = data.find(b"\r")
                self._first_cr_line = self._lines_emitted + self._held_newlines + data.count(b"\n", 0, at) + 1
            crlf = data.count(b"\r\n")
            self._crlf += crlf
            self._cr_only += data.count(b"\r") - crlf
            self._skip_lf = data.endswith(b"\r")
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if not data:
            return b""
        if self._held_newlines:
            data = b"\n" * self._held_newlines + data
            self._held_newlines = 0
        # (rstrip would copy the chunk even to remove one LF)
        trailing = len(data) - len(data.rstrip(b"\n")) if data.endswith(b"\n\n") else int(data.endswith(b"\n"))
        content = len(data) - trailing
        if trailing:
            keep = 1 if content or not self._ends_with_newline else 0
            hold = trailing - keep
            if hold:
                self._held_newlines = hold
                data = data[: len(data) - hold]
                if not data:
                    return b""
        return self._emit(data)

    def _emit(self, data: bytes) -> bytes:
        if b"\x00" in data:
            raise nul_byte(data, self._lines_emitted)
        self._scan_lines(data)
        self._lines_emitted += _count_newlines(data)
        self._ends_with_newline = data.endswith(b"\n")
        self._emitted_any = True
        if self._sink is not None:
            self._sink.write(data)
        return data

    def _finish(self) -> bytes:
        self.completed = True
        # Nothing raw is behind what is emitted from here on (at most the final LF).
        self._raw_before = self._raw[-4:]
        self._raw, self._raw_offset = b"", self._offset
        self._raw_lines_before = self._lines_emitted + self._held_newlines
        self._raw_skip_lf = False
        out = b""
        if self._emitted_any and not self._ends_with_newline:
            last = self._lines_emitted + 1
            out = self._emit(b"\n")
            self._issues.add(
                codes.FINAL_NEWLINE,
                Severity.FIXED,
                last,
                None,
                f"added the missing line break after the last line ({last}); "
                "BigPanda needs the file to end with a newline",
            )
        if self._held_newlines:
            first_blank = self._lines_emitted + 1
            n = self._held_newlines
            self._issues.add(
                codes.TRAILING_BLANK_LINES,
                Severity.FIXED,
                first_blank,
                None,
                f"removed {n} empty line{'s' if n != 1 else ''} at the end of the file (from line {first_blank})",
            )
        if self._crlf or self._cr_only:
            kinds = []
            if self._crlf:
                kinds.append(f"{self._crlf:,} Windows (CRLF)")
            if self._cr_only:
                kinds.append(f"{self._cr_only:,} old Mac (CR)")
            self._issues.add(
                codes.LINE_ENDINGS,
                Severity.FIXED,
                self._first_cr_line,
                None,
                f"converted {' and '.join(kinds)} line endings to LF (first on line {self._first_cr_line}); "
                "the upload needs LF line endings",
            )
        return out

    # checks ---------------------------------------------------------------------------------

    def _scan_lines(self, data: bytes) -> None:
        """Note lines longer than the long-line limit; stop on a line longer than max_line_bytes."""
        n = len(data)
        limit = self._long_limit
        first = data.find(b"\n")
        if first < 0:
            self._carry += n
            if limit is not None and self._carry > limit and not self._carry_flagged:
                self.long_lines.append(self._lines_emitted + 1)
                self._carry_flagged = True
            if self._carry > self._max_line:
                self._line_too_long(self._lines_emitted + 1)
            return
        if self._carry + first > self._max_line:
            self._line_too_long(self._lines_emitted + 1)
        if limit is not None and self._carry + first > limit and not self._carry_flagged:
            self.long_lines.append(self._lines_emitted + 1)
        self._carry_flagged = False
        step = min(limit, self._max_line) if limit is not None else self._max_line
        s = first + 1
        # A line starting at s is at most `step` bytes long iff a LF lies in data[s : s + step + 1].
        # rfind jumps over all the short lines of that window at once.
        while s + step < n:
            j = data.rfind(b"\n", s, s + step + 1)
            if j < 0:
                line = self._lines_emitted + data.count(b"\n", 0, s) + 1
                if limit is None:
                    self._line_too_long(line)
                self.long_lines.append(line)
                j = data.find(b"\n", s + step)
                if j < 0:
                    self._carry = n - s
                    self._carry_flagged = True
                    if self._carry > self._max_line:
                        self._line_too_long(line)
                    return
                if j - s > self._max_line:
                    self._line_too_long(line)
            s = j + 1
        last = data.rfind(b"\n", s) if s < n else -1
        self._carry = n - (last + 1) if last >= 0 else n - s

    def _line_too_long(self, line: int) -> None:
        raise FatalInput(
            codes.LINE_TOO_LONG,
            f"line {line} is longer than {self._max_line:,} bytes: this does not look like a CSV table "
            "(check that the file has one record per line)",
            line,
        )

    def _report_bad_utf8(self, pending: int) -> None:
        """Name each invalid sequence of the latest raw chunk by line and file offset (rare path).

        Adjacent invalid bytes are one sequence (the decoder names a UTF-16 surrogate's three bytes
        one by one): one issue each.
        """
        raw = self._raw
        buf = (self._raw_before[-pending:] if pending else b"") + raw
        offset = self._raw_offset - pending  # file offset of buf[0]
        view = memoryview(buf)
        pos = 0
        last_end = -1
        while pos < len(buf):
            try:
                _, used = codecs.utf_8_decode(view[pos:], "strict", not raw)
            except UnicodeDecodeError as exc:
                start = pos + exc.start
                if start != last_end:
                    self._bad_utf8(raw[: max(0, start - pending)], offset + start)
                pos += exc.end
                last_end = pos
                continue
            pos += used
            break

    def _report_truncated_utf8(self, pending: int) -> None:
        self._bad_utf8(self._raw, self.bytes_read - pending)

    def _bad_utf8(self, before: bytes, offset: int) -> None:
        """`before`: the raw bytes of the chunk up to the bad sequence."""
        breaks = _line_breaks(before)
        if self._raw_skip_lf and before.startswith(b"\n"):
            breaks -= 1  # that LF completes a CRLF counted in the chunk before
        line = self._raw_lines_before + breaks + 1
        if not self._issues.wants(codes.INVALID_UTF8, line):
            self._issues.add(codes.INVALID_UTF8, Severity.ERROR, line, None, "")
            return
        self._issues.add(
            codes.INVALID_UTF8,
            Severity.ERROR,
            line,
            None,
            f"line {line} (byte {offset:,} of the file) is not valid UTF-8 text; the file was "
            "probably saved in another encoding (e.g. Windows-1252): save it as CSV UTF-8 and try again",
        )
