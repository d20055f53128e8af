"""The real `tradingd run` in a subprocess: READY over a fake NOTIFY_SOCKET,
tradectl and a raw client on the control socket, SIGHUP, SIGTERM."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent


class Daemon:
    def __init__(self, tmp_path: Path, config_text: str, env_extra=None):
        self.tmp = tmp_path
        self.config = tmp_path / "tradingd.toml"
        self.config.write_text(config_text)
        self.socket = tmp_path / "run" / "control.sock"
        self.notify_path = str(tmp_path / "notify.sock")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.notify.settimeout(0.2)
        self.messages: list[str] = []
        env = dict(os.environ, NOTIFY_SOCKET=self.notify_path, RUNTIME_DIRECTORY=str(tmp_path / "run"),
                   STATE_DIRECTORY=str(tmp_path / "state"), **(env_extra or {}))
        env.pop("JOURNAL_STREAM", None)
        self.out = open(tmp_path / "stdout.log", "w+")
        self.proc = subprocess.Popen([str(BIN / "tradingd"), "run", "--config", str(self.config)],
                                     stdout=self.out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)

    def drain(self):
        while True:
            try:
                self.messages.append(self.notify.recv(65536).decode())
            except TimeoutError:
                return

    def wait_for(self, predicate, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.drain()
            if predicate():
                return True
            if self.proc.poll() is not None and not predicate():
                break
        return predicate()

    def saw(self, key):
        self.notify.settimeout(0.05)
        self.drain()
        self.notify.settimeout(0.2)
        return any(key in m.split("\n") or any(line.startswith(key) for line in m.split("\n")) for m in self.messages)

    def ctl(self, *args):
        return subprocess.run([str(BIN / "tradectl"), "--socket", str(self.socket), *args],
                              capture_output=True, text=True, timeout=30)

    def logs(self):
        self.out.flush()
        return (self.tmp / "stdout.log").read_text()

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.notify.close()
        self.out.close()


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path, "[daemon]\nheartbeat_interval = 0.5\n", env_extra={"WATCHDOG_USEC": "400000"})
    yield d
    d.close()


def raw_request(path, payload: bytes) -> dict:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(str(path))
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
    data = s.makefile("rb").readline()
    s.close()
    return json.loads(data)


def test_ready_status_reload_and_sigterm(daemon):
    assert daemon.wait_for(lambda: daemon.saw("READY=1")), daemon.logs()
    assert "event=daemon.ready" in daemon.logs()

    r = daemon.ctl("status")
    assert r.returncode == 0, r.stderr
    assert "control" in r.stdout and "running" in r.stdout and "HEALTHY" in r.stdout
    r = daemon.ctl("status", "--json")
    status = json.loads(r.stdout)
    assert status["health"] == "HEALTHY" and status["pid"] == daemon.proc.pid
    assert {a["name"] for a in status["actors"]} >= {"control", "monitor"}

    reply = raw_request(daemon.socket, b'{"id":1,"cmd":"status"}\n')
    assert reply["id"] == 1 and reply["ok"] and reply["result"]["trading_state"] == "ACTIVE"
    assert raw_request(daemon.socket, b"garbage\n")["error"]["code"] == "parse_error"

    # the watchdog is fed while the core actors are healthy
    assert daemon.wait_for(lambda: daemon.saw("WATCHDOG=1"))
    assert daemon.wait_for(lambda: "event=heartbeat" in daemon.logs())

    # log level over the socket
    r = daemon.ctl("log-level", "debug", "--actor", "monitor")
    assert r.returncode == 0 and "monitor" in r.stdout

    # an invalid file on SIGHUP is refused and the daemon keeps running
    daemon.config.write_text("[daemon]\nheartbeat_interval = -1\n")
    daemon.proc.send_signal(signal.SIGHUP)
    assert daemon.wait_for(lambda: "config.reload_refused" in daemon.logs())
    assert "daemon.heartbeat_interval: must be positive" in daemon.logs()
    assert daemon.proc.poll() is None
    assert daemon.saw("RELOADING=1")
    # a valid one is applied
    daemon.config.write_text("[daemon]\nheartbeat_interval = 0.5\n[log]\nlevel = \"debug\"\n")
    daemon.proc.send_signal(signal.SIGHUP)
    assert daemon.wait_for(lambda: "event=config.reloaded" in daemon.logs())

    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=20) == 0
    assert daemon.wait_for(lambda: daemon.saw("STOPPING=1"))
    assert not daemon.socket.exists()
    log = daemon.logs()
    assert "event=daemon.stopping reason=SIGTERM" in log and "event=daemon.exit code=0" in log


def test_shutdown_command_and_unreachable_exit_code(daemon):
    assert daemon.wait_for(lambda: daemon.saw("READY=1")), daemon.logs()
    r = daemon.ctl("shutdown", "--yes")
    assert r.returncode == 0, r.stderr
    assert daemon.proc.wait(timeout=20) == 0
    r = daemon.ctl("status")
    assert r.returncode == 3 and "is tradingd running" in r.stderr
    r = daemon.ctl("status", "--json")
    assert r.returncode == 3 and json.loads(r.stdout)["error"]["code"] == "unreachable"


def test_sigint_stops_gracefully(daemon):
    assert daemon.wait_for(lambda: daemon.saw("READY=1")), daemon.logs()
    daemon.proc.send_signal(signal.SIGINT)
    assert daemon.proc.wait(timeout=20) == 0
    assert "event=daemon.stopping reason=SIGINT" in daemon.logs()
