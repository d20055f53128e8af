"""Binance's request limits, enforced the way clients observe them.

- Request weight per minute and raw requests per 5 minutes, per IP (every
  loopback client shares one budget, as every process on one host shares a
  real IP). Windows are fixed and aligned to the clock, like Binance's: the
  count falls to zero at the start of each minute.
- Past the limit the answer is 429 with `Retry-After` (seconds to the end of
  the window). A client that keeps sending while told to wait gets banned:
  418 with `Retry-After` until the ban ends, and each new ban lasts twice as
  long as the previous one.
- New orders per account, per 10 s and per day; an order that trades at once
  gives its count back, as Binance's unfilled-order count does.

Pure code: the caller passes the time in ms.
"""

from __future__ import annotations

import math

from venues.sim.server_config import ServerSettings

MINUTE_MS = 60_000
DAY_MS = 86_400_000


class FixedWindow:
    """A counter that resets at every multiple of `interval_ms`."""

    __slots__ = ("interval_ms", "limit", "_window", "used")

    def __init__(self, interval_ms: int, limit: int) -> None:
        self.interval_ms = interval_ms
        self.limit = limit
        self._window = -1
        self.used = 0

    def _roll(self, now_ms: int) -> None:
        window = now_ms // self.interval_ms
        if window != self._window:
            self._window = window
            self.used = 0

    def count(self, now_ms: int) -> int:
        self._roll(now_ms)
        return self.used

    def add(self, amount: int, now_ms: int) -> int:
        self._roll(now_ms)
        self.used += amount
        return self.used

    def give_back(self, amount: int, now_ms: int) -> None:
        self._roll(now_ms)
        self.used = max(0, self.used - amount)

    def ms_to_reset(self, now_ms: int) -> int:
        return self.interval_ms - now_ms % self.interval_ms


class Verdict:
    """What to answer: `status` 200 (go on), 429 or 418, with the Binance error to send."""

    __slots__ = ("status", "retry_after", "code", "msg")

    def __init__(self, status: int = 200, retry_after: int = 0, code: int = 0, msg: str = "") -> None:
        self.status = status
        self.retry_after = retry_after
        self.code = code
        self.msg = msg

    @property
    def ok(self) -> bool:
        return self.status == 200


OK = Verdict()


def _seconds(ms: int) -> int:
    return max(1, math.ceil(ms / 1000))


class RequestLimiter:
    """The IP's request weight, its 429 back-off and its bans."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.weight = FixedWindow(MINUTE_MS, settings.request_weight_per_minute)
        self.raw = FixedWindow(5 * MINUTE_MS, settings.raw_requests_per_5m)
        self.blocked_until_ms = 0
        self.banned_until_ms = 0
        self.strikes = 0  # requests sent while told to wait
        self.bans = 0
        self.refused_429 = 0
        self.refused_418 = 0

    def used_weight(self, now_ms: int) -> int:
        return self.weight.count(now_ms)

    def admit(self, weight: int, now_ms: int) -> Verdict:
        """Count one request of `weight`; say whether it may be served."""
        if now_ms < self.banned_until_ms:
            return self._banned(now_ms)
        if now_ms < self.blocked_until_ms:
            self.strikes += 1
            if self.strikes > self.settings.ban_after:
                seconds = self.settings.ban_seconds * 2**self.bans
                self.bans += 1
                self.banned_until_ms = now_ms + int(seconds * 1000)
                return self._banned(now_ms)
            return self._too_many(now_ms, self.blocked_until_ms - now_ms)
        used = self.weight.add(weight, now_ms)
        raw = self.raw.add(1, now_ms)
        if used > self.weight.limit:
            self.block(self.weight.ms_to_reset(now_ms), now_ms)
            return self._too_many(now_ms, self.weight.ms_to_reset(now_ms))
        if raw > self.raw.limit:
            self.block(self.raw.ms_to_reset(now_ms), now_ms)
            return self._too_many(now_ms, self.raw.ms_to_reset(now_ms), raw=True)
        return OK

    def block(self, ms: int, now_ms: int) -> None:
        """Enter the 429 state for `ms` (a fault may force it too)."""
        until = now_ms + ms
        if until > self.blocked_until_ms:
            self.blocked_until_ms = until
            self.strikes = 0

    def _too_many(self, now_ms: int, wait_ms: int, *, raw: bool = False) -> Verdict:
        self.refused_429 += 1
        if raw:
            msg = (
                f"Too many requests; current limit is {self.raw.limit} requests per 5 MINUTE. "
                "Please use WebSocket Streams for live updates to avoid polling the API."
            )
        else:
            msg = (
                f"Too much request weight used; current limit is {self.weight.limit} request weight per 1 MINUTE. "
                "Please use WebSocket Streams for live updates to avoid polling the API."
            )
        return Verdict(429, _seconds(wait_ms), -1003, msg)

    def _banned(self, now_ms: int) -> Verdict:
        self.refused_418 += 1
        msg = (
            f"Way too much request weight used; IP banned until {self.banned_until_ms}. "
            "Please use WebSocket Streams for live updates to avoid bans."
        )
        return Verdict(418, _seconds(self.banned_until_ms - now_ms), -1003, msg)


class OrderCounter:
    """New orders of one account per 10 s and per day."""

    def __init__(self, settings: ServerSettings) -> None:
        self.ten_seconds = FixedWindow(10_000, settings.orders_per_10s)
        self.day = FixedWindow(DAY_MS, settings.orders_per_day)

    def admit(self, now_ms: int) -> Verdict:
        for window, label in ((self.ten_seconds, "10 SECOND"), (self.day, "1 DAY")):
            if window.count(now_ms) >= window.limit:
                return Verdict(
                    429,
                    _seconds(window.ms_to_reset(now_ms)),
                    -1015,
                    f"Too many new orders; current limit is {window.limit} orders per {label}.",
                )
        self.ten_seconds.add(1, now_ms)
        self.day.add(1, now_ms)
        return OK

    def traded(self, now_ms: int) -> None:
        """An order that filled (even partly) no longer counts as unfilled."""
        self.ten_seconds.give_back(1, now_ms)
        self.day.give_back(1, now_ms)

    def headers(self, now_ms: int) -> list[tuple[str, str]]:
        return [
            ("X-MBX-ORDER-COUNT-10S", str(self.ten_seconds.count(now_ms))),
            ("X-MBX-ORDER-COUNT-1D", str(self.day.count(now_ms))),
        ]
