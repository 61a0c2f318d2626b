"""The agent's exception tree (no IO).

    CarfriendError
     +-- ConfigError          a config, DBC or mapping problem found at start; carries every problem
     +-- DbcError             a DBC file that cannot be loaded at all
     +-- SourceError          a CAN bus or log file that cannot be opened or read
     +-- UplinkError          the MQTT link cannot be set up (bad TLS files, bad broker address)
     +-- OutboxError          the durable outbox cannot be opened or written
     +-- CommandError         a downlink command that is refused (carries the reason)

Per-frame problems (unknown id, short payload, out-of-range value) are never raised:
they are counted by the decoder, see ``agent.decode.DropCounts``.
"""

from __future__ import annotations


class CarfriendError(Exception):
    """Base class of every error the agent raises on purpose."""


class ConfigError(CarfriendError):
    """One or more problems in a config file, its DBCs or its mapping.

    ``problems`` holds one line per problem, each naming the file, the field and what is wrong.
    """

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class DbcError(CarfriendError):
    """A DBC file that cannot be read or parsed."""


class SourceError(CarfriendError):
    """A CAN interface or log file that cannot be opened or read."""


class UplinkError(CarfriendError):
    """The MQTT uplink cannot be configured (e.g. unreadable TLS files)."""


class OutboxError(CarfriendError):
    """The durable outbox cannot be opened or written."""


class CommandError(CarfriendError):
    """A downlink command refused by the agent; ``reason`` goes into the result message."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
