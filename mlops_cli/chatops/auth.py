"""Who may do what, from where: Slack user IDs and user groups to roles, allowed team and channels.

Roles: `viewer` (status, models, help), `deployer` (deploy, rollback; also a viewer), `approver`
(Approve/Reject in a release thread; also a viewer). A user's roles are those given to the user ID
plus those of every configured user group the user is a member of. Group members are read with
Slack's `usergroups.users.list` in the background (`refresh`), never while a request waits, so a
request is decided from memory within the 3 seconds Slack allows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

log = logging.getLogger("mlops.chatops")

IMPLIED = {"deployer": {"viewer"}, "approver": {"viewer"}, "viewer": set()}


@dataclass(frozen=True)
class Refusal:
    reason: str  # short, for the audit line and the metrics label
    message: str  # the one line the user sees


class Authoriser:
    def __init__(
        self,
        users: Mapping[str, Iterable[str]],
        groups: Mapping[str, Iterable[str]],
        team_id: str | None,
        channels: Iterable[str],
        four_eyes: bool,
    ):
        self.users = {u: set(r) for u, r in users.items()}
        self.groups = {g: set(r) for g, r in groups.items()}
        self.team_id = team_id
        self.channels = set(channels)
        self.four_eyes = four_eyes
        self.members: dict[str, set[str]] = {}  # group -> user IDs, as last read

    def roles(self, user: str) -> set[str]:
        roles = set(self.users.get(user, ()))
        for group, members in self.members.items():
            if user in members:
                roles |= self.groups.get(group, set())
        return roles | {implied for role in roles for implied in IMPLIED.get(role, ())}

    def where(self, team: str | None, channel: str | None) -> Refusal | None:
        """A refusal unless the request comes from the allowed team and channel."""
        if self.team_id and team != self.team_id:
            return Refusal("other-team", "this mlops app does not take commands from this workspace")
        if self.channels and channel not in self.channels:
            return Refusal("other-channel", "mlops commands are not accepted in this channel")
        return None

    def allow(self, user: str, role: str, what: str) -> Refusal | None:
        if role in self.roles(user):
            return None
        return Refusal("unauthorised", f"you need the {role} role to {what}; ask an mlops admin")

    def may_approve(self, user: str, requested_by: str) -> Refusal | None:
        refusal = self.allow(user, "approver", "approve or reject a release")
        if refusal is not None:
            return refusal
        if self.four_eyes and requested_by == f"slack:{user}":
            return Refusal("own-release", "four eyes: you requested this release, another approver must decide")
        return None

    def refresh(self, list_members: Callable[[str], list[str]]) -> None:
        """Read every configured group's members; a group that cannot be read keeps its last members. Runs in a
        thread while requests read `members` on the loop: the new members replace the old in one assignment,
        never a dict changing size under a reader."""
        members = dict(self.members)
        for group in self.groups:
            try:
                members[group] = set(list_members(group))
            except Exception as exc:  # Slack down, a missing scope: say so, keep what we knew
                log.warning(
                    "cannot read the members of user group %s (%s): its roles use the last known members (%d)",
                    group,
                    type(exc).__name__,
                    len(members.get(group, ())),
                )
        self.members = members
