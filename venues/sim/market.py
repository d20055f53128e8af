"""The synthetic market: other participants, so the sim venue has prices, depth and volume.

Pure and deterministic: `MarketModel` owns one seeded `random.Random` per
instrument and moves only when `advance(dt)` is called, so the same seed and
the same orders at the same steps always give the same fills. The trio driver
(`SimWorld.run`) calls it on a fixed grid of trio time.

Per instrument and per step:

1. The fair price follows a geometric Brownian motion, with optional
   volatility regimes ("storms"), random jumps, and shocks forced by a test
   (`force_spike`, `stress`).
2. A market maker keeps a ladder of resting orders around the fair price on
   fixed price grids: fine levels near the touch, coarse ones deeper. When
   the price moves, levels that fell out of the window are cancelled and new
   ones placed; a new level placed across someone's resting order trades with
   it, so a price moving through your limit fills you. A level eaten by
   trades comes back only after a random delay, so a big order leaves a hole
   that heals over seconds, as in a real book.
3. Other participants send market orders at a Poisson rate that follows a
   U-shaped intraday volume curve (busy open and close, quiet middle), their
   direction leaning with the price move, so VWAP and POV have volume to follow.

All of it runs through the engine's integer fast paths inside one batch per
step, so a step is a few dozen engine calls and publishes one BookDiff per
symbol.
"""

from __future__ import annotations

import math
import random
from decimal import Decimal
from itertools import chain

from venues.sim.config import SimConfig, SimInstrumentConfig
from venues.sim.engine import SimEngine

SECONDS_PER_YEAR = 365.0 * 24 * 3600
_INNER_GROWTH = 0.1  # inner level sizes grow 10% per level away from the touch
_SIZE_SIGMA = 0.35  # log-normal spread of level sizes
_NEAR = 5  # levels next to the touch kept exact on every step
_FULL_EVERY = 5.0  # seconds between full layouts of the ladder


def volume_curve(x: float, floor: float = 0.35) -> float:
    """Trading intensity at fraction `x` of a session, relative to the session's average.

    A parabola in x: highest at the open and the close, lowest (`floor` times
    the ends' level, before normalising) in the middle; its mean over [0, 1]
    is exactly 1, so `trades_per_second` stays the session's average rate.
    """
    u = 2.0 * x - 1.0
    return (floor + (1.0 - floor) * u * u) / (floor + (1.0 - floor) / 3.0)


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0.0:
        return 0
    if lam > 30.0:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit = math.exp(-lam)
    k = 0
    p = rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


class _Track:
    """The market's state for one instrument."""

    def __init__(self, cfg: SimInstrumentConfig, seed: int, volatility_scale: float) -> None:
        self.cfg = cfg
        self.symbol = cfg.symbol
        # A string seed goes through SHA-512: stable across runs and hash seeds.
        self.rng = random.Random(f"{seed}:{cfg.symbol}")
        self.tick = float(cfg.tick_size)
        self.log_mid = math.log(float(cfg.price))
        self.sigma = cfg.volatility * volatility_scale / math.sqrt(SECONDS_PER_YEAR)
        self.inner = int(cfg.level_spacing / cfg.tick_size)
        self.outer = int(cfg.outer_spacing / cfg.tick_size)
        self.level_steps = float(cfg.level_qty / cfg.step_size)
        self.outer_steps = float(cfg.outer_qty / cfg.step_size)
        self.trade_steps = float(cfg.trade_qty / cfg.step_size)
        self.min_steps = max(1, int(cfg.min_qty / cfg.step_size)) if cfg.min_qty else 1
        # The ladder: price in ticks -> [order id, steps resting when last seen].
        self.bids: dict[int, list[int]] = {}
        self.asks: dict[int, list[int]] = {}
        self.refill_at: dict[tuple[bool, int], float] = {}
        self.next_refill = math.inf
        self.touch: int | None = None  # best bid of the ladder, ticks
        self.full_touch = 0  # the touch at the last full layout
        self.next_full = -math.inf  # model time of the next full layout
        self.bid_window: tuple[range, range] = (range(0), range(0))  # wanted prices, touch outwards
        self.ask_window: tuple[range, range] = (range(0), range(0))
        self.spike = 0.0
        self.stress_multiplier = 1.0
        self.stress_until = -math.inf
        self.storm = False
        self.last_shock = 0.0  # the step's normalised price move, for trade direction

    def fair_ticks(self) -> float:
        return math.exp(self.log_mid) / self.tick


