"""Shared test settings: hypothesis profiles sized for the 2-core CI machine."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    max_examples=int(os.environ.get("TRADINGD_HYPOTHESIS_EXAMPLES", "100")),
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("soak", deadline=None, max_examples=5000)
settings.load_profile(os.environ.get("TRADINGD_HYPOTHESIS_PROFILE", "ci"))


# ---------------------------------------------------------------------------------------
# A whole daemon in the test's trio run, and a control-socket client for it
# ---------------------------------------------------------------------------------------

import json  # noqa: E402

import pytest  # noqa: E402
import trio  # noqa: E402


@pytest.fixture
async def start_daemon(nursery, tmp_path, monkeypatch):
    """``d = await start_daemon(config_text)``: a Daemon built from TOML text,
    every part installed, running in the test's nursery, returned once READY.
    State and runtime directories live in the test's tmp_path."""
    from daemon import components
    from daemon.app import Daemon
    from daemon.config import parse

    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "run"))
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)

    async def start(config_text: str = "", *, install: bool = True, wait_ready: bool = True):
        cfg = parse(config_text, "test.toml")
        d = Daemon(cfg, socket_path=tmp_path / "run" / "control.sock")
        if install:
            components.install(d)
        d.finished = trio.Event()

        async def run():
            try:
                d.exit_code = await d.run()
            finally:
                d.finished.set()

        nursery.start_soon(run)
        if wait_ready:
            with trio.fail_after(60):
                await d.ready.wait()
        return d

    return start


async def control(d, cmd: str, **args):
    """One request over the daemon's real socket; returns the decoded reply."""
    stream = await trio.open_unix_socket(str(d.socket_path))
    async with stream:
        await stream.send_all(json.dumps({"id": 1, "cmd": cmd, "args": args}).encode() + b"\n")
        buf = b""
        while b"\n" not in buf:
            chunk = await stream.receive_some(1 << 16)
            if not chunk:
                raise EOFError("daemon closed the connection")
            buf += chunk
    return json.loads(buf.split(b"\n", 1)[0])


@pytest.fixture
def ctl():
    """``reply = await ctl(d, "status")`` through the real control socket."""
    return control


def pytest_addoption(parser):
    parser.addoption("--run-soak", action="store_true", default=False, help="run the long soak/stress tests (make soak)")


def pytest_configure(config):
    config.addinivalue_line("markers", "soak: long soak/stress runs, only with --run-soak (make soak)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-soak"):
        return
    skip = pytest.mark.skip(reason="soak test: run with `make soak`")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)
