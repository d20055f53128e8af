"""The synthetic market, driven step by step without trio."""

from __future__ import annotations

import math
import statistics
from decimal import Decimal as D

import msgspec
import pytest

from daemon.model import OrderStatus, OrderType, Side, TimeInForce
from venues.base import OrderRequest, PublicTrade
from venues.sim.config import BTCUSDT, SimConfig, VolatilityConfig
from venues.sim.market import volume_curve
from venues.sim.world import SimWorld, build_world


def run(world: SimWorld, seconds: int) -> None:
    for _ in range(seconds):
        world.market.advance(1.0)


def fingerprint(world: SimWorld) -> tuple:
    engine = world.engine
    return tuple(
        (symbol, engine.last_trade_id(symbol), engine.last_update_id(symbol), engine.snapshot(symbol, depth=None))
        for symbol in engine.symbols
    )


def test_populate_lays_out_both_sides_around_the_start_price():
    world = build_world()
    world.market.populate()
    world.market.populate()  # idempotent
    snap = world.engine.snapshot("BTCUSDT", depth=None)
    assert len(snap.bids) == BTCUSDT.levels + BTCUSDT.outer_levels
    assert len(snap.asks) == BTCUSDT.levels + BTCUSDT.outer_levels
    best_bid, best_ask = snap.bids[0][0], snap.asks[0][0]
    assert best_ask - best_bid == BTCUSDT.level_spacing
    assert best_bid <= BTCUSDT.price < best_ask
    # Deeper levels carry more size, and prices sit on the instrument's tick.
    assert sum(q for _, q in snap.bids[-5:]) > sum(q for _, q in snap.bids[:5])
    assert all(p % BTCUSDT.tick_size == 0 and q % BTCUSDT.step_size == 0 for p, q in snap.bids + snap.asks)
    assert world.engine.audit() == []


def test_twenty_minutes_of_market_trade_move_and_stay_consistent():
    world = build_world(SimConfig(seed=11))
    world.market.populate()
    trades: list[PublicTrade] = []
    world.engine.subscribe_market(lambda e: trades.append(e) if isinstance(e, PublicTrade) else None)
    run(world, 1200)
    btc = [t for t in trades if t.symbol == "BTCUSDT"]
    eth = [t for t in trades if t.symbol == "ETHUSDT"]
    # About 1 BTC trade per second on average over the session, more at its open.
    assert 1000 < len(btc) < 4000 and 700 < len(eth) < 3500
    assert {t.taker_side for t in btc} == {Side.BUY, Side.SELL}
    for symbol in ("BTCUSDT", "ETHUSDT"):
        bid, ask = world.engine.best_bid(symbol), world.engine.best_ask(symbol)
        assert bid is not None and ask is not None and bid[0] < ask[0]
        fair = world.market.fair_price(symbol)
        assert bid[0] - 50 * BTCUSDT.level_spacing < fair < ask[0] + 50 * BTCUSDT.level_spacing
    assert world.engine.audit() == []


def test_same_seed_same_market_other_seed_other_market():
    a, b, c = build_world(SimConfig(seed=5)), build_world(SimConfig(seed=5)), build_world(SimConfig(seed=6))
    for world in (a, b, c):
        world.market.populate()
        run(world, 300)
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint(c)


def test_same_seed_and_same_orders_give_the_same_fills():
    def scenario(seed: int) -> list:
        world = build_world(SimConfig(seed=seed))
        world.market.populate()
        run(world, 30)
        mid = world.engine.mid("BTCUSDT")
        assert mid is not None
        world.engine.place_order(
            "demo",
            OrderRequest(
                symbol="BTCUSDT",
                client_order_id="rest",
                side=Side.BUY,
                order_type=OrderType.LIMIT,
                quantity=D("0.3"),
                price=BTCUSDT.tick_size * int(mid / BTCUSDT.tick_size),
                time_in_force=TimeInForce.GTC,
            ),
        )
        run(world, 120)
        world.engine.place_order(
            "demo",
            OrderRequest(
                symbol="BTCUSDT", client_order_id="take", side=Side.SELL, order_type=OrderType.MARKET, quantity=D("0.5")
            ),
        )
        run(world, 60)
        return [(t.trade_id, t.price, t.qty, t.side, t.is_maker) for t in world.engine.my_trades("demo", "BTCUSDT")]

    first = scenario(9)
    assert first  # the passive order got filled and the market order traded
    assert scenario(9) == first


