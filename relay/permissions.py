"""Who may see and do what on a vehicle: pure rules over a user's roles (no IO).

    owner     everything of the car; sends commands
    family    messages marked family or public; online/offline
    dealer    appointment requests of cars that chose that dealer (a dealer membership)
    operator  fleet status, state and alerts (warning/critical messages) of its vehicles
"""

from __future__ import annotations

from dataclasses import dataclass

VISIBLE_TO = {
    "owner": ("private", "family", "public"),
    "family": ("family", "public"),
}
ALERT_SEVERITIES = ("warning", "critical")


@dataclass(frozen=True, slots=True)
class Access:
    """What one user may do with one vehicle (roles is empty for a stranger)."""

    roles: frozenset[str]

    @property
    def any(self) -> bool:
        return bool(self.roles)

    @property
    def can_view_page(self) -> bool:
        return bool(self.roles & {"owner", "family", "operator"})

    @property
    def visibilities(self) -> tuple[str, ...]:
        """Message visibilities this user reads (all of them for alerts if operator)."""
        for role in ("owner", "family"):
            if role in self.roles:
                return VISIBLE_TO[role]
        return ()

    @property
    def alerts_only(self) -> bool:
        """An operator who is not also owner/family sees alerts, whatever their visibility."""
        return not self.visibilities and "operator" in self.roles

    @property
    def can_see_state(self) -> bool:
        return bool(self.roles & {"owner", "operator"})

    @property
    def can_command(self) -> bool:
        return "owner" in self.roles

    @property
    def can_see_appointments(self) -> bool:
        return bool(self.roles & {"owner", "dealer"})

    @property
    def can_see_commands(self) -> bool:
        return "owner" in self.roles
