"""sd_notify datagrams, including the abstract namespace, and the watchdog interval."""

import os
import socket

from daemon.notify import Notifier, watchdog_interval


def test_notify_to_path_and_abstract(tmp_path):
    path = str(tmp_path / "notify")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    n = Notifier(path)
    n.ready("ok")
    assert rx.recv(4096) == b"READY=1\nSTATUS=ok"
    n.status("ok")  # unchanged: not re-sent
    n.status("DEGRADED: feed")
    assert rx.recv(4096) == b"STATUS=DEGRADED: feed"

    name = f"tradingd-test-{os.getpid()}"
    arx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    arx.bind("\0" + name)
    Notifier("@" + name).stopping()
    assert arx.recv(4096) == b"STOPPING=1\nSTATUS=stopping"


def test_without_socket_does_nothing(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled and n.notify(READY=1) is False


def test_unreachable_socket_is_logged_not_raised(tmp_path):
    assert Notifier(str(tmp_path / "absent")).notify(READY=1) is False


def test_watchdog_interval(monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == 5.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert watchdog_interval() is None
