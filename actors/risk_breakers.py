"""The measures behind the breakers: daily loss, drawdown, VaR and the reject rate.

Each measure keeps just enough history to answer "is the limit exceeded now?"
and returns `TripRequest`s; latching and the trading state are the state
machine's business. Limits are read from the `RiskLimits` passed in on every
call, so a `risk set` takes effect at the next update.

`rearm` is called when an operator resumes: the loss measures restart from the
present (the daily-loss reference and the peak become the current equity, the
VaR history and the reject window are cleared), so the limits then bound
*further* losses instead of re-tripping at once on losses already acknowledged.
"""

from __future__ import annotations

import math
from collections import deque
from decimal import Decimal

import msgspec
import numpy as np

from actors.risk_limits import Action, RiskLimits
from daemon.analytics import historical_var, parametric_var, simple_returns

DAILY_LOSS = "daily_loss"
DRAWDOWN = "drawdown"
VAR = "var"
REJECTS = "rejects"
STALE_DATA = "stale_data"
VENUE_DOWN = "venue_down"
SUPERVISOR = "supervisor"

_DAY_MS = 86_400_000
_HOUR_MS = 3_600_000


class TripRequest(msgspec.Struct, frozen=True, kw_only=True):
    breaker: str
    detail: str
    action: Action


def trading_day(utc_ms: int, day_start_hour: int) -> int:
    """Number of the trading day that contains `utc_ms`; days start at `day_start_hour` UTC."""
    return (utc_ms - day_start_hour * _HOUR_MS) // _DAY_MS


class EquityBreakers:
    """Daily loss, drawdown from peak and VaR, fed with the equity (realised + unrealised)."""

    def __init__(self) -> None:
        self.equity: Decimal | None = None
        self.day: int | None = None
        self.day_start_equity: Decimal | None = None
        self.peak: Decimal | None = None
        self._samples: deque[float] = deque()
        self._last_sample_at: float | None = None
        self.var_value: float | None = None

    # --- measures -----------------------------------------------------------------------
    @property
    def daily_loss(self) -> Decimal | None:
        """Loss since the day started (or since the last resume); negative is a gain."""
        if self.equity is None or self.day_start_equity is None:
            return None
        return self.day_start_equity - self.equity

    @property
    def drawdown(self) -> Decimal | None:
        """Fall from the peak as a fraction of the peak (0.1 = 10 % below)."""
        if self.equity is None or self.peak is None or self.peak <= 0:
            return None
        return max(Decimal(0), (self.peak - self.equity) / self.peak)

    def var(self, limits: RiskLimits, method: str | None = None) -> float | None:
        """VaR of the sampled equity curve as a positive loss fraction, or None without enough history."""
        cfg = limits.var
        returns = simple_returns(list(self._samples)[-(cfg.window + 1) :])
        returns = returns[~np.isnan(returns)]
        if returns.size < cfg.min_samples:
            return None
        estimate = historical_var if (method or cfg.method) == "historical" else parametric_var
        value = estimate(returns, cfg.level)
        return None if math.isnan(value) else value

    # --- updates ------------------------------------------------------------------------
    def update(self, equity: Decimal, utc_ms: int, now: float, limits: RiskLimits) -> list[TripRequest]:
        """Take a new equity figure; `utc_ms` decides the trading day, `now` the VaR sampling."""
        self.equity = equity
        day = trading_day(utc_ms, limits.day_start_hour_utc)
        if self.day is None or day > self.day:
            self.day = day
            self.day_start_equity = equity
        if self.peak is None or equity > self.peak:
            self.peak = equity
        if self._sample(equity, now, limits):
            # VaR moves only with a new sample; numpy work on every mark would be wasted.
            self.var_value = self.var(limits)
        return self._evaluate(limits)

    def _sample(self, equity: Decimal, now: float, limits: RiskLimits) -> bool:
        cfg = limits.var
        if self._last_sample_at is not None and now - self._last_sample_at < cfg.sample_seconds:
            return False
        self._last_sample_at = now
        self._samples.append(float(equity))
        while len(self._samples) > cfg.window + 1:
            self._samples.popleft()
        return True

    def _evaluate(self, limits: RiskLimits) -> list[TripRequest]:
        trips: list[TripRequest] = []
        cfg_loss = limits.daily_loss
        loss = self.daily_loss
        if cfg_loss.enabled and cfg_loss.limit is not None and loss is not None and loss > cfg_loss.limit:
            trips.append(
                TripRequest(
                    breaker=DAILY_LOSS,
                    detail=(
                        f"daily loss {loss} exceeds limit {cfg_loss.limit} "
                        f"(equity {self.equity}, day start {self.day_start_equity})"
                    ),
                    action=cfg_loss.action,
                )
            )
        cfg_dd = limits.drawdown
        dd = self.drawdown
        if cfg_dd.enabled and cfg_dd.limit is not None and dd is not None and dd > cfg_dd.limit:
            trips.append(
                TripRequest(
                    breaker=DRAWDOWN,
                    detail=(
                        f"drawdown {_pct(dd)} from peak {self.peak} exceeds limit {_pct(cfg_dd.limit)} "
                        f"(equity {self.equity})"
                    ),
                    action=cfg_dd.action,
                )
            )
        cfg_var = limits.var
        var_value = self.var_value
        if cfg_var.enabled and cfg_var.limit is not None and var_value is not None and var_value > float(cfg_var.limit):
            trips.append(
                TripRequest(
                    breaker=VAR,
                    detail=(
                        f"{cfg_var.method} VaR {var_value:.2%} at {cfg_var.level:.0%} exceeds limit "
                        f"{_pct(cfg_var.limit)} over {len(self._samples) - 1} returns"
                    ),
                    action=cfg_var.action,
                )
            )
        return trips

    def rearm(self) -> None:
        if self.equity is not None:
            self.day_start_equity = self.equity
            self.peak = self.equity
        self._samples.clear()
        self._last_sample_at = None
        self.var_value = None

    @property
    def sample_count(self) -> int:
        return len(self._samples)


class RejectWindow:
    """Venue rejects within a sliding window of monotonic time."""

    def __init__(self) -> None:
        self._times: deque[float] = deque()

    def count(self, now: float, limits: RiskLimits) -> int:
        start = now - limits.rejects.window_seconds
        while self._times and self._times[0] <= start:
            self._times.popleft()
        return len(self._times)

    def record(self, now: float, limits: RiskLimits, detail: str) -> list[TripRequest]:
        self._times.append(now)
        cfg = limits.rejects
        count = self.count(now, limits)
        if cfg.enabled and count > cfg.max_rejects:
            return [
                TripRequest(
                    breaker=REJECTS,
                    detail=(
                        f"{count} venue rejects within {cfg.window_seconds:g} s exceed {cfg.max_rejects}; "
                        f"last: {detail}"
                    ),
                    action=cfg.action,
                )
            ]
        return []

    def rearm(self) -> None:
        self._times.clear()


def _pct(fraction: Decimal) -> str:
    return f"{(fraction * 100).quantize(Decimal('0.01'))} %"
