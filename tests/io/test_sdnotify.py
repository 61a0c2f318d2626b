"""sd_notify against a real AF_UNIX datagram socket, as systemd listens on one."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.io.sdnotify import SystemdNotifier


class NotifySocket:
    """The service manager's end: a bound datagram socket that collects the fields sent."""

    def __init__(self, address: str | bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(2)

    def receive(self) -> list[str]:
        return self.sock.recv(4096).decode().split("\n")

    def nothing_pending(self) -> bool:
        self.sock.settimeout(0.05)
        try:
            self.sock.recv(4096)
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(2)
        return False


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[NotifySocket, str]]:
    path = str(tmp_path / "notify")
    listener = NotifySocket(path)
    yield listener, path
    listener.sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[NotifySocket, str]]:
    name = f"carfriend-test-{os.getpid()}-{time.monotonic_ns()}"
    listener = NotifySocket(b"\0" + name.encode())
    yield listener, "@" + name
    listener.sock.close()


def test_ready_with_status_arrives_as_one_datagram(path_socket: tuple[NotifySocket, str]) -> None:
    listener, path = path_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready("bus vcan0 open, outbox 0 queued")
    assert listener.receive() == ["READY=1", "STATUS=bus vcan0 open, outbox 0 queued"]


def test_abstract_namespace_socket_is_reached_through_the_at_sign(
        abstract_socket: tuple[NotifySocket, str]) -> None:
    listener, name = abstract_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": name})
    assert notifier.watchdog()
    assert listener.receive() == ["WATCHDOG=1"]


def test_status_stopping_and_watchdog_send_their_fields(path_socket: tuple[NotifySocket, str]) -> None:
    listener, path = path_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path})
    notifier.status("frames 10 decoded 9 dropped 1")
    assert listener.receive() == ["STATUS=frames 10 decoded 9 dropped 1"]
    notifier.stopping()
    assert listener.receive() == ["STOPPING=1"]
    notifier.stopping("flushing outbox")
    assert listener.receive() == ["STOPPING=1", "STATUS=flushing outbox"]


def test_a_newline_in_a_status_cannot_inject_another_field(path_socket: tuple[NotifySocket, str]) -> None:
    listener, path = path_socket
    SystemdNotifier({"NOTIFY_SOCKET": path}).status("bus down\nREADY=1")
    assert listener.receive() == ["STATUS=bus down READY=1"]


def test_reloading_carries_the_monotonic_time_of_the_request(path_socket: tuple[NotifySocket, str]) -> None:
    listener, path = path_socket
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    SystemdNotifier({"NOTIFY_SOCKET": path}).reloading()
    fields = listener.receive()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert fields[0] == "RELOADING=1"
    key, value = fields[1].split("=")
    assert key == "MONOTONIC_USEC" and before <= int(value) <= after


def test_extend_timeout_is_sent_in_microseconds(path_socket: tuple[NotifySocket, str]) -> None:
    listener, path = path_socket
    SystemdNotifier({"NOTIFY_SOCKET": path}).extend_timeout(1.5)
    assert listener.receive() == ["EXTEND_TIMEOUT_USEC=1500000"]


def test_without_notify_socket_every_call_is_a_quiet_no_op() -> None:
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    assert notifier.ready("x") is False
    assert notifier.watchdog() is False
    assert notifier.stopping() is False
    assert notifier.watchdog_interval_s() is None


def test_a_vanished_socket_is_not_an_error(tmp_path: Path) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.watchdog() is False


def test_closed_notifier_sends_nothing(path_socket: tuple[NotifySocket, str]) -> None:
    listener, path = path_socket
    notifier = SystemdNotifier({"NOTIFY_SOCKET": path})
    notifier.close()
    assert notifier.ready() is False
    assert listener.nothing_pending()


@pytest.mark.parametrize(("env", "expected"), [
    ({"WATCHDOG_USEC": "30000000"}, 30.0),
    ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # armed for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_watchdog_interval_comes_from_watchdog_usec_for_this_pid(
        env: dict[str, str], expected: float | None) -> None:
    assert SystemdNotifier(env).watchdog_interval_s() == expected
