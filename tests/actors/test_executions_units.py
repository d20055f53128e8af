"""The execution manager's pure parts: operator durations and times, market figures, config, ids."""

from __future__ import annotations

import datetime as dt
import math
import random
from decimal import Decimal as D

import pytest

import daemon.plugins  # noqa: F401  (registers every config section)
from actors.algos import ParameterError
from actors.executions import MarketStats, new_exec_id, option_name, parse_duration, parse_time
from daemon.config import ConfigError, parse
from daemon.messages import MarketTrade, Quote
from daemon.model import Side, client_order_id

NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), (90, 90.0), (2.5, 2.5), ("45s", 45.0), ("30m", 1800.0), ("2h", 7200.0), ("1h30m", 5400.0),
     ("1d", 86400.0), ("250ms", 0.25), (" 1H 5M ", 3900.0)],
)  # fmt: skip
def test_durations_read_as_operators_write_them(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["soon", "-5", "0", "1x", "m30", "", "30m-1s", "nan", "inf"])
def test_a_bad_duration_names_its_option(text):
    with pytest.raises(ParameterError) as caught:
        parse_duration(text, "refill_delay")
    assert caught.value.param == "refill_delay"


def test_times_are_relative_utc_clock_times_iso_or_epoch_ms():
    assert parse_time("+30m", NOW, "end") == NOW + 1800
    assert parse_time("14:30", NOW, "end") == NOW + 2.5 * 3600  # later today, UTC
    assert parse_time("11:00", NOW, "end") == NOW + 23 * 3600  # already past: tomorrow
    assert parse_time("12:00:30", NOW, "end") == NOW + 30
    assert parse_time("2025-06-01T13:00:00Z", NOW, "end") == NOW + 3600
    assert parse_time("2025-06-01T13:00:00", NOW, "end") == NOW + 3600  # naive means UTC
    assert parse_time("2025-06-01T15:00:00+02:00", NOW, "end") == NOW + 3600
    assert parse_time(int((NOW + 60) * 1000), NOW, "end") == NOW + 60
    for bad in ("tomorrow", "25:00", "+soon", "2025-13-01"):
        with pytest.raises(ParameterError) as caught:
            parse_time(bad, NOW, "start")
        assert caught.value.param == "start"


def quote(mid: float, spread: float = 1.0) -> Quote:
    m = D(str(round(mid, 2)))
    half = D(str(spread / 2))
    return Quote(venue="sim", symbol="BTCUSDT", bid=m - half, bid_qty=D(1), ask=m + half, ask_qty=D(1), ts=0.0)


def test_market_stats_measure_daily_volatility_from_sampled_mids():
    rng = random.Random(7)
    per_second = 0.0002  # 2 bps a second: about 5.9% a day
    stats = MarketStats(window=3600)
    mid = 60_000.0
    for t in range(0, 3600):
        mid *= math.exp(rng.gauss(0.0, per_second))
        for sub in range(4):  # several quotes a second: one sample a second is kept
            stats.observe_quote(quote(mid), t + sub / 4)
    assert stats.daily_volatility(3599.9, min_span=300) == pytest.approx(per_second * math.sqrt(86_400), rel=0.1)
    assert MarketStats(3600).daily_volatility(10, min_span=300) is None
    young = MarketStats(3600)
    for t in range(100):
        young.observe_quote(quote(60_000 + t), t)
    assert young.daily_volatility(99, min_span=300) is None  # too little history: use the configured default
    assert young.daily_volatility(99, min_span=60) is not None


def test_market_stats_measure_daily_volume_over_the_window():
    stats = MarketStats(window=600)
    for t in range(0, 1200, 10):  # 1 BTC every 10 s, for 20 minutes
        stats.observe_trade(
            MarketTrade(venue="sim", symbol="BTCUSDT", trade_id=t, price=D(60000), qty=D(1), taker_side=Side.BUY, ts=t), t
        )
    assert stats.daily_volume(1195, min_span=300) == pytest.approx(8640, rel=0.02)
    assert stats.daily_volume(1195, min_span=900) == pytest.approx(8640, rel=0.02)  # the span is capped at the window
    silent = MarketStats(window=600)
    silent.observe_quote(quote(60000), 0)
    assert silent.daily_volume(500, min_span=300) is None  # no trades seen: not a zero-volume market


def test_market_stats_ignore_crossed_quotes():
    stats = MarketStats(window=600)
    stats.observe_quote(Quote(venue="sim", symbol="X", bid=D(10), bid_qty=D(1), ask=D(9), ask_qty=D(1), ts=0.0), 0)
    assert stats.quote is None


def test_the_executions_section_refuses_what_it_cannot_use():
    cfg = parse("[executions]\non_restart = 'interrupt'\nchild_style = 'mid'\n[executions.volatility]\nmax_move_bps = 50\n", "t.toml")
    section = cfg.section("executions")
    assert section.on_restart == "interrupt" and section.child_style == "mid" and section.volatility.max_move_bps == 50
    for text, key in (
        ("[executions]\nfoo = 1\n", "executions.foo"),
        ("[executions]\non_restart = 'never'\n", "executions.on_restart"),
        ("[executions]\nrisk_timeout = 0\n", "executions.risk_timeout"),
        ("[executions]\nchild_style = 'aggressive'\n", "executions.child_style"),
        ("[executions.volatility]\nwindow = -1\n", "executions.volatility.window"),
        ("[executions]\ndaily_volatility = 0\n", "executions.daily_volatility"),
    ):
        with pytest.raises(ConfigError) as caught:
            parse(text, "t.toml")
        assert key in str(caught.value), str(caught.value)


def test_execution_ids_are_short_and_fit_any_client_order_id():
    ids = {new_exec_id() for _ in range(1000)}
    assert len(ids) == 1000
    for exec_id in list(ids)[:50]:
        assert len(exec_id) == 8 and int(exec_id, 16) >= 0
        assert len(client_order_id(exec_id, 10**12)) <= 36


def test_option_names_are_the_operators_words():
    assert option_name("limit_price") == "limit"
    assert option_name("child_style") == "style"
    assert option_name("max_participation") == "max-participation"
    assert option_name("quantity") == "quantity"
