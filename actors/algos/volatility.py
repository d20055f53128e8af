"""Pause an execution while the market is too jumpy to trade sensibly.

The guard watches the mid over a sliding window and measures two things:
the realised volatility (the square root of the summed squared log returns
between successive mids, in bps, not annualised) and the net move of the
mid across the window, in bps. Either above its threshold pauses; resuming
needs both to stay below a lower level (`resume_fraction` of the
thresholds) for `calm_for` seconds, so that a market hovering around the
threshold does not flip the execution on and off (hysteresis). A silent feed
is not a calm one: resuming also needs `min_samples` mids in the window.

Times are the caller's clock, passed in.
"""

from __future__ import annotations

import collections
import math
from decimal import Decimal

import msgspec

BPS = 10_000.0


class VolatilityConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    window: float = 60.0
    max_volatility_bps: float | None = 50.0
    max_move_bps: float | None = 100.0
    resume_fraction: float = 0.5
    calm_for: float = 30.0
    min_samples: int = 3

    def validate(self) -> None:
        if not (math.isfinite(self.window) and self.window > 0):
            raise ValueError(f"window: must be a positive number of seconds, got {self.window}")
        for name in ("max_volatility_bps", "max_move_bps"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: must be positive (or unset to disable), got {value}")
        if self.max_volatility_bps is None and self.max_move_bps is None:
            raise ValueError("max_volatility_bps: set it or max_move_bps, or the guard never pauses")
        if not (0 < self.resume_fraction <= 1):
            raise ValueError(f"resume_fraction: must be in (0, 1], got {self.resume_fraction}")
        if not (math.isfinite(self.calm_for) and self.calm_for >= 0):
            raise ValueError(f"calm_for: must be non-negative seconds, got {self.calm_for}")
        if self.min_samples < 2:
            raise ValueError(f"min_samples: must be at least 2, got {self.min_samples}")


class GuardVerdict(msgspec.Struct, frozen=True, kw_only=True):
    """The guard's view now; `changed` is True on the verdict that pauses or resumes."""

    paused: bool
    changed: bool
    reason: str
    volatility_bps: float
    move_bps: float
    samples: int


class VolatilityGuard:
    def __init__(self, config: VolatilityConfig | None = None) -> None:
        self.config = config or VolatilityConfig()
        self.config.validate()
        self._mids: collections.deque[tuple[float, float]] = collections.deque()  # (t, log mid)
        self._returns: collections.deque[tuple[float, float]] = collections.deque()  # (t, squared log return)
        self._sum_sq = 0.0
        self._paused = False
        self._reason = ""
        self._calm_since: float | None = None
        self.ignored = 0

    @property
    def paused(self) -> bool:
        return self._paused

    def observe(self, t: float, mid: Decimal | float) -> GuardVerdict:
        """Add a mid seen at `t` and judge. Out-of-order or non-positive mids are ignored."""
        value = float(mid)
        last_t = self._mids[-1][0] if self._mids else -math.inf
        if not (math.isfinite(value) and value > 0 and math.isfinite(t)) or t < last_t:
            self.ignored += 1
            return self.assess(max(t, last_t) if math.isfinite(t) else last_t)
        log_mid = math.log(value)
        if self._mids:
            r = log_mid - self._mids[-1][1]
            self._returns.append((t, r * r))
            self._sum_sq += r * r
        self._mids.append((t, log_mid))
        return self.assess(t)

    def measure(self, now: float) -> tuple[float, float, int]:
        """(realised volatility bps, |move| bps, samples) over the window ending at `now`."""
        horizon = now - self.config.window
        while self._mids and self._mids[0][0] < horizon:
            self._mids.popleft()
        while self._returns and self._returns[0][0] < horizon:
            self._sum_sq -= self._returns.popleft()[1]
        if not self._returns:
            self._sum_sq = 0.0
        volatility = math.sqrt(max(self._sum_sq, 0.0)) * BPS
        move = abs(self._mids[-1][1] - self._mids[0][1]) * BPS if len(self._mids) > 1 else 0.0
        return volatility, move, len(self._mids)

    def assess(self, now: float) -> GuardVerdict:
        """Judge at `now`: the window slides with time even when no mid arrives."""
        cfg = self.config
        volatility, move, samples = self.measure(now)
        changed = False
        if not self._paused:
            breach = self._breach(volatility, move, 1.0)
            if breach:
                self._paused, changed, self._reason = True, True, breach
                self._calm_since = None
        else:
            calm = not self._breach(volatility, move, cfg.resume_fraction) and samples >= cfg.min_samples
            if not calm:
                self._calm_since = None
            else:
                if self._calm_since is None:
                    self._calm_since = now
                if now - self._calm_since >= cfg.calm_for:
                    self._paused, changed = False, True
                    self._reason = (
                        f"calm for {now - self._calm_since:.0f} s: volatility {volatility:.1f} bps, "
                        f"move {move:.1f} bps over {cfg.window:.0f} s"
                    )
                    self._calm_since = None
        return GuardVerdict(
            paused=self._paused,
            changed=changed,
            reason=self._reason,
            volatility_bps=volatility,
            move_bps=move,
            samples=samples,
        )

    def _breach(self, volatility: float, move: float, scale: float) -> str:
        cfg = self.config
        if cfg.max_volatility_bps is not None and volatility > cfg.max_volatility_bps * scale:
            return (
                f"realised volatility {volatility:.1f} bps over {cfg.window:.0f} s "
                f"is above {cfg.max_volatility_bps * scale:.1f} bps"
            )
        if cfg.max_move_bps is not None and move > cfg.max_move_bps * scale:
            return f"mid moved {move:.1f} bps in {cfg.window:.0f} s, above {cfg.max_move_bps * scale:.1f} bps"
        return ""
