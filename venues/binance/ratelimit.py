"""One request budget per venue, shared by every caller that talks to it.

Binance counts request weight per IP and unfilled orders per account in
fixed windows, and reports its own count in response headers
(`X-MBX-USED-WEIGHT-1M`, `X-MBX-ORDER-COUNT-10S`, ...). The budget keeps a local
count per window, charged *before* a request is sent, and raises it to the
venue's figure whenever a header shows more: it only ever errs on the side of
sending less.

A caller that would overrun a window waits (on trio's clock, so tests run on
`MockClock`) until the window rolls over, unless that wait is longer than
`max_wait`, in which case it gets `RateLimited` at once rather than sitting
silently. After an HTTP 429 or 418 the budget refuses everything until the
venue's `Retry-After` has passed.

A slice of every window (`reserve`) is kept back for emergency calls, so a
busy market-data or order path can never use up what a kill needs to cancel.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

import msgspec
import trio

from venues.base import RateLimited, VenueBanned

WEIGHT = "REQUEST_WEIGHT"
ORDERS = "ORDERS"
RAW_REQUESTS = "RAW_REQUESTS"


class RateLimit(msgspec.Struct, frozen=True):
    kind: str  # REQUEST_WEIGHT | ORDERS | RAW_REQUESTS
    seconds: int
    limit: int


# What Binance publishes for Spot; replaced by exchangeInfo.rateLimits once known.
BINANCE_SPOT_DEFAULTS = (
    RateLimit(WEIGHT, 60, 6000),
    RateLimit(ORDERS, 10, 50),
    RateLimit(ORDERS, 86400, 160_000),
    RateLimit(RAW_REQUESTS, 300, 61_000),
)

_HEADER = re.compile(r"^x-mbx-(used-weight|order-count)-(\d+)([smhd])$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_HEADER_KIND = {"used-weight": WEIGHT, "order-count": ORDERS}


class _Window:
    __slots__ = ("limit", "seconds", "started", "used")

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit.limit
        self.seconds = limit.seconds
        self.used = 0
        self.started: float | None = None

    def roll(self, now: float) -> None:
        if self.started is not None and now >= self.started + self.seconds:
            self.used = 0
            self.started = None

    def wait_for(self, now: float, cost: int, cap: float) -> float:
        """Seconds until `cost` fits under `cap` (0 if it fits now)."""
        if cost == 0 or self.used + cost <= cap or self.used == 0:
            # an empty window always admits one request, however heavy
            return 0.0
        assert self.started is not None
        return self.started + self.seconds - now

    def charge(self, now: float, cost: int) -> None:
        if cost:
            if self.started is None:
                self.started = now
            self.used += cost


class RateBudget:
    """Request weight, order count and raw request windows of one venue."""

    def __init__(
        self,
        limits: Iterable[RateLimit] = BINANCE_SPOT_DEFAULTS,
        *,
        reserve: float = 0.1,
        max_wait: float = 10.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not 0 <= reserve < 1:
            raise ValueError(f"reserve must be a fraction in [0, 1), got {reserve}")
        self.reserve = reserve
        self.max_wait = max_wait
        self._clock = clock or trio.current_time
        self._windows: dict[tuple[str, int], _Window] = {}
        self.configure(limits)
        self._blocked_until = 0.0
        self._banned = False
        self.waits = 0  # how often a caller had to wait: a sign the venue is near its limits
        self.refusals = 0

    def configure(self, limits: Iterable[RateLimit]) -> None:
        """Adopt the venue's published limits, keeping counts of windows that stay."""
        new: dict[tuple[str, int], _Window] = {}
        for limit in limits:
            key = (limit.kind, limit.seconds)
            window = self._windows.get(key) or _Window(limit)
            window.limit = limit.limit
            new[key] = window
        self._windows = new

    # --- state ------------------------------------------------------------------------
    def blocked_for(self) -> float:
        """Seconds until sending is allowed again after a 429/418 (0 if not blocked)."""
        return max(0.0, self._blocked_until - self._clock())

    @property
    def banned(self) -> bool:
        return self._banned and self.blocked_for() > 0

    def usage(self) -> dict[str, tuple[int, int]]:
        """`{"REQUEST_WEIGHT/60s": (used, limit), ...}` for status displays."""
        now = self._clock()
        out = {}
        for (kind, seconds), window in self._windows.items():
            window.roll(now)
            out[f"{kind}/{seconds}s"] = (window.used, window.limit)
        return out

    # --- the calls ----------------------------------------------------------------------
    async def acquire(self, weight: int, orders: int = 0, *, emergency: bool = False) -> None:
        """Wait until the request fits every window, then charge it.

        Raises `RateLimited` / `VenueBanned` while the venue has told us to stop,
        and `RateLimited` when the wait would exceed `max_wait`.
        """
        while True:
            now = self._clock()
            self._check_blocked(now)
            wait = self._wait_for(now, weight, orders, emergency)
            if wait <= 0:
                self._charge(now, weight, orders)
                return
            if wait > self.max_wait:
                self.refusals += 1
                raise RateLimited(wait, "(local request budget exhausted)")
            self.waits += 1
            await trio.sleep(wait)

    def try_acquire(self, weight: int, orders: int = 0, *, emergency: bool = False) -> bool:
        """Charge the request if it fits now; never waits. Raises while blocked."""
        now = self._clock()
        self._check_blocked(now)
        if self._wait_for(now, weight, orders, emergency) > 0:
            return False
        self._charge(now, weight, orders)
        return True

    def check_blocked(self) -> None:
        """Raise `RateLimited` / `VenueBanned` while the venue has told us to stop (e.g. before connecting)."""
        self._check_blocked(self._clock())

    def observe_headers(self, headers: Mapping[str, str]) -> None:
        """Raise local counts to what the venue reports in its response headers."""
        now = self._clock()
        for name, value in headers.items():
            match = _HEADER.match(name)
            if match is None:
                continue
            kind = _HEADER_KIND[match.group(1).lower()]
            seconds = int(match.group(2)) * _UNIT_SECONDS[match.group(3).lower()]
            window = self._windows.get((kind, seconds))
            if window is None:
                continue
            try:
                reported = int(value)
            except ValueError:
                continue
            window.roll(now)
            if reported > window.used:
                if window.started is None:
                    window.started = now
                window.used = reported

    def block(self, seconds: float, *, banned: bool = False) -> None:
        """Stop all sending for `seconds` (HTTP 429 / 418 with Retry-After)."""
        now = self._clock()
        self._blocked_until = max(self._blocked_until, now + seconds)
        self._banned = self._banned or banned

    # --- internals ----------------------------------------------------------------------
    def _check_blocked(self, now: float) -> None:
        remaining = self._blocked_until - now
        if remaining > 0:
            self.refusals += 1
            if self._banned:
                raise VenueBanned(remaining, "(the venue banned this IP; sending resumes when the ban ends)")
            raise RateLimited(remaining, "(the venue asked us to back off)")
        self._banned = False

    def _costs(self, kind: str, weight: int, orders: int) -> int:
        if kind == WEIGHT:
            return weight
        if kind == ORDERS:
            return orders
        return 1  # RAW_REQUESTS

    def _wait_for(self, now: float, weight: int, orders: int, emergency: bool) -> float:
        share = 1.0 if emergency else 1.0 - self.reserve
        wait = 0.0
        for (kind, _), window in self._windows.items():
            window.roll(now)
            wait = max(wait, window.wait_for(now, self._costs(kind, weight, orders), window.limit * share))
        return wait

    def _charge(self, now: float, weight: int, orders: int) -> None:
        for (kind, _), window in self._windows.items():
            window.charge(now, self._costs(kind, weight, orders))
