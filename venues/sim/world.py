"""A ready-to-trade simulated venue: engine, synthetic market, accounts, and the trio driver.

    world = build_world(SimConfig(seed=7))
    await nursery.start(world.run)          # returns once the book is populated
    venue = world.venue("demo")              # a VenueAdapter for the demo account

The driver steps the market on a fixed grid of trio time (every
`market_step` seconds), so under `trio.testing.MockClock` an hour of market
passes in a fraction of a second and two runs with the same seed and the
same orders at the same times are identical. If the process falls behind real
time the market catches up step by step rather than skipping.

Trio runs tasks that wake at the same instant in no particular order, so a
market step and an order sent "at 10 s" could happen either way round. The
steps therefore sit a hair after the grid (1/1024 of a step, exact in binary
floating point): an action scheduled on a whole step always comes first.
"""

from __future__ import annotations

import time
from decimal import Decimal

import trio

from daemon.logs import get_logger
from venues.sim.adapter import SimVenue
from venues.sim.config import SimConfig
from venues.sim.engine import SimEngine
from venues.sim.market import MarketModel

log = get_logger("venue.sim")

STEP_PHASE = 2.0**-10  # steps happen this fraction of a step after the grid (see above)


class SimClock:
    """The venue's wall clock (UTC ms), driven by trio's clock so MockClock drives it too.

    It is anchored the first time it is read inside trio: from then on it is
    `start_ms` (or the real time at anchoring) plus trio time elapsed. Read
    outside trio (a test inspecting the engine afterwards) it repeats the
    last value.
    """

    def __init__(self, start_ms: int | None = None) -> None:
        self._start_ms = start_ms
        self._t0: float | None = None
        self._last = start_ms if start_ms is not None else int(time.time() * 1000)

    def anchor(self) -> None:
        if self._t0 is not None:
            return
        self._t0 = trio.current_time()
        if self._start_ms is None:
            self._start_ms = int(time.time() * 1000)
        self._last = self._start_ms

    def now_ms(self) -> int:
        try:
            now = trio.current_time()
        except RuntimeError:
            return self._last
        if self._t0 is None:
            self.anchor()
        assert self._start_ms is not None and self._t0 is not None
        self._last = self._start_ms + int((now - self._t0) * 1000)
        return self._last


class SimWorld:
    """One simulated venue: its engine, its market, its accounts."""

    def __init__(self, config: SimConfig, *, venue: str = "sim") -> None:
        self.config = config
        self.name = venue
        self.clock = SimClock(config.start_ms)
        self.engine = SimEngine(
            [ins.to_instrument(venue) for ins in config.instruments],
            venue=venue,
            clock_ms=self.clock.now_ms,
            maker_fee=config.maker_fee,
            taker_fee=config.taker_fee,
        )
        # The market's participants trade for free and without limits: they
        # are the rest of the world, not an account anyone reconciles.
        self.engine.open_account(
            config.market_account, unlimited=True, history_limit=0, maker_fee=Decimal(0), taker_fee=Decimal(0)
        )
        for account in config.accounts:
            self.engine.open_account(
                account.name,
                maker_fee=account.maker_fee,
                taker_fee=account.taker_fee,
                history_limit=config.history_limit,
            )
            for asset, amount in account.balances.items():
                if amount:
                    self.engine.deposit(account.name, asset, amount)
        self.market = MarketModel(self.engine, config, config.market_account)
        self.steps = 0
        self._running = False

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Drive the market forever; `started()` once the book is populated.

        It may be restarted after a crash or a cancel (the book is not laid
        out twice), but not run twice at the same time.
        """
        if self._running:
            raise RuntimeError(f"the sim market of {self.name} is already running; start it once")
        self._running = True
        try:
            await self._drive(task_status)
        finally:
            self._running = False

    async def _drive(self, task_status: trio.TaskStatus[None]) -> None:
        self.clock.anchor()
        self.market.populate()
        dt = self.config.market_step
        log.info(
            "sim.market_started",
            venue=self.name,
            seed=self.config.seed,
            symbols=",".join(self.engine.symbols),
            step=dt,
        )
        task_status.started()
        next_step = trio.current_time() + dt * STEP_PHASE
        while True:
            next_step += dt
            await trio.sleep_until(next_step)
            self.market.advance(dt)
            self.steps += 1

    def venue(self, account: str | None = None, *, name: str | None = None) -> SimVenue:
        """A VenueAdapter for `account` (default: the first configured account)."""
        if account is None:
            if not self.config.accounts:
                raise ValueError("this sim world has no accounts; add one under accounts in its config")
            account = self.config.accounts[0].name
        if account == self.config.market_account:
            raise ValueError(f"{account!r} is the synthetic market's own account; trade from a configured account")
        return SimVenue(
            self.engine,
            account,
            name=name or self.name,
            latency=self.config.latency,
            stream_buffer=self.config.stream_buffer,
        )


def build_world(config: SimConfig | None = None, *, venue: str = "sim") -> SimWorld:
    """The default sim venue (or the one `config` describes), not yet running."""
    return SimWorld(config or SimConfig(), venue=venue)
