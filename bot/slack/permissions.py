"""Who may upload to, approve for and see which table: the rules, from `TableConfig.access`.

The tables file is validated when it is read (`bot.config`), so nothing here re-parses a key.
A person may upload when the place allows the table (a listed channel; a direct message when the
table says `allow_dms = true`) AND they are listed (directly, or through a user group) AND, for
a person of another organisation in a Slack Connect channel, the table says
`allow_external_users = true`. Nobody approves their own upload. Each refusal says why and who
can help; the text is rendered (mentions from configured ids only).

`bot.slack.guard.Guard` is the one place listeners ask: it binds these rules to the person of a
request (their id, their team, where they are).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bot.config import ANY, TableAccess, TableConfig, TablesFile
from bot.slack.render import code, mention, mentions

log = logging.getLogger(__name__)

# Members of a Slack user group (`S...`); raises LookupError when the group cannot be read.
GroupMembers = Callable[[str], frozenset[str]]


@dataclass(frozen=True)
class Place:
    """Where a request comes from: a channel, or a direct message with the bot."""

    channel: str
    is_dm: bool = False


@dataclass(frozen=True)
class Person:
    """Who asks: their user id, and whether they belong to another organisation (Slack Connect)."""

    user: str
    external: bool = False


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""  # why not, rendered for the person refused; names who can help

    def __bool__(self) -> bool:
        return self.allowed


ALLOWED = Decision(True)


class Permissions:
    def __init__(self, tables: TablesFile, group_members: GroupMembers) -> None:
        self.tables = tables
        self.group_members = group_members

    def access(self, alias: str) -> TableAccess:
        return self.tables.table(alias).access

    def _in_groups(self, user: str, groups: Iterable[str]) -> bool:
        for group in groups:
            if not group.startswith("S"):
                continue
            try:
                if user in self.group_members(group):
                    return True
            except LookupError as exc:
                log.warning("user group %s could not be read (%s); its members are not allowed for now", group, exc)
        return False

    def _is_uploader(self, user: str, access: TableAccess) -> bool:
        return ANY in access.users or user in access.users or self._in_groups(user, access.usergroups)

    def _is_approver(self, user: str, access: TableAccess) -> bool:
        return user in access.approvers or self._in_groups(user, access.approvers)

    @staticmethod
    def place_allows(access: TableAccess, place: Place) -> bool:
        if place.is_dm:
            return access.allow_dms
        return ANY in access.channels or place.channel in access.channels

    def tables_for_place(self, place: Place) -> list[TableConfig]:
        """Tables that may be uploaded from this place (by someone), in the file's order."""
        return [t for t in self.tables.tables.values() if self.place_allows(t.access, place)]

    def tables_for_person(self, person: Person, place: Place) -> list[TableConfig]:
        """Tables this person may upload from this place (the menu of a file with no table named)."""
        return [t for t in self.tables_for_place(place) if self.can_upload(t.alias, person, place)]

    def visible_tables(self, person: Person) -> set[str]:
        """Tables whose jobs this person may see: those they may upload to or approve (anywhere)."""
        found = set()
        for alias, table in self.tables.tables.items():
            access = table.access
            if person.external and not access.allow_external_users:
                continue
            if self._is_uploader(person.user, access) or self._is_approver(person.user, access):
                found.add(alias)
        return found

    def _external_refusal(self, alias: str, person: Person, access: TableAccess) -> Decision | None:
        if person.external and not access.allow_external_users:
            return Decision(
                False,
                f"Table {code(alias)} takes uploads and decisions only from people of this organisation, "
                f"not from a connected one (Slack Connect). Ask {mentions(access.helpers)}.",
            )
        return None

    def can_upload(self, alias: str, person: Person, place: Place) -> Decision:
        access = self.access(alias)
        external = self._external_refusal(alias, person, access)
        if external is not None:
            return external
        if not self.place_allows(access, place):
            if place.is_dm:
                where = ", ".join(mention(c) for c in access.channels if c != ANY) or "no channel yet"
                return Decision(
                    False, f"Table {code(alias)} is not uploaded through direct messages; share it in: {where}."
                )
            where = (
                ", ".join(mention(c) for c in access.channels if c != ANY) or "no channel yet (ask the bot's admins)"
            )
            return Decision(
                False, f"Table {code(alias)} cannot be uploaded from this channel; it can be from: {where}."
            )
        if not self._is_uploader(person.user, access):
            return Decision(
                False,
                f"You are not on the list of people who may upload {code(alias)}. "
                f"Ask {mentions(access.helpers)} to upload it or to add you.",
            )
        return ALLOWED

    def can_approve(self, alias: str, person: Person, requested_by: str) -> Decision:
        access = self.access(alias)
        external = self._external_refusal(alias, person, access)
        if external is not None:
            return external
        if person.user == requested_by:
            return Decision(False, f"You cannot approve your own upload; ask {mentions(access.approvers)}.")
        if not self._is_approver(person.user, access):
            return Decision(False, f"You are not an approver of {code(alias)}; ask {mentions(access.approvers)}.")
        return ALLOWED

    def can_confirm(self, alias: str, person: Person, requested_by: str) -> Decision:
        """Confirm a large removal: the requester (it is their file) or an approver."""
        access = self.access(alias)
        external = self._external_refusal(alias, person, access)
        if external is not None:
            return external
        if person.user == requested_by or self._is_approver(person.user, access):
            return ALLOWED
        return Decision(
            False,
            f"Only the person who shared the file or an approver of {code(alias)} ({mentions(access.approvers)}) "
            "may confirm its removals.",
        )

    def can_manage(self, alias: str, person: Person, requested_by: str, place: Place) -> Decision:
        """Cancel and Retry: the requester, an approver, or anyone who may upload the table here."""
        access = self.access(alias)
        external = self._external_refusal(alias, person, access)
        if external is not None:
            return external
        if person.user == requested_by or self._is_approver(person.user, access):
            return ALLOWED
        return self.can_upload(alias, person, place)

    def can_check(self, alias: str, person: Person) -> Decision:
        """`/table check`: the table's approvers (the people the tables file trusts with it)."""
        access = self.access(alias)
        external = self._external_refusal(alias, person, access)
        if external is not None:
            return external
        if self._is_approver(person.user, access):
            return ALLOWED
        if not access.approvers:
            return Decision(
                False,
                f"Only approvers of {code(alias)} may check it and it has none; an operator can run "
                f"`tablebot check --table {alias}` where the bot runs.",
            )
        return Decision(False, f"Only approvers of {code(alias)} may check it: {mentions(access.approvers)}.")


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
