"""Who may upload to, approve for and see which table: read from `[tables.X]` of the tables file.

Keys (all optional; the default is to deny):

    [tables.hosts]
    channels  = ["C0OPS0001"]   # channels where the table may be uploaded (or "*": any channel)
    users     = ["U0ALICE01"]   # people who may upload (or "*": anyone in an allowed channel)
    usergroups = ["S0ONCALL1"]  # user groups whose members may upload (usergroups.users.list)
    approval  = true            # an upload waits for an approver's Approve button
    approvers = ["U0BOB0001", "S0LEADS01"]  # people or user groups who may approve
    max_removed_share = 0.2     # BigPanda: more removed rows than this share waits for a Confirm

A person may upload when the channel is listed AND they are listed (directly, or through a
group). Nobody approves their own upload. Each refusal says why and who can help.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bot.config import TableConfig, TablesFile
from bot.errors import ConfigError

log = logging.getLogger(__name__)

ANY = "*"
DEFAULT_MAX_REMOVED_SHARE = 0.2

# Members of a Slack user group (`S...`); raises LookupError when the group cannot be read.
GroupMembers = Callable[[str], frozenset[str]]


@dataclass(frozen=True)
class TablePolicy:
    channels: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    usergroups: tuple[str, ...] = ()
    approval: bool = False
    approvers: tuple[str, ...] = ()  # user ids (U...) and user group ids (S...)
    max_removed_share: float = DEFAULT_MAX_REMOVED_SHARE

    @property
    def helpers(self) -> tuple[str, ...]:
        """Who to ask about this table: its approvers, else the people allowed to upload."""
        return self.approvers or tuple(u for u in (*self.users, *self.usergroups) if u != ANY)


def _ids(table: str, extra: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = extra.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f'[tables.{table}] {key} must be a list of Slack ids, e.g. {key} = ["C0123ABCD"]')
    return tuple(value)


def policy_for(table: TableConfig) -> TablePolicy:
    """The table's permissions; ConfigError naming the key when one is malformed."""
    extra = table.extra
    approval = extra.get("approval", False)
    if not isinstance(approval, bool):
        raise ConfigError(f"[tables.{table.alias}] approval must be true or false")
    share = extra.get("max_removed_share", DEFAULT_MAX_REMOVED_SHARE)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share <= 1:
        raise ConfigError(f"[tables.{table.alias}] max_removed_share must be a number from 0 to 1 (0.2 is 20%)")
    return TablePolicy(
        channels=_ids(table.alias, extra, "channels"),
        users=_ids(table.alias, extra, "users"),
        usergroups=_ids(table.alias, extra, "usergroups"),
        approval=approval,
        approvers=_ids(table.alias, extra, "approvers"),
        max_removed_share=float(share),
    )


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""  # why not, for the person refused; names who can help

    def __bool__(self) -> bool:
        return self.allowed


ALLOWED = Decision(True)


def mention(slack_id: str) -> str:
    if slack_id.startswith("S"):
        return f"<!subteam^{slack_id}>"
    if slack_id.startswith(("C", "G")):
        return f"<#{slack_id}>"
    return f"<@{slack_id}>"


def mentions(ids: Iterable[str]) -> str:
    found = [mention(i) for i in ids if i != ANY]
    return ", ".join(found) if found else "the bot's admins (the tables file)"


class Permissions:
    def __init__(self, tables: TablesFile, group_members: GroupMembers) -> None:
        self.tables = tables
        self.group_members = group_members

    def policy(self, alias: str) -> TablePolicy:
        return policy_for(self.tables.table(alias))

    def _in_groups(self, user: str, groups: Iterable[str]) -> bool:
        for group in groups:
            try:
                if user in self.group_members(group):
                    return True
            except LookupError as exc:
                log.warning("user group %s could not be read (%s); its members are not allowed for now", group, exc)
        return False

    def _is_listed(self, user: str, users: Iterable[str], groups: Iterable[str]) -> bool:
        users = tuple(users)
        return ANY in users or user in users or self._in_groups(user, [g for g in groups if g.startswith("S")])

    def channel_allows(self, alias: str, channel: str) -> bool:
        channels = self.policy(alias).channels
        return ANY in channels or channel in channels

    def tables_for_channel(self, channel: str) -> list[TableConfig]:
        """Tables that may be uploaded from `channel` (by someone), in the file's order."""
        found = []
        for alias, table in self.tables.tables.items():
            try:
                if self.channel_allows(alias, channel):
                    found.append(table)
            except ConfigError as exc:
                log.warning("table %s left out: %s", alias, exc)
        return found

    def can_upload(self, alias: str, user: str, channel: str) -> Decision:
        try:
            policy = self.policy(alias)
        except ConfigError as exc:
            return Decision(False, f"The bot's configuration of `{alias}` is broken ({exc}); tell the bot's admins.")
        if not (ANY in policy.channels or channel in policy.channels):
            where = (
                ", ".join(mention(c) for c in policy.channels if c != ANY) or "no channel yet (ask the bot's admins)"
            )
            return Decision(False, f"Table `{alias}` cannot be uploaded from this channel; it can be from: {where}.")
        if not self._is_listed(user, policy.users, policy.usergroups):
            return Decision(
                False,
                f"You are not on the list of people who may upload `{alias}`. "
                f"Ask {mentions(policy.helpers)} to upload it or to add you.",
            )
        return ALLOWED

    def can_approve(self, alias: str, user: str, requested_by: str) -> Decision:
        policy = self.policy(alias)
        if user == requested_by:
            others = mentions(policy.approvers)
            return Decision(False, f"You cannot approve your own upload; ask {others}.")
        users = [a for a in policy.approvers if not a.startswith("S")]
        if not self._is_listed(user, users, policy.approvers):
            return Decision(False, f"You are not an approver of `{alias}`; ask {mentions(policy.approvers)}.")
        return ALLOWED

    def can_manage(self, alias: str, user: str, requested_by: str, channel: str) -> Decision:
        """Cancel, Confirm and Retry: the requester, an approver, or anyone who may upload here."""
        if user == requested_by:
            return ALLOWED
        policy = self.policy(alias)
        if self._is_listed(user, [a for a in policy.approvers if not a.startswith("S")], policy.approvers):
            return ALLOWED
        return self.can_upload(alias, user, channel)


class GroupCache:
    """`usergroups.users.list` answers kept for `ttl_seconds` (a group changes rarely; a request
    must not wait on Slack for every check)."""

    def __init__(
        self,
        fetch: Callable[[str], Iterable[str]],
        ttl_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}

    def __call__(self, group: str) -> frozenset[str]:
        now = self._clock()
        with self._lock:
            hit = self._cache.get(group)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        members = frozenset(self._fetch(group))
        with self._lock:
            self._cache[group] = (now, members)
        return members
