"""Every tradectl command, through the real control socket of a running daemon.

A new command must be added to INVOCATIONS: the first test fails until it is.
"""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import trio

from daemon.ctl import build, main

CONFIG = '[daemon]\nheartbeat_interval = 30\n[venues.sim]\ntype = "sim"\nseed = 5\n'

# command -> argument lists (after the command name); run in this order, each must exit 0
INVOCATIONS: dict[str, list[list[str]]] = {
    "ping": [[]],
    "status": [[]],
    "log-level": [[], ["debug", "--actor", "feed"]],
    "logs": [["-n", "5"], ["--level", "warning", "--actor", "gateway"]],
    "config": [["show"]],
    "venues": [[], ["sim"]],
    "risk": [[], ["set", "max_order_notional", "60000", "-r", "test"]],
    "exec": [
        ["twap", "BTCUSDT", "buy", "0.002", "--duration", "20s", "--limit", "100000"],
        ["list"],
    ],
    "orders": [[], ["--all"]],
    "positions": [[], ["--all"]],
    "pnl": [[]],
    "fills": [[], ["--csv"]],
    "report": [["--since", "1h"]],
    "balances": [[]],
    "halt": [["-r", "test halt"]],
    "reduce": [["-r", "test reduce"]],
    "kill": [["--reason", "test kill"]],
    "ack-balances": [["-r", "test: nothing to acknowledge"]],
    "resume": [["-r", "test over"]],
    "watch": [],  # streams until interrupted: covered below
    "shutdown": [],  # ends the daemon: last, below
}
ALLOWED_REFUSALS = {"ack-balances"}  # may answer "nothing to acknowledge" (exit 1) on a clean ledger


def test_every_command_has_an_invocation():
    registered = set(build().sub.choices)
    assert registered == set(INVOCATIONS), f"add these to INVOCATIONS: {sorted(registered - set(INVOCATIONS))}"


def run_ctl(socket_path, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(["--socket", str(socket_path), "--yes", *argv])
    return code, out.getvalue()


@pytest.mark.slow
async def test_every_command_through_the_socket(start_daemon, monkeypatch):
    from daemon import logs

    monkeypatch.setattr(logs.sink, "stream", io.StringIO())  # the daemon's own lines stay out of tradectl's output
    d = await start_daemon(CONFIG)
    with trio.fail_after(20):
        while getattr(d.services["executions"].stats.get(("sim", "BTCUSDT")), "quote", None) is None:
            await trio.sleep(0.05)
    for command, invocations in INVOCATIONS.items():
        for args in invocations:
            for json_flag in ([], ["--json"]):
                code, text = await trio.to_thread.run_sync(run_ctl, d.socket_path, command, *args, *json_flag)
                if command in ALLOWED_REFUSALS and code == 1:
                    continue
                assert code == 0, f"tradectl {command} {' '.join(args + json_flag)} -> {code}: {text}"
                if json_flag and command not in ("logs",) and "--csv" not in args:
                    try:
                        json.loads(text)
                    except ValueError:
                        pytest.fail(f"tradectl {command} {' '.join(args)} --json printed no JSON: {text!r}")
                if command == "exec" and args and args[0] == "twap":
                    break  # submitting twice would start two executions
    # watch streams until the daemon goes away: it ends with exit 0 when the daemon stops
    watched: list[tuple[int, str]] = []

    def watch() -> None:
        watched.append(run_ctl(d.socket_path, "watch", "--json"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, watch)
        await trio.sleep(1.0)
        code, text = await trio.to_thread.run_sync(run_ctl, d.socket_path, "shutdown")
        assert code == 0, text
    (watch_code, watch_text), = watched
    assert watch_code in (0, 3), watch_text  # the stream ended when the daemon left
    with trio.fail_after(30):
        await d.finished.wait()
    assert d.exit_code == 0
