"""`tablebot serve` as a child process, for the end-to-end tests and `tablebot demo --socket-mode`.

The child gets exactly the environment given (plus PATH-like basics of this one, without any
SLACK_* or TABLEBOT_* variable of the caller), writes its log to a file, and is stopped as an
operator would stop it: SIGTERM, then a wait for it to finish the work in flight.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO


class ServeProcess:
    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "TABLEBOT_"))}
        self.env = {**base, **env}
        self.log_path = log_path
        self._log: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServeProcess:
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "serve"],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    @property
    def process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError("the serve process is not started")
        return self._process

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait for it to finish its work in flight; its exit code (killed: -9)."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._close_log()
        return code

    def kill(self) -> None:
        if self.running:
            self.process.kill()
            self.process.wait()
        self._close_log()

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill()
