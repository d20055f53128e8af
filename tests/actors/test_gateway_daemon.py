"""The venues part inside a whole daemon: install, the venue supervisor, `venues`, and a kill."""

from __future__ import annotations

from decimal import Decimal as D

import msgspec
import pytest
import trio

from actors.venues import build_venue
from daemon import topics
from daemon.config import ConfigError, parse
from daemon.ctl_venues import render
from daemon.messages import Approval, OrderIntent
from daemon.model import OrderType, Side, client_order_id

SIM = """
[venues.sim]
type = "sim"
market_step = 0.1

[risk]
price_collar_bps = "2000"
"""


async def wait_until(condition, timeout=10.0):
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.02)


async def test_a_sim_venue_runs_under_the_venue_supervisor(start_daemon, ctl):
    d = await start_daemon(SIM)
    names = {r.name: r.state for r in d.registry.actors.values()}
    assert {"venues", "market[sim]", "gateway[sim]", "feed[sim]"} <= set(names)
    assert names["gateway[sim]"] == "running"
    gateway, feed = d.services["gateways"]["sim"], d.services["feeds"]["sim"]
    assert gateway.ready.is_set() and gateway.reconciles >= 1
    assert ("sim", "BTCUSDT") in d.services["instruments"]
    await wait_until(lambda: feed.state.value == "live")

    reply = await ctl(d, "venues")
    assert reply["ok"], reply
    (venue,) = reply["result"]["venues"]
    assert venue["venue"] == "sim" and venue["type"] == "sim"
    assert venue["feed"]["state"] == "live" and venue["feed"]["live_books"] == 2
    assert venue["gateway"]["order_entry"] == "up" and venue["gateway"]["stream"] == "connected"
    text = render(reply["result"])
    assert "sim" in text and "live" in text and "gateway.order_entry" in text

    missing = await ctl(d, "venues", venue="nope")
    assert not missing["ok"] and missing["error"]["code"] == "not_found"
    status = await ctl(d, "status")
    assert status["result"]["extra"]["venues"]["sim"]["order_entry"] == "up"


async def test_an_order_through_risk_then_a_kill_leaves_nothing_working(start_daemon, ctl):
    d = await start_daemon(SIM)
    feed = d.services["feeds"]["sim"]
    await wait_until(lambda: feed.last_quote("BTCUSDT") is not None)
    quote = feed.last_quote("BTCUSDT")
    intent = OrderIntent(
        client_order_id=client_order_id("kill1", 0), exec_id="kill1", seq=0, venue="sim", symbol="BTCUSDT",
        side=Side.BUY, order_type=OrderType.LIMIT, quantity=D("0.01"), price=quote.bid - D(50),
    )  # fmt: skip
    with d.bus.subscribe(topics.ORDER_UPDATE, name="test") as updates:
        reply = await d.bus.request(topics.RISK_SUBMIT, intent, timeout=5)
        assert isinstance(reply, Approval), reply
        with trio.fail_after(5):
            while (await updates.receive()).status.value != "NEW":
                pass
    world_engine = d.services["gateways"]["sim"].adapter.engine
    assert len(world_engine.open_orders("demo")) == 1
    killed = await ctl(d, "kill", reason="test")
    assert killed["ok"], killed
    (venue,) = killed["result"]["venues"]
    assert venue["verified"] and venue["cancelled"] == 1 and killed["result"]["complete"]
    assert world_engine.open_orders("demo") == []


