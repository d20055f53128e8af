"""Risk commands and the kill through a whole daemon: the real socket, the real journal, tradectl.

These run on the real clock (sockets and journal threads do not mix with
MockClock); every wait is short and bounded.
"""

import functools
import io
import json
import os
import pwd
from decimal import Decimal as D

import trio

from daemon import topics
from daemon.ctl import build
from daemon.logs import sink
from daemon.messages import Approval, Denial, KillReport, OrderIntent, RiskLimitChanged, TradingStateChanged
from daemon.model import OrderType, Side, TradingState
from risk_fakes import BTC, quote

USER = pwd.getpwuid(os.getuid()).pw_name


async def risk_events(d, kind):
    return [e.event for e in await d.services["journal"].risk_events() if isinstance(e.event, kind)]


async def wait_for(predicate, timeout=5.0):
    with trio.fail_after(timeout):
        while not await predicate():
            await trio.sleep(0.02)


async def test_risk_commands_over_the_socket_are_checked_journaled_and_shown(start_daemon, ctl):
    d = await start_daemon()
    reply = await ctl(d, "risk")
    assert reply["ok"] and reply["result"]["state"] == "ACTIVE" and reply["result"]["actor_running"]

    reply = await ctl(d, "risk-set", key="max_order_qty", value="2", reason="smaller size")
    assert reply["result"] == {"key": "max_order_qty", "previous": None, "value": "2", "by": USER}
    (change,) = await risk_events(d, RiskLimitChanged)
    assert (change.by, change.reason) == (USER, "smaller size")
    bad = await ctl(d, "risk-set", key="max_ordr_qty", value="2")
    assert not bad["ok"] and bad["error"]["code"] == "bad_limit" and "settable keys" in bad["error"]["message"]

    missing = await ctl(d, "halt")
    assert missing["error"]["code"] == "bad_args" and "reason" in missing["error"]["message"]
    assert (await ctl(d, "halt", reason="lunch"))["result"]["state"] == "HALTED"
    status = (await ctl(d, "status"))["result"]
    assert status["trading_state"] == "HALTED" and status["extra"]["risk"]["state"] == "HALTED"
    assert any("trading HALTED" in r for r in status["reasons"])
    assert (await ctl(d, "resume", reason="back"))["result"]["state"] == "ACTIVE"

    async def journaled():
        return len(await risk_events(d, TradingStateChanged)) == 2

    await wait_for(journaled)

    async def audited():
        commands = await d.services["journal"].commands()
        return {(c.command, c.user, c.ok) for c in commands} >= {
            ("risk-set", USER, True),
            ("risk-set", USER, False),
            ("halt", USER, True),
            ("resume", USER, True),
        }

    await wait_for(audited)
    d.request_stop("test")
    with trio.fail_after(30):
        await d.finished.wait()


async def test_an_order_goes_through_the_real_journal_before_the_gateway(start_daemon):
    d = await start_daemon()
    d.services["instruments"] = {("sim", "BTCUSDT"): BTC}
    journal = d.services["journal"]
    seen = []
    with d.bus.subscribe(topics.orders("sim")) as inbox:
        await d.bus.publish(topics.QUOTE, quote())
        await trio.sleep(0.05)
        order = OrderIntent(
            client_order_id="td-e1-0", exec_id="e1", seq=0, venue="sim", symbol="BTCUSDT", side=Side.BUY,
            order_type=OrderType.LIMIT, quantity=D("0.01"), price=D("100"),
        )  # fmt: skip
        answer = await d.bus.request(topics.RISK_SUBMIT, order, timeout=5)
        assert isinstance(answer, Approval)
        seen.append(await inbox.receive())
        assert await journal.intent("td-e1-0") == order  # on disk by the time the gateway has it
        denied = await d.bus.request(topics.RISK_SUBMIT, order, timeout=5)
        assert isinstance(denied, Denial) and denied.code == "DUPLICATE_ORDER_ID"
    assert seen == [order]

    async def denial_journaled():
        return [e.code for e in await risk_events(d, Denial)] == ["DUPLICATE_ORDER_ID"]

    await wait_for(denial_journaled)
    d.request_stop("test")
    with trio.fail_after(30):
        await d.finished.wait()


