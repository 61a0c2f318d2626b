"""The relay tests' fixtures, from relay_testkit (tests import helpers from there, never from
`conftest`: with tests/vm collected too, the name `conftest` is ambiguous)."""

from notify_kit import add_channel, hook, notify_config, nrelay, push, smtp, subscribe  # noqa: F401,E402
from relay_testkit import *  # noqa: F401,F403
