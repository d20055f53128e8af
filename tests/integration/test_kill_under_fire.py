"""The emergency stop of a whole daemon, on three venues at once, with the venues misbehaving.

One daemon trades on two in-process sim venues (`sim_a`, `sim_b`: different
seeds, `sim_b` slow by its configured latency) and on the loopback Binance
server (`bnb`), whose engine runs in the same trio run as the test. Every
check reads the venues' own engines, never the daemon's view of them.

Kill under fire: 100 resting orders; then the first cancel-all at the Binance
server answers 503, a burst of 429s hits it, and new orders keep arriving while
`tradectl kill` runs. Afterwards no venue shows an open order, the kill stayed
within `[daemon] kill_deadline`, its report is complete and counts what each
venue cancelled, nothing the daemon approved after HALTED reached a venue, and
the daemon stays up and HALTED until `resume`.

How "nothing was accepted after HALTED" is checked against the venues' records:
every engine numbers the orders it accepts (per symbol, increasing), so the
engines' next order numbers read at the instant of the HALTED transition (a
synchronous wrapper around the sentinel's `halt`: nothing else can run in
between) split each venue's history into before and after. The test also keeps
one ordered log of every submission and of the halt (single-threaded, so its
order is the true order). An order a venue accepted after the split is allowed
only if its intent was submitted before the halt *and* approved: such an order
was already on its way (the kill waits for it and cancels it). Every intent
submitted after the halt must be denied TRADING_HALTED and must be unknown to
every venue, and the sentinel must not have approved anything since the halt.

Kill during a burst of fills: resting orders inside the spread are hit by
another account's market orders before, during and after the kill; afterwards
the journal's fills, the fills published on the bus and the position keeper's
positions equal each venue's own trade list exactly, each trade once.
"""

from __future__ import annotations

import itertools
import random
from decimal import Decimal as D

import pytest
import trio

from daemon import topics
from daemon.messages import Approval, Denial, OrderIntent
from daemon.model import OrderStatus, OrderType, Side, TimeInForce, client_order_id
from venues.sim.config import SimConfig
from venues.sim.serve import open_binance_server
from venues.sim.server_auth import ApiError
from venues.sim.server_config import Faults

pytestmark = pytest.mark.slow

KILL_DEADLINE = 10.0
SIMS = ("sim_a", "sim_b")
VENUES = ("sim_a", "sim_b", "bnb")
SYMBOLS = ("BTCUSDT", "ETHUSDT")
ACCOUNT = "demo"
SIZE = {"BTCUSDT": D("0.0005"), "ETHUSDT": D("0.01")}
TICK = D("0.01")
KEY_NAME, SECRET_NAME = "kill_test_api_key", "kill_test_api_secret"


def daemon_config(server, *, slow_latency: float = 0.2, fast_latency: float = 0.0, market_step: float = 0.5) -> str:
    return f"""
[daemon]
kill_deadline = {KILL_DEADLINE}

[venues.sim_a]
type = "sim"
seed = 5
market_step = {market_step}
latency = {fast_latency}

[venues.sim_b]
type = "sim"
seed = 6
market_step = {market_step}
latency = {slow_latency}

[venues.bnb]
type = "binance"
rest_url = "{server.rest_url}"
market_stream_url = "{server.stream_url}"
ws_api_url = "{server.ws_api_url}"
api_key_name = "{KEY_NAME}"
api_secret_name = "{SECRET_NAME}"
request_timeout = 2.0
connect_timeout = 2.0
emergency_timeout = 2.0
retry_backoff = 0.05
ws_open_timeout = 3.0

[feed.symbols]
bnb = ["BTCUSDT", "ETHUSDT"]

[gateway]
retry = {{ initial = 0.05, maximum = 0.5 }}

[risk]
price_collar_bps = "5000"
max_orders_per_second = 1000
max_orders_per_minute = 100000
max_open_orders_per_instrument = 1000
max_open_orders = 1000
rejects = {{ enabled = false }}
stale_data = {{ enabled = false }}
venue_down = {{ enabled = false }}
"""


