"""Staging in a local folder, for local runs (Socket Mode, the demo) and tests.

Writes are atomic: bytes go to a temp file under `<root>/.staging-tmp/`, are flushed to disk, and
the temp file is renamed over the key's path (same file system, so `os.replace` is atomic).
Nothing expires by itself here: call `purge_older_than` (the scheduled poller does, with the
retention from `bot.staging.layout`); it also removes temp files left behind by a crash.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from bot.errors import InvalidStagingKey, StagedKeyNotFound, StagingError, StagingUnavailable
from bot.staging.base import BlobInfo, PutResult, iter_chunks, validate_key, validate_prefix

TMP_DIR_NAME = ".staging-tmp"


class FolderStaging:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self._tmp = self.root / TMP_DIR_NAME
        self._tmp.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"FolderStaging({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        validate_key(key)
        if key.split("/", 1)[0] == TMP_DIR_NAME:
            raise InvalidStagingKey(f"staging key {key!r} uses the reserved folder {TMP_DIR_NAME}")
        path = self.root.joinpath(*key.split("/"))
        # Belt and braces against a symlink planted inside the folder.
        if not path.resolve().is_relative_to(self.root):
            raise InvalidStagingKey(f"staging key {key!r} resolves outside the staging folder")
        return path

    def put(self, key: str, data: Iterable[bytes] | BinaryIO) -> PutResult:
        target = self._path(key)
        hasher = hashlib.sha256()
        size = 0
        tmp = self._tmp / f"{uuid.uuid4().hex}.part"
        try:
            with self._disk(key):
                out = tmp.open("wb")
            with out:
                # Errors raised by the data stream itself (a size cap, a dropped download) pass
                # through untouched; only the disk's own failures become StagingUnavailable.
                for chunk in iter_chunks(data):
                    hasher.update(chunk)
                    size += len(chunk)
                    with self._disk(key):
                        out.write(chunk)
                with self._disk(key):
                    out.flush()
                    os.fsync(out.fileno())
            with self._disk(key):
                self._move_into_place(tmp, target, key)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return PutResult(key=key, size=size, sha256=hasher.hexdigest())

    @contextlib.contextmanager
    def _disk(self, key: str) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise StagingUnavailable(f"could not store {key!r} in the staging folder: {exc.strerror or exc}") from exc

    def _move_into_place(self, tmp: Path, target: Path, key: str) -> None:
        # A concurrent purge may remove the parent folder between mkdir and replace: try again.
        for attempt in range(3):
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, target)
                return
            except FileNotFoundError:
                if attempt == 2:
                    raise
            except (NotADirectoryError, FileExistsError, IsADirectoryError):
                raise StagingError(
                    f"staging key {key!r} clashes with another key (a file and a folder of the same name)"
                ) from None

    def open(self, key: str, start: int = 0) -> BinaryIO:
        path = self._path(key)
        try:
            stream = path.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise StagedKeyNotFound(key) from None
        if start:
            stream.seek(start)
        return stream

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            path.unlink()
            self._remove_empty_parents(path.parent)

    def _remove_empty_parents(self, folder: Path) -> None:
        while folder != self.root and folder.is_relative_to(self.root):
            try:
                folder.rmdir()
            except OSError:  # not empty (or already gone): stop climbing
                return
            folder = folder.parent

    def list_blobs(self, prefix: str = "") -> Iterator[BlobInfo]:
        validate_prefix(prefix)
        # Walk only the deepest folder the prefix names in full, then filter by the string prefix.
        folder_part = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self.root.joinpath(*folder_part.split("/")) if folder_part else self.root
        found: list[BlobInfo] = []
        for dirpath, dirnames, filenames in os.walk(base):
            if Path(dirpath) == self.root:
                dirnames[:] = [d for d in dirnames if d != TMP_DIR_NAME]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                key = name if rel == "." else f"{rel}/{name}"
                if not key.startswith(prefix):
                    continue
                try:
                    st = (Path(dirpath) / name).stat()
                except FileNotFoundError:  # deleted while we walked
                    continue
                found.append(BlobInfo(key=key, size=st.st_size, modified=datetime.fromtimestamp(st.st_mtime, UTC)))
        found.sort(key=lambda info: info.key.encode())  # S3's order: UTF-8 bytes
        return iter(found)

    def purge_older_than(self, max_age: timedelta, prefix: str = "", now: datetime | None = None) -> list[str]:
        cutoff = (now or datetime.now(UTC)) - max_age
        purged = []
        for info in self.list_blobs(prefix):
            if info.modified < cutoff:
                self.delete(info.key)
                purged.append(info.key)
        if not prefix:
            self._purge_stale_temp_files(cutoff)
        return purged

    def _purge_stale_temp_files(self, cutoff: datetime) -> None:
        for tmp in self._tmp.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if datetime.fromtimestamp(tmp.stat().st_mtime, UTC) < cutoff:
                    tmp.unlink()