class MarketModel:
    """Other participants of the sim venue, trading through `account` (an unlimited one).

    Time is the model's own: seconds since the market started, advanced by
    `advance`. Nothing here reads a clock.
    """

    def __init__(self, engine: SimEngine, config: SimConfig, account: str) -> None:
        if not engine.has_account(account):
            raise ValueError(f"the market's account {account!r} does not exist in the engine")
        self.engine = engine
        self.config = config
        self.account = account
        self.time = 0.0
        self._tracks = {
            cfg.symbol: _Track(cfg, config.seed, config.volatility.scale) for cfg in config.instruments
        }
        self._populated = False

    # --- reading ------------------------------------------------------------------------

    def fair_price(self, symbol: str) -> Decimal:
        """The model's current fair price (not a tradable quote), to the tick."""
        track = self._track(symbol)
        return track.cfg.tick_size * round(track.fair_ticks())

    def volume_multiplier(self, t: float | None = None) -> float:
        """How busy the market is at model time `t` (default: now) relative to its average."""
        cfg = self.config
        t = self.time if t is None else t
        x = ((t + cfg.session_start) % cfg.session_seconds) / cfg.session_seconds
        return volume_curve(x, cfg.volume_floor)

    def in_storm(self, symbol: str) -> bool:
        return self._track(symbol).storm

    # --- provoking ----------------------------------------------------------------------

    def force_spike(self, symbol: str, move: float) -> None:
        """Jump the fair price by `move` (relative: -0.1 is a 10% crash) at the next step."""
        if not -0.95 < move < 10:
            raise ValueError(f"a spike of {move:+.0%} is not a price move a market can make; use -0.95 < move < 10")
        self._track(symbol).spike += math.log1p(move)

    def stress(self, multiplier: float, seconds: float, symbol: str | None = None) -> None:
        """Multiply volatility by `multiplier` for the next `seconds` (all symbols by default)."""
        if multiplier <= 0 or seconds < 0:
            raise ValueError("stress needs a positive multiplier and a non-negative duration")
        tracks = [self._track(symbol)] if symbol is not None else list(self._tracks.values())
        for track in tracks:
            track.stress_multiplier = multiplier
            track.stress_until = self.time + seconds

    # --- moving -------------------------------------------------------------------------

    def populate(self) -> None:
        """Lay out the initial ladders (idempotent: a restarted driver does not double them)."""
        if self._populated:
            return
        self._populated = True
        with self.engine.batch():
            for track in self._tracks.values():
                self._requote(track)

    def advance(self, dt: float) -> None:
        """Move the market forward by `dt` seconds: prices, liquidity, then trades."""
        if dt <= 0:
            raise ValueError(f"the market only moves forward; got dt={dt}")
        self.populate()
        self.time += dt
        with self.engine.batch():
            for track in self._tracks.values():
                self._move_price(track, dt)
                if self.engine.is_trading(track.symbol):  # a halted market neither quotes nor trades
                    self._requote(track)
                    self._trade(track, dt)

    # --- internals ----------------------------------------------------------------------

    def _track(self, symbol: str) -> _Track:
        track = self._tracks.get(symbol)
        if track is None:
            raise KeyError(f"the sim market does not trade {symbol!r}; it trades {sorted(self._tracks)}")
        return track

    def _vol_multiplier(self, track: _Track) -> float:
        m = self.config.volatility.storm_multiplier if track.storm else 1.0
        if self.time <= track.stress_until:
            m *= track.stress_multiplier
        return m

    def _move_price(self, track: _Track, dt: float) -> None:
        rng = track.rng
        vol = self.config.volatility
        s = track.sigma * math.sqrt(dt) * self._vol_multiplier(track)
        z = rng.gauss(0.0, 1.0)
        move = s * z - 0.5 * s * s
        if vol.jumps_per_day and rng.random() < vol.jumps_per_day * dt / 86400.0:
            move += rng.gauss(0.0, vol.jump_size)
        if track.spike:
            move += track.spike
            track.spike = 0.0
        track.log_mid += move
        track.last_shock = z
        if vol.storms_per_day:
            if track.storm:
                if rng.random() < dt / (vol.storm_minutes * 60.0):
                    track.storm = False
            elif rng.random() < vol.storms_per_day * dt / 86400.0:
                track.storm = True

    def _window(self, track: _Track) -> bool:
        """Recompute the ladder's price window around the fair price; True if it moved.

        A side's window is two `range`s of ticks, touch outwards: the fine
        levels and the coarse ones beyond them. Ranges make "is this price
        still wanted?" O(1) without building sets on every step.
        """
        g, big = track.inner, track.outer
        bid = int(track.fair_ticks() // g) * g
        if track.touch == bid:
            return False
        track.touch = bid
        ask = bid + g
        levels, outer_levels = track.cfg.levels, track.cfg.outer_levels
        first = ((bid - (levels - 1) * g - 1) // big) * big
        track.bid_window = (
            range(bid, max(0, bid - levels * g), -g),
            range(first, max(0, first - outer_levels * big), -big),
        )
        first = -((-(ask + (levels - 1) * g + 1)) // big) * big
        track.ask_window = (
            range(ask, ask + levels * g, g),
            range(first, first + outer_levels * big, big),
        )
        return True

    def _requote(self, track: _Track) -> None:
        """Keep the ladder around the fair price.

        Every step only the touch is kept tidy: the market maker's orders now
        on the wrong side of it are cancelled and the first `_NEAR` levels
        placed. The whole window (the deep levels too) is laid out again
        every `_FULL_EVERY` seconds or once the touch drifted `_NEAR` levels,
        which keeps a step down to a handful of engine calls.
        """
        engine, symbol, account = self.engine, track.symbol, self.account
        now = self.time
        # 1. Levels eaten by trades since the last step: takers eat the best
        #    level first, so stop at the first level nobody touched.
        for is_bid, ladder, window in ((True, track.bids, track.bid_window), (False, track.asks, track.ask_window)):
            for price in chain(*window):
                entry = ladder.get(price)
                if entry is None:
                    continue
                left = engine.remaining_steps(symbol, entry[0])
                if left == entry[1]:
                    break
                if left:
                    entry[1] = left
                    break
                del ladder[price]
                self._schedule_refill(track, is_bid, price)
        moved = self._window(track)
        g = track.inner
        assert track.touch is not None
        bid = track.touch
        ask = bid + g
        if now >= track.next_full or abs(bid - track.full_touch) >= _NEAR * g:
            self._relayout(track)
        elif moved:
            # 2. Orders now on the wrong side of the touch. Since the last
            #    full layout the touch stayed within _NEAR levels of
            #    full_touch, so that is as far as they can be.
            reach = _NEAR * g
            for price in range(ask, track.full_touch + reach + 1, g):
                if price in track.bids:
                    engine.cancel_by_id(account, symbol, track.bids.pop(price)[0])
            for price in range(bid, track.full_touch + g - reach - 1, -g):
                if price in track.asks:
                    engine.cancel_by_id(account, symbol, track.asks.pop(price)[0])
            # 3. The first levels on each side.
            for k in range(min(_NEAR, track.cfg.levels)):
                self._ensure(track, True, bid - k * g, k)
                self._ensure(track, False, ask + k * g, k)
        if now >= track.next_refill:
            self._refill_due(track)

    def _relayout(self, track: _Track) -> None:
        """Cancel what is outside the window and place every missing level."""
        engine, symbol, account = self.engine, track.symbol, self.account
        for ladder, (inner, outer) in ((track.bids, track.bid_window), (track.asks, track.ask_window)):
            for price in [p for p in ladder if p not in inner and p not in outer]:
                engine.cancel_by_id(account, symbol, ladder.pop(price)[0])
        if track.refill_at:
            track.refill_at = {
                (is_bid, p): at
                for (is_bid, p), at in track.refill_at.items()
                if any(p in r for r in (track.bid_window if is_bid else track.ask_window))
            }
            track.next_refill = min(track.refill_at.values(), default=math.inf)
        for is_bid, window in ((True, track.bid_window), (False, track.ask_window)):
            for k, price in enumerate(chain(*window)):
                self._ensure(track, is_bid, price, k)
        assert track.touch is not None
        track.full_touch = track.touch
        track.next_full = self.time + _FULL_EVERY

    def _ensure(self, track: _Track, is_bid: bool, price: int, k: int) -> None:
        """Place level `k` at `price` unless it is there or eaten and not yet due back."""
        ladder = track.bids if is_bid else track.asks
        if price in ladder or (track.refill_at and (is_bid, price) in track.refill_at) or price <= 0:
            return
        self._place(track, is_bid, price, k)

    def _place(self, track: _Track, is_bid: bool, price: int, k: int) -> None:
        engine, symbol = self.engine, track.symbol
        order_id = engine.place_limit_ticks(self.account, symbol, is_bid, price, self._level_size(track, k))
        left = engine.remaining_steps(symbol, order_id)
        if left:
            (track.bids if is_bid else track.asks)[price] = [order_id, left]
        else:  # it crossed resting orders and traded away at once
            self._schedule_refill(track, is_bid, price)

    def _refill_due(self, track: _Track) -> None:
        """Bring back eaten levels whose time has come, if still in the window."""
        now = self.time
        due = [key for key, at in track.refill_at.items() if at <= now]
        for key in due:
            del track.refill_at[key]
        for is_bid, price in due:
            window = track.bid_window if is_bid else track.ask_window
            for k, r in ((r.index(price), r) for r in window if price in r):
                if r is window[1]:
                    k += track.cfg.levels
                self._ensure(track, is_bid, price, k)
                break
        track.next_refill = min(track.refill_at.values(), default=math.inf)

    def _schedule_refill(self, track: _Track, is_bid: bool, price: int) -> None:
        at = self.time + track.rng.expovariate(1.0 / track.cfg.refill_seconds)
        track.refill_at[(is_bid, price)] = at
        if at < track.next_refill:
            track.next_refill = at

    def _level_size(self, track: _Track, k: int) -> int:
        levels = track.cfg.levels
        if k < levels:
            mean = track.level_steps * (1.0 + _INNER_GROWTH * k)
        else:
            mean = track.outer_steps
        size = mean * track.rng.lognormvariate(-0.5 * _SIZE_SIGMA * _SIZE_SIGMA, _SIZE_SIGMA)
        return max(track.min_steps, int(size))

    def _trade(self, track: _Track, dt: float) -> None:
        rate = track.cfg.trades_per_second
        if not rate:
            return
        rng = track.rng
        lam = rate * dt * self.volume_multiplier()
        if track.storm:
            lam *= self.config.volatility.storm_volume_multiplier
        # Buyers lean in when the price rises, sellers when it falls.
        p_buy = 0.5 + 0.25 * math.tanh(track.last_shock)
        engine, symbol, account = self.engine, track.symbol, self.account
        for _ in range(_poisson(rng, lam)):
            is_buy = rng.random() < p_buy
            steps = max(track.min_steps, int(rng.expovariate(1.0) * track.trade_steps))
            engine.place_market_steps(account, symbol, is_buy, steps)