def test_volume_curve_is_u_shaped_with_mean_one():
    xs = [(i + 0.5) / 1000 for i in range(1000)]
    assert statistics.fmean(volume_curve(x, 0.35) for x in xs) == pytest.approx(1.0, abs=1e-6)
    assert volume_curve(0.0) > volume_curve(0.25) > volume_curve(0.5) < volume_curve(0.75) < volume_curve(1.0)
    assert volume_curve(0.5, 0.35) / volume_curve(0.0, 0.35) == pytest.approx(0.35)
    assert volume_curve(0.3, 1.0) == pytest.approx(1.0)  # floor 1: flat


def test_trade_rate_follows_the_intraday_curve():
    # A half-hour "session": busy first and last five minutes, quiet middle
    # (about 2.3 times quieter on average).
    world = build_world(SimConfig(seed=2, session_seconds=1800))
    world.market.populate()
    times: list[float] = []
    world.engine.subscribe_market(
        lambda e: times.append(world.market.time) if isinstance(e, PublicTrade) and e.symbol == "BTCUSDT" else None
    )
    run(world, 1800)
    first = sum(1 for t in times if t <= 300)
    middle = sum(1 for t in times if 750 < t <= 1050)
    last = sum(1 for t in times if t > 1500)
    assert first > 1.6 * middle and last > 1.6 * middle
    assert world.market.volume_multiplier(0) > world.market.volume_multiplier(900)


def test_force_spike_moves_the_book_and_fills_resting_orders_it_runs_through():
    world = build_world(SimConfig(seed=4))
    world.market.populate()
    run(world, 10)
    ask_price = world.market.fair_price("BTCUSDT") * D("1.02")
    ask_price = BTCUSDT.tick_size * int(ask_price / BTCUSDT.tick_size)
    world.engine.place_order(
        "demo",
        OrderRequest(
            symbol="BTCUSDT",
            client_order_id="far-ask",
            side=Side.SELL,
            order_type=OrderType.LIMIT,
            quantity=D("0.1"),
            price=ask_price,
            time_in_force=TimeInForce.GTC,
        ),
    )
    before = world.market.fair_price("BTCUSDT")
    world.market.force_spike("BTCUSDT", 0.05)
    run(world, 1)
    after = world.market.fair_price("BTCUSDT")
    assert after / before == pytest.approx(D("1.05"), abs=D("0.005"))
    best_bid = world.engine.best_bid("BTCUSDT")
    assert best_bid is not None and best_bid[0] > ask_price
    state = world.engine.query_order("demo", "BTCUSDT", client_order_id="far-ask")
    assert state.status is OrderStatus.FILLED
    assert state.quote_filled == ask_price * D("0.1")  # at its own limit, the resting price
    assert world.engine.audit() == []
    with pytest.raises(ValueError):
        world.market.force_spike("BTCUSDT", -1.0)


def _log_returns(world: SimWorld, symbol: str, seconds: int) -> list[float]:
    prices = []
    for _ in range(seconds):
        world.market.advance(1.0)
        prices.append(float(world.market.fair_price(symbol)))
    return [math.log(b / a) for a, b in zip(prices, prices[1:], strict=False)]


def test_stress_multiplies_volatility_for_a_while():
    world = build_world(SimConfig(seed=8))
    world.market.populate()
    calm = statistics.pstdev(_log_returns(world, "ETHUSDT", 300))
    world.market.stress(6.0, 300, symbol="ETHUSDT")
    stressed = statistics.pstdev(_log_returns(world, "ETHUSDT", 300))
    after = statistics.pstdev(_log_returns(world, "ETHUSDT", 300))
    assert stressed > 3 * calm
    assert after < 2 * calm
    assert world.engine.audit() == []


