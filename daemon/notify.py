"""systemd's readiness protocol (sd_notify), written in-house.

One datagram of newline-separated ``KEY=VALUE`` lines to ``$NOTIFY_SOCKET``:
a filesystem path, or ``@name`` for the Linux abstract namespace. Without
the variable (not under systemd) every call does nothing, so the daemon
runs the same in a terminal.

The watchdog is fed only while the core actors are healthy: a daemon whose
risk sentinel is dead must not look alive to systemd.
"""

from __future__ import annotations

import os
import socket
import time

from daemon.logs import get_logger

log = get_logger("notify")


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self.address: str | None = None
        if address:
            self.address = "\0" + address[1:] if address.startswith("@") else address
        self._sock: socket.socket | None = None
        self.last_status: str | None = None
        self.sent: list[str] = []  # kept short; for status and tests

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: str | int) -> bool:
        """Send e.g. ``notify(READY=1, STATUS="running")``. Never raises."""
        if self.address is None:
            return False
        payload = "\n".join(f"{k}={v}" for k, v in fields.items())
        try:
            if self._sock is None:
                # a local datagram socket does not block, so no trio wrapper is needed
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(payload.encode(), self.address)
        except OSError as exc:
            log.warning("notify.failed", error=str(exc), keys=",".join(fields))
            return False
        self.sent.append(payload)
        del self.sent[:-50]
        return True

    def ready(self, status: str) -> None:
        self.last_status = status
        self.notify(READY=1, STATUS=status)

    def status(self, status: str) -> None:
        if status != self.last_status:
            self.last_status = status
            self.notify(STATUS=status)

    def reloading(self) -> None:
        self.notify(RELOADING=1, MONOTONIC_USEC=int(time.monotonic() * 1_000_000))

    def stopping(self, status: str = "stopping") -> None:
        self.notify(STOPPING=1, STATUS=status)

    def watchdog(self) -> None:
        self.notify(WATCHDOG=1)

    def extend_timeout(self, seconds: float) -> None:
        self.notify(EXTEND_TIMEOUT_USEC=int(seconds * 1_000_000))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval() -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds, if the watchdog is meant for us."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2_000_000 if value > 0 else None
