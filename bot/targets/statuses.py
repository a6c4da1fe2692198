"""Upstream job status words read as families, and a failed job's own text.

Neither vendor documents every word its job status may carry, nor their case (docs/upstream-apis.md: "expect
any case and synonyms"). A word is compared case-insensitively and without separators
(`PARTIALLY_COMPLETED`, `PartiallyCompleted` and `partially completed` are one word), and falls in
one of three families:

- done:    the job applied the table;
- failed:  it did not (or only in part: a partial completion is a failure, its errors shown);
- running: it has not ended yet.

A word in none of them is *unknown*: the job is treated as still running, the word is kept
verbatim (the job record and the CLI's JSON show it), logged, and after a few reads the user is
told that the bot does not know it (the callers do that: `bot.targets.runner`, the poller).

Each target may teach more words under `[targets.X]`: `done_statuses`, `failed_statuses`,
`running_statuses` (lists). A configured word wins over the built-in family it was in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

StatusFamily = Literal["done", "failed", "running"]

# The built-in families: the documented words of both vendors and the synonyms docs/upstream-apis.md lists.
BUILTIN_STATUS_WORDS: Mapping[StatusFamily, tuple[str, ...]] = {
    "done": ("done", "completed", "complete", "success", "succeeded", "successful", "finished"),
    "failed": (
        "failed",
        "failure",
        "error",
        "errored",
        "cancelled",
        "canceled",
        "aborted",
        "rejected",
        "partiallycompleted",
        "partiallysucceeded",
        "partialsuccess",
        "completedwitherrors",
    ),
    "running": (
        "pending",
        "started",
        "waiting",
        "running",
        "processing",
        "queued",
        "inprogress",
        "created",
        "accepted",
        "scheduled",
    ),
}
_OPTION_KEYS: Mapping[StatusFamily, str] = {
    "done": "done_statuses",
    "failed": "failed_statuses",
    "running": "running_statuses",
}
# Where a failed job may put its own text (docs/upstream-apis.md: error, message, reason, errorList, errors).
FAILURE_TEXT_KEYS = ("error", "message", "reason", "errorMessage", "errorList", "errors")
# How many consecutive reads of an unknown word before the user is told (`unknown_status_reads`).
DEFAULT_UNKNOWN_STATUS_READS = 3
# How long a status that cannot be read (404, 5xx, code != 0, an HTML page) is tolerated before
# the job is called failed (`status_grace_seconds`): an unknown of both APIs, a setting.
DEFAULT_STATUS_GRACE_SECONDS = 300.0


def word_key(word: str) -> str:
    """The comparable form of a status word: case-folded, letters and digits only."""
    return "".join(ch for ch in word.casefold() if ch.isalnum())


@dataclass(frozen=True)
class StatusWords:
    """Which family each known status word belongs to."""

    families: Mapping[str, StatusFamily]

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> StatusWords:
        """The built-in families plus the target's `done_statuses`/`failed_statuses`/`running_statuses`."""
        families: dict[str, StatusFamily] = {}
        for family, words in BUILTIN_STATUS_WORDS.items():
            for word in words:
                families[word_key(word)] = family
        for family, key in _OPTION_KEYS.items():
            configured = options.get(key)
            if configured is None:
                continue
            if isinstance(configured, str):
                configured = [configured]
            for word in configured:
                if str(word).strip():
                    families[word_key(str(word))] = family
        return cls(families)

    def family(self, raw: str) -> StatusFamily | None:
        """The word's family, or None when the bot does not know it."""
        return self.families.get(word_key(raw)) if raw.strip() else None


def failure_text(holder: Any, *, limit: int = 1000, items: int = 5) -> str | None:
    """A failed job's own text from `error`, `message`, `reason`, `errorList`, `errors`: the first
    `items` entries of each, one line, cut to `limit` characters; None when there is none."""
    if not isinstance(holder, Mapping):
        return None
    found: list[str] = []
    for key in FAILURE_TEXT_KEYS:
        value = holder.get(key)
        for entry in _entries(value, items):
            if entry and entry not in found:
                found.append(entry)
    if not found:
        return None
    text = "; ".join(found)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _entries(value: Any, items: int) -> Iterable[str]:
    if value is None or value in ("", [], {}):
        return []
    if isinstance(value, list):
        return [_one(v) for v in value[:items]]
    return [_one(value)]


def _one(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, Mapping):
        # The usual shapes of an error entry: a message, maybe with its row and column.
        message = value.get("message") or value.get("error") or value.get("reason")
        if isinstance(message, str):
            where = ", ".join(
                f"{k} {value[k]}" for k in ("row", "line", "rowNumber", "column", "field") if value.get(k) is not None
            )
            return f"{where}: {message}" if where else message
    return json.dumps(value, ensure_ascii=False)[:300]