def test_storms_come_and_go_when_configured():
    config = SimConfig(seed=3, volatility=VolatilityConfig(storms_per_day=2000, storm_minutes=1))
    world = build_world(config)
    world.market.populate()
    seen = set()
    for _ in range(600):
        world.market.advance(1.0)
        seen.add(world.market.in_storm("BTCUSDT"))
    assert seen == {True, False}


def test_jumps_make_fat_tails_when_configured():
    calm = build_world(SimConfig(seed=10))
    jumpy = build_world(SimConfig(seed=10, volatility=VolatilityConfig(jumps_per_day=8640, jump_size=0.02)))
    worst = []
    for world in (calm, jumpy):
        world.market.populate()
        worst.append(max(abs(r) for r in _log_returns(world, "BTCUSDT", 300)))
    assert worst[1] > 5 * worst[0]  # about 30 jumps of 2% against 1-second moves of 0.01%


def test_a_halted_symbol_stops_trading_and_resumes():
    world = build_world(SimConfig(seed=13))
    world.market.populate()
    run(world, 10)
    world.engine.set_trading("BTCUSDT", False)
    trades, book = world.engine.last_trade_id("BTCUSDT"), world.engine.snapshot("BTCUSDT")
    eth_trades = world.engine.last_trade_id("ETHUSDT")
    run(world, 60)
    assert world.engine.last_trade_id("BTCUSDT") == trades
    assert world.engine.snapshot("BTCUSDT") == book
    assert world.engine.last_trade_id("ETHUSDT") > eth_trades
    world.engine.set_trading("BTCUSDT", True)
    run(world, 30)
    assert world.engine.last_trade_id("BTCUSDT") > trades
    assert world.engine.audit() == []


def test_a_large_order_leaves_a_hole_that_heals():
    world = build_world(SimConfig(seed=12))
    world.market.populate()
    run(world, 10)

    def depth(side: str) -> D:
        snap = world.engine.snapshot("BTCUSDT", depth=None)
        fair = world.market.fair_price("BTCUSDT")
        levels = snap.asks if side == "ask" else snap.bids
        return sum((q for p, q in levels if abs(p - fair) <= 30 * BTCUSDT.level_spacing), D(0))

    full = depth("ask")
    world.engine.place_order(
        "demo",
        OrderRequest(
            symbol="BTCUSDT", client_order_id="sweep", side=Side.BUY, order_type=OrderType.MARKET, quantity=D("1.5")
        ),
    )
    assert depth("ask") < full - D("1")
    run(world, 60)
    assert depth("ask") > full * D("0.7")


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"seed": 1, "sead": 2}, SimConfig)
    with pytest.raises(msgspec.ValidationError, match="outer_spacing"):
        msgspec.convert(
            {
                "instruments": [
                    msgspec.to_builtins(BTCUSDT) | {"outer_spacing": "7.5"},
                ]
            },
            SimConfig,
        )
    with pytest.raises(msgspec.ValidationError, match="market_account"):
        msgspec.convert({"accounts": [{"name": "market"}]}, SimConfig)
    raw = {"type": "sim", "seed": 4, "latency": 0.02, "accounts": [{"name": "x", "balances": {"USDT": "5"}}]}
    config = msgspec.convert(raw, SimConfig)
    assert config.seed == 4 and config.accounts[0].balances == {"USDT": D("5")}


def test_the_daemon_config_loader_knows_the_sim_venue():
    from daemon import config as daemon_config

    loaded = daemon_config.parse(
        b"""
[venues.paper]
type = "sim"
seed = 42
latency = 0.005

[[venues.paper.accounts]]
name = "demo"
balances = { USDT = "250000", BTC = "1" }
"""
    )
    venue = loaded.venues["paper"]
    assert isinstance(venue, SimConfig) and venue.seed == 42
    assert venue.accounts[0].balances["USDT"] == D("250000")
    with pytest.raises(daemon_config.ConfigError, match=r"venues\.paper\.volatility\.sclae"):
        daemon_config.parse(b'[venues.paper]\ntype = "sim"\n[venues.paper.volatility]\nsclae = 2\n')