async def test_kill_over_the_socket_reports_journals_and_exit_stops_the_daemon(start_daemon, ctl):
    d = await start_daemon()
    reply = await ctl(d, "kill", reason="drill")
    report = reply["result"]
    assert report["type"] == "KillReport" and report["by"] == USER and report["reason"] == "drill"
    assert report["complete"] and report["venues"] == []
    assert (await ctl(d, "status"))["result"]["trading_state"] == "HALTED"
    (journaled,) = await risk_events(d, KillReport)
    assert journaled.reason == "drill"

    reply = await ctl(d, "kill", reason="moving the box", exit=True)
    assert reply["ok"] and reply["result"]["reason"] == "moving the box"
    with trio.fail_after(30):
        await d.finished.wait()
    assert d.exit_code == 0


async def test_tradectl_risk_halt_and_kill(start_daemon, capsys, monkeypatch):
    monkeypatch.setattr(sink, "stream", io.StringIO())  # the daemon's log lines, away from tradectl's output
    d = await start_daemon()
    sock = str(d.socket_path)

    async def tradectl(*argv):
        code = await trio.to_thread.run_sync(functools.partial(build().run, ["--socket", sock, *argv]))
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, _ = await tradectl("risk", "--json")
    assert code == 0 and json.loads(out)["state"] == "ACTIVE"
    code, out, _ = await tradectl("risk")
    assert code == 0 and "trading ACTIVE" in out and "max_open_orders" in out and "BREAKER" in out

    code, _, err = await tradectl("risk", "set", "max_order_qty", "3")  # stdin is not a terminal
    assert code == 1 and "refusing without --yes" in err
    code, out, _ = await tradectl("risk", "set", "max_order_qty", "3", "--yes", "-r", "test")
    assert code == 0 and out.strip() == "max_order_qty: none -> 3 (journaled)"
    code, _, err = await tradectl("risk", "set", "max_order_qty", "three", "--yes")
    assert code == 1 and "expects a decimal number" in err

    order = OrderIntent(
        client_order_id="td-c1-0", exec_id="c1", seq=0, venue="sim", symbol="BTCUSDT", side=Side.BUY,
        order_type=OrderType.LIMIT, quantity=D(1), price=D(100),
    )  # fmt: skip
    assert (await d.bus.request(topics.RISK_SUBMIT, order, timeout=5)).code == "GATEWAY_DOWN"
    code, out, _ = await tradectl("risk")
    assert "denials 1 (GATEWAY_DOWN 1)" in out and "td-c1-0" in out

    code, out, _ = await tradectl("halt", "-r", "checking something")
    assert code == 0 and out.startswith("trading HALTED")

    code, _, err = await tradectl("kill")
    assert code == 1 and "refusing without --yes" in err
    code, out, _ = await tradectl("kill", "--yes", "--reason", "drill")
    assert code == 0 and "kill COMPLETE" in out and "HALTED until `tradectl resume" in out
    code, out, _ = await tradectl("kill", "--yes", "--json")
    assert code == 0 and json.loads(out)["complete"] is True

    code, out, _ = await tradectl("resume", "-r", "all clear")
    assert code == 0 and out.startswith("trading ACTIVE")
    d.request_stop("test")
    with trio.fail_after(30):
        await d.finished.wait()


async def test_the_root_supervisor_giving_up_runs_the_kill_before_exit(start_daemon, monkeypatch):
    from daemon import components
    from daemon.supervisor import ChildSpec
    from risk_fakes import FakeGateway, FakeVenue, logged

    venue = FakeVenue("sim", 5)
    original = components.install

    def install(daemon):
        original(daemon)

        async def crasher(*, task_status):
            task_status.started()
            await trio.sleep(0.05)
            raise RuntimeError("core actor keeps failing")

        daemon.child_factories.append(lambda d: [ChildSpec("crasher", crasher, core=True)])
        daemon.services["gateways"] = {"sim": FakeGateway(venue)}

    monkeypatch.setattr(components, "install", install)
    toml = "[supervisor.intensity]\nmax_restarts = 1\nperiod = 60.0\n[supervisor.backoff]\ninitial = 0.01\njitter = 0.0\n"
    d = await start_daemon(toml)
    with trio.fail_after(30):
        await d.finished.wait()
    assert d.exit_code == 1
    assert venue.open == {}  # cancelled at the venue although every actor had stopped
    assert d.services["risk"].state is TradingState.HALTED
    assert logged("kill.done", 'reason="root supervisor gave up: RuntimeError: core actor keeps failing" by=daemon')
    assert logged("kill.not_journaled")  # the journal had stopped with the tree: the log line is the record