def test_binance_without_symbols_or_credentials_is_a_config_error(monkeypatch):
    from daemon.app import Daemon
    from actors import venues

    monkeypatch.delenv("TRADINGD_BINANCE_API_KEY", raising=False)
    monkeypatch.delenv("TRADINGD_BINANCE_API_SECRET", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cfg = parse('[venues.binance]\ntype = "binance"\n[feed.symbols]\nbinance = ["BTCUSDT"]\n', "t.toml")
    with pytest.raises(ConfigError) as err:
        build_venue("binance", cfg.venues["binance"], source="t.toml")
    assert "venues.binance" in str(err.value) and "TRADINGD_BINANCE_API_KEY" in str(err.value)

    monkeypatch.setenv("TRADINGD_BINANCE_API_KEY", "k" * 64)
    monkeypatch.setenv("TRADINGD_BINANCE_API_SECRET", "s" * 64)
    cfg = parse('[venues.binance]\ntype = "binance"\n', "t.toml")
    with pytest.raises(ConfigError) as err:
        venues.install(Daemon(cfg))
    assert "feed.symbols.binance" in str(err.value)

    cfg = parse('[venues.sim]\ntype = "sim"\n[feed.symbols]\nbinance = ["BTCUSDT"]\n', "t.toml")
    with pytest.raises(ConfigError) as err:
        venues.install(Daemon(cfg))
    assert "feed.symbols.binance" in str(err.value)


class FlakyConfig(msgspec.Struct, frozen=True):
    type: str = "flaky"


def flaky_daemon(crashes: int, **supervisor):
    """A daemon with one venue whose adapter has a bug the first `crashes` times it is asked for instruments."""
    from actors import venues
    from daemon.app import Daemon
    from daemon.config import Config, SupervisorSection
    from daemon.supervisor import Backoff, Intensity
    from tests.actors.venue_fakes import FaultyVenue, InlineJournal, make_engine

    engine = make_engine()

    class Flaky(FaultyVenue):
        left = crashes

        async def instruments(self):
            if Flaky.left:
                Flaky.left -= 1
                raise RuntimeError("a bug in the adapter (test)")
            return await super().instruments()

    venues.register_venue_kind("flaky", lambda name, cfg: venues.VenueParts(adapter=Flaky(engine), default_symbols=("BTCUSDT",)))
    cfg = Config(
        venues={"flaky": FlakyConfig()},
        supervisor=SupervisorSection(
            backoff=Backoff(initial=1.0, multiplier=2.0, jitter=0.0),
            intensity=Intensity(**({"max_restarts": 5, "period": 60.0} | supervisor)),
        ),
    )
    d = Daemon(cfg)
    d.services["journal"] = InlineJournal()
    return d, venues.install(d)


async def test_the_venue_supervisor_restarts_a_crashed_gateway(autojump_clock, nursery):
    from actors import venues

    try:
        d, supervisor = flaky_daemon(crashes=2)
        await nursery.start(supervisor.run)
        await wait_until(lambda: d.registry.actors["gateway[flaky]"].state == "running", timeout=60)
        record = d.registry.actors["gateway[flaky]"]
        assert record.restarts == 2 and "a bug in the adapter" in record.last_error
        feed = d.services["feeds"]["flaky"]
        await wait_until(lambda: feed.state.value == "live", timeout=60)  # it waited for the instruments
        assert d.registry.actors["feed[flaky]"].restarts == 0
    finally:
        venues.VENUE_KINDS.pop("flaky", None)


async def test_past_its_restart_intensity_the_venue_supervisor_gives_up(autojump_clock):
    from actors import venues
    from daemon.supervisor import SupervisorGaveUp

    try:
        d, supervisor = flaky_daemon(crashes=100, max_restarts=2)
        with pytest.raises(SupervisorGaveUp) as gave_up:
            await supervisor.run()
        assert gave_up.value.supervisor == "venues" and "a bug in the adapter" in gave_up.value.last_error
    finally:
        venues.VENUE_KINDS.pop("flaky", None)


async def test_orders_command_lists_working_orders_through_the_socket(start_daemon, ctl):
    """`orders` shows what the gateways track."""
    from decimal import Decimal

    from daemon.model import TimeInForce

    d = await start_daemon('[venues.sim]\ntype = "sim"\nseed = 3\n')
    mid = d.services["feeds"]["sim"].last_quote("BTCUSDT").mid
    intent = OrderIntent(
        client_order_id=client_order_id("ordtest", 1), exec_id="ordtest", seq=1, venue="sim", symbol="BTCUSDT",
        side=Side.BUY, order_type=OrderType.LIMIT, time_in_force=TimeInForce.GTC, quantity=Decimal("0.001"),
        price=(mid * Decimal("0.98")).quantize(Decimal("0.01")),  # rests, inside the 5 % collar
    )
    assert isinstance(await d.bus.request(topics.RISK_SUBMIT, intent, timeout=10), Approval)
    with trio.fail_after(10):
        while True:
            reply = await ctl(d, "orders")
            rows = reply["result"]["orders"]
            if rows and rows[0]["status"] == "NEW":
                break
            await trio.sleep(0.05)
    assert rows[0]["client_order_id"] == intent.client_order_id and rows[0]["exec_id"] == "ordtest"
    assert (await ctl(d, "orders", venue="nope"))["error"]["code"] == "not_found"
    assert (await ctl(d, "orders", exec_id="other"))["result"]["orders"] == []
    d.request_stop("test")
