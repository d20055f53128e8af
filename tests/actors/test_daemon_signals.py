"""Signal handling of the Daemon object: SIGINT twice escalates, SIGHUP reloads."""

import signal

import trio

from daemon.app import Daemon
from daemon.config import parse


async def _signals(*nums):
    for n in nums:
        yield n


async def test_second_sigint_runs_the_emergency_stop(tmp_path):
    d = Daemon(parse("", "t"), socket_path=tmp_path / "c.sock")
    reasons = []

    async def hook(reason):
        reasons.append(reason)
        return {"cancelled": 0}

    d.emergency_hooks.append(hook)
    await d._watch_signals(_signals(signal.SIGINT, signal.SIGINT))
    assert d._stop.is_set() and d._stop_reason == "SIGINT"
    assert reasons == ["second SIGINT"]


async def test_sighup_refuses_invalid_file_and_keeps_config(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text("[daemon]\nheartbeat_interval = 5\n")
    from daemon.config import load

    d = Daemon(load(path), config_path=path, socket_path=tmp_path / "c.sock")
    path.write_text("[daemon]\nheartbeat_interval = \"often\"\n")
    ok, message = await d.reload()
    assert not ok and "daemon.heartbeat_interval: expected a number" in message
    assert d.config.daemon.heartbeat_interval == 5
    path.write_text("[daemon]\nheartbeat_interval = 7\n")
    seen = []
    d.reload_hooks.append(lambda cfg: seen.append(cfg.daemon.heartbeat_interval))
    assert (await d.reload())[0]
    assert d.config.daemon.heartbeat_interval == 7 and seen == [7]


async def test_sigterm_requests_graceful_stop(tmp_path):
    d = Daemon(parse("", "t"), socket_path=tmp_path / "c.sock")
    await d._watch_signals(_signals(signal.SIGTERM))
    assert d._stop.is_set() and d._stop_reason == "SIGTERM" and not d._emergency_done