async def start(start_daemon, monkeypatch, server, **latencies):
    creds = server.credentials(ACCOUNT)
    monkeypatch.setenv("TRADINGD_" + KEY_NAME.upper(), creds.api_key)
    monkeypatch.setenv("TRADINGD_" + SECRET_NAME.upper(), creds.secret)
    d = await start_daemon(daemon_config(server, **latencies))
    engines = {name: d.services["gateways"][name].adapter.engine for name in SIMS} | {"bnb": server.engine}
    feeds = d.services["feeds"]
    await wait_until(
        lambda: all(feeds[v].last_quote(s) is not None for v in VENUES for s in SYMBOLS), 20, "live books everywhere"
    )
    return d, engines, mids(d)


async def wait_until(condition, timeout: float, what: str) -> None:
    with trio.move_on_after(timeout):
        while not condition():
            await trio.sleep(0.02)
        return
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def open_count(engines) -> dict[str, int]:
    return {venue: len(engine.open_orders(ACCOUNT)) for venue, engine in engines.items()}


def venue_orders(engine) -> list:
    """Every order of our account the engine holds, open or closed (the venue's own record)."""
    account = engine._account(ACCOUNT)
    return [o for book in account.open.values() for o in book.values()] + list(account.closed.values())


def next_order_numbers(engine) -> dict[str, int]:
    """The number the engine gives the next order it accepts, per symbol."""
    return {symbol: engine._specs[symbol].book.next_order_id for symbol in SYMBOLS}


def mids(d) -> dict[tuple[str, str], D]:
    quotes = {(v, s): d.services["feeds"][v].last_quote(s) for v in VENUES for s in SYMBOLS}
    return {key: (q.bid + q.ask) / 2 for key, q in quotes.items()}


def far_intent(mid: D, exec_id: str, seq: int, venue: str, symbol: str, side: Side) -> OrderIntent:
    """A limit order 10 % away from `mid`: it rests."""
    price = (mid * (D("0.9") if side is Side.BUY else D("1.1"))).quantize(TICK) + (seq % 7) * TICK
    return OrderIntent(
        client_order_id=client_order_id(exec_id, seq), exec_id=exec_id, seq=seq, venue=venue, symbol=symbol,
        side=side, order_type=OrderType.LIMIT, quantity=SIZE[symbol], price=price, time_in_force=TimeInForce.GTC,
    )  # fmt: skip


class FirstCancelAllFails:
    """The Binance server's DELETE /api/v3/openOrders answers 503 the first time, untouched; then works."""

    def __init__(self, server) -> None:
        key = ("DELETE", "/api/v3/openOrders")
        self.route = server.rest.routes[key]
        server.rest.routes[key] = self.route._replace(handler=self)
        self.calls = 0

    def __call__(self, params, credentials, now_ms):
        self.calls += 1
        if self.calls == 1:
            raise ApiError(503, -1008, "Server is currently overloaded with other requests. Please try again later.")
        return self.route.handler(params, credentials, now_ms)


# ---------------------------------------------------------------------------------------
# Kill under fire
# ---------------------------------------------------------------------------------------


async def test_kill_under_fire_leaves_nothing_open_and_lets_nothing_new_in(start_daemon, ctl, monkeypatch):
    faults = Faults()
    async with open_binance_server(SimConfig(seed=7), faults=faults) as server:
        d, engines, mid = await start(start_daemon, monkeypatch, server)
        risk = d.services["risk"]

        # --- 100 working orders over three venues, through the real order path ----------------
        placed: dict[str, str] = {}  # cid -> venue
        for n in range(100):
            venue, symbol = VENUES[n % 3], SYMBOLS[(n // 3) % 2]
            intent = far_intent(mid[venue, symbol], "rest", n, venue, symbol, Side.BUY if n % 2 else Side.SELL)
            reply = await d.bus.request(topics.RISK_SUBMIT, intent, timeout=10)
            assert isinstance(reply, Approval), reply
            placed[intent.client_order_id] = venue
        await wait_until(lambda: sum(open_count(engines).values()) == 100, 20, "100 orders open at the venues")
        assert open_count(engines) == {"sim_a": 34, "sim_b": 33, "bnb": 33}

        # --- the instant of HALTED, as the venues and the sentinel saw it ----------------------
        log: list[tuple[str, str | None]] = []  # ("submit", cid) | ("halt", None), in true order
        at_halt: dict[str, object] = {}
        halt = risk.halt

        def halt_and_mark(by: str, reason: str):
            if not at_halt:
                at_halt.update(
                    numbers={venue: next_order_numbers(engine) for venue, engine in engines.items()},
                    approvals=risk.sentinel.approvals,
                )
                log.append(("halt", None))
            return halt(by, reason)

        monkeypatch.setattr(risk, "halt", halt_and_mark)

        # --- orders keep coming, before, during and after the kill ----------------------------
        answers: dict[str, Approval | Denial] = {}
        intents: dict[str, OrderIntent] = {}
        stop_firing = trio.Event()

        async def keep_submitting():
            rng = random.Random(3)
            for n in itertools.count():
                if stop_firing.is_set():
                    return
                venue, symbol = VENUES[n % 3], rng.choice(SYMBOLS)
                intent = far_intent(mid[venue, symbol], "fire", n, venue, symbol, rng.choice([Side.BUY, Side.SELL]))
                intents[intent.client_order_id] = intent
                log.append(("submit", intent.client_order_id))
                answers[intent.client_order_id] = await d.bus.request(topics.RISK_SUBMIT, intent, timeout=10)
                await trio.sleep(0.02)

        cancel_all = FirstCancelAllFails(server)
        async with trio.open_nursery() as fire:
            fire.start_soon(keep_submitting)
            await trio.sleep(0.3)  # some of these are on their way to the venues when the kill starts
            faults.burst_429 = 2  # the next two REST calls are answered 429 (Retry-After: 1 s)
            faults.latency = 0.02
            started = trio.current_time()
            reply = await ctl(d, "kill", reason="kill under fire")
            elapsed = trio.current_time() - started
            open_after_kill = open_count(engines)
            await trio.sleep(0.3)  # orders submitted after the kill are refused too
            stop_firing.set()

        # --- nothing open anywhere, within the deadline, and the report says so ----------------
        assert open_after_kill == {"sim_a": 0, "sim_b": 0, "bnb": 0}
        assert elapsed <= KILL_DEADLINE, elapsed
        assert reply["ok"], reply
        report = reply["result"]
        assert report["complete"] is True and report["reason"] == "kill under fire", report
        assert report["elapsed"] <= KILL_DEADLINE
        by_venue = {v["venue"]: v for v in report["venues"]}
        assert sorted(by_venue) == sorted(VENUES)
        for venue, engine in engines.items():
            v = by_venue[venue]
            assert v["verified"] and v["still_open"] == [] and v["error"] == "", v
            cancelled_there = [o for o in venue_orders(engine) if o.status is OrderStatus.CANCELED]
            assert v["cancelled"] == len(cancelled_there), (venue, v)
        assert sum(v["cancelled"] for v in by_venue.values()) >= 100
        # the faults did hit the kill: the first cancel-all failed, the 429s were spent
        assert cancel_all.calls >= 2 and faults.burst_429 == 0

        # --- nothing new was accepted after HALTED (see the module docstring) -----------------
        assert at_halt, "the kill never halted trading"
        halt_index = log.index(("halt", None))
        submitted_before = {cid for kind, cid in log[:halt_index] if kind == "submit"}
        submitted_after = {cid for kind, cid in log[halt_index + 1 :] if kind == "submit"}
        assert len(submitted_after) >= 10, "the test meant to keep submitting during the kill"
        for cid in submitted_after:
            answer = answers[cid]
            assert isinstance(answer, Denial) and answer.code == "TRADING_HALTED", answer
        assert risk.sentinel.approvals == at_halt["approvals"], "the sentinel approved an order after HALTED"
        approved = set(placed) | {cid for cid, a in answers.items() if isinstance(a, Approval)}
        approved_before_halt = approved - submitted_after
        late = []
        for venue, engine in engines.items():
            split = at_halt["numbers"][venue]
            for order in venue_orders(engine):
                assert order.client_order_id in approved, f"{venue} holds {order.client_order_id}, never approved"
                expected_venue = placed.get(order.client_order_id) or intents[order.client_order_id].venue
                assert expected_venue == venue, order.client_order_id
                if order.order_id >= split[order.symbol]:
                    late.append(order.client_order_id)
                    assert order.client_order_id in approved_before_halt, order.client_order_id
        known = {o.client_order_id for engine in engines.values() for o in venue_orders(engine)}
        assert not (known & submitted_after)
        # orders on their way at the halt that landed after it were cancelled by the kill too
        landed_late = [o for e in engines.values() for o in venue_orders(e) if o.client_order_id in late]
        assert all(o.status is OrderStatus.CANCELED for o in landed_late), landed_late
        assert any(isinstance(answers[c], Approval) for c in submitted_before), "nothing approved just before the halt"

        # --- still nothing open a moment later: no straggler landed after the verification ---
        await trio.sleep(0.5)
        assert open_count(engines) == {"sim_a": 0, "sim_b": 0, "bnb": 0}

        # --- the daemon stays up and HALTED until resume ----------------------------------------
        assert not d.finished.is_set()
        status = await ctl(d, "status")
        assert status["ok"] and status["result"]["extra"]["risk"]["state"] == "HALTED", status
        halted = far_intent(mid["sim_a", "BTCUSDT"], "after", 0, "sim_a", "BTCUSDT", Side.BUY)
        refused = await d.bus.request(topics.RISK_SUBMIT, halted, timeout=5)
        assert isinstance(refused, Denial) and refused.code == "TRADING_HALTED"
        resumed = await ctl(d, "resume", reason="kill under fire test: all clear")
        assert resumed["ok"] and resumed["result"]["state"] == "ACTIVE", resumed
        again = far_intent(mid["sim_a", "BTCUSDT"], "after", 1, "sim_a", "BTCUSDT", Side.BUY)
        assert isinstance(await d.bus.request(topics.RISK_SUBMIT, again, timeout=5), Approval)
        await wait_until(lambda: open_count(engines)["sim_a"] == 1, 10, "trading again after resume")


# ---------------------------------------------------------------------------------------
# Kill during a burst of fills
# ---------------------------------------------------------------------------------------

MARKET = "market"  # the synthetic market's own account at every sim engine: it trades without limits


def inside_spread_intents(engines, venue: str, per_symbol: int, start: int) -> list[OrderIntent]:
    """Orders one tick or more inside the spread, both sides: the first that takers hit."""
    engine, out = engines[venue], []
    for symbol in SYMBOLS:
        bid, ask = engine.best_bid(symbol)[0], engine.best_ask(symbol)[0]
        assert ask - bid >= 4 * TICK, (venue, symbol, bid, ask)
        for k in range(per_symbol):
            side = Side.BUY if k % 2 == 0 else Side.SELL
            price = bid + (1 + k % 3) * TICK if side is Side.BUY else ask - (1 + k % 3) * TICK
            seq = start + len(out)
            out.append(
                OrderIntent(
                    client_order_id=client_order_id("burst", seq), exec_id="burst", seq=seq, venue=venue,
                    symbol=symbol, side=side, order_type=OrderType.LIMIT, quantity=SIZE[symbol] * 4, price=price,
                    time_in_force=TimeInForce.GTC,
                )  # fmt: skip
            )
    return out


def ours_filled(engines) -> int:
    """How many trades of our account the venues list."""
    return sum(len(engine.my_trades(ACCOUNT, symbol)) for engine in engines.values() for symbol in SYMBOLS)


def venue_trades(engine) -> list:
    return [t for symbol in SYMBOLS for t in engine.my_trades(ACCOUNT, symbol)]


async def test_kill_during_a_burst_of_fills_keeps_positions_and_journal_exact(start_daemon, monkeypatch):
    # Markets that stand still (one step a minute): our orders inside the spread stay the best prices.
    async with open_binance_server(SimConfig(seed=8, market_step=60.0)) as server:
        d, engines, _ = await start(
            start_daemon, monkeypatch, server, slow_latency=0.05, fast_latency=0.005, market_step=60.0
        )
        journal, positions = d.services["journal"], d.services["positions"]
        with d.bus.subscribe(topics.FILL, maxsize=100_000, name="test.fills") as published:
            # --- working orders where takers hit first ----------------------------------------
            seq = 0
            for venue in VENUES:
                for intent in inside_spread_intents(engines, venue, per_symbol=6, start=seq):
                    reply = await d.bus.request(topics.RISK_SUBMIT, intent, timeout=10)
                    assert isinstance(reply, Approval), reply
                    seq += 1
            await wait_until(
                lambda: sum(len(venue_orders(e)) for e in engines.values()) == seq, 20, "every order at its venue"
            )

            # --- another account takes liquidity before, during and after the kill ----------------
            stop = trio.Event()
            rng = random.Random(9)

            async def take_liquidity():
                while not stop.is_set():
                    for engine in engines.values():
                        working = engine.open_orders(ACCOUNT)
                        if working:  # ours are the best prices: a market order of the other side hits one of them
                            target = rng.choice(working)
                            steps = int(SIZE[target.symbol] / engine.instrument(target.symbol).step_size)
                            engine.place_market_steps(MARKET, target.symbol, target.side is Side.SELL, steps)
                    await trio.sleep(0.01)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(take_liquidity)
                await trio.sleep(0.15)
                filled_before = ours_filled(engines)
                report = await d.services["emergency"].run("burst of fills", by="test")
                filled_during = ours_filled(engines) - filled_before
                await trio.sleep(0.3)
                stop.set()

            assert report.complete, report
            assert open_count(engines) == {"sim_a": 0, "sim_b": 0, "bnb": 0}
            assert filled_before > 0 and filled_during > 0, "fills were meant to land before and during the kill"

            # --- the daemon catches up with the venues ----------------------------------------
            trades = {venue: venue_trades(engine) for venue, engine in engines.items()}
            total = sum(len(t) for t in trades.values())
            assert total >= 10, "the burst was meant to fill our orders"

            async def journaled() -> dict[str, list]:
                return {venue: [jf.fill for jf in await journal.fills(venue=venue)] for venue in VENUES}

            with trio.move_on_after(15):
                while sum(len(f) for f in (await journaled()).values()) < total:
                    await trio.sleep(0.05)
            fills = await journaled()
            await trio.sleep(0.2)  # anything published late would show up below
            seen = []
            while True:
                try:
                    seen.append(published.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break

        def key(x):
            return (x.symbol, x.trade_id, x.client_order_id, x.side, x.price, x.qty, x.fee, x.fee_asset)

        for venue in VENUES:
            # the journal holds each of the venue's trades exactly once, as the venue lists it
            assert sorted(map(key, fills[venue])) == sorted(map(key, trades[venue])), venue
            # and each was published once
            assert sorted(key(f) for f in seen if f.venue == venue) == sorted(map(key, trades[venue])), venue

        # positions as the venues' trades make them (a base-asset fee comes off the position)
        for venue, engine in engines.items():
            for symbol in SYMBOLS:
                base = engine.instrument(symbol).base
                expected = D(0)
                for t in trades[venue]:
                    if t.symbol == symbol:
                        expected += (t.qty if t.side is Side.BUY else -t.qty) - (t.fee if t.fee_asset == base else 0)
                with trio.move_on_after(5):
                    while await positions.quantity(venue, symbol) != expected:
                        await trio.sleep(0.05)
                assert await positions.quantity(venue, symbol) == expected, (venue, symbol)

        # every order's journaled state is the venue's
        for venue, engine in engines.items():
            for order in venue_orders(engine):
                truth = engine.query_order(ACCOUNT, order.symbol, client_order_id=order.client_order_id)
                ours = await journal.order(order.client_order_id)
                assert ours is not None, order.client_order_id
                assert (ours.status, ours.filled_qty) == (truth.status, truth.filled_qty), (venue, ours, truth)
        risk_book = d.services["risk"].sentinel.book
        await wait_until(lambda: risk_book.open_order_count() == 0, 5, "the risk sentinel to count no working order")
