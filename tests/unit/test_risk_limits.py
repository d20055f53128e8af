"""The `[risk]` config section and `tradectl risk set KEY VALUE`."""

import tomllib
from decimal import Decimal as D

import msgspec
import pytest

from actors.risk_limits import (
    InstrumentLimits,
    LimitError,
    RiskLimits,
    decode_limits,
    get_limit,
    limit_keys,
    set_limit,
)

TOML = """
max_order_qty = "2"
max_order_notional = 50000
price_collar_bps = 150
max_position = "10"
max_gross_exposure = "250000.50"
max_orders_per_second = 5
stale_quote_seconds = 3.5
day_start_hour_utc = 8

[instruments."binance:ETHUSDT"]
max_order_qty = "30"
max_open_orders = 4

[daily_loss]
limit = "5000"

[drawdown]
limit = "0.1"
action = "halt"

[var]
limit = "0.05"
level = 0.95
method = "parametric"
window = 100
min_samples = 20
"""


def test_decodes_the_config_section_with_decimals_and_overrides():
    limits = decode_limits(tomllib.loads(TOML))
    assert limits.max_order_notional == D(50000)
    assert limits.max_gross_exposure == D("250000.50")
    assert limits.day_start_hour_utc == 8
    assert limits.drawdown.limit == D("0.1") and limits.drawdown.action == "halt"
    assert limits.var.method == "parametric" and limits.var.level == 0.95
    # the override wins where it says something, the default elsewhere
    assert limits.order_qty_limit("binance", "ETHUSDT") == D(30)
    assert limits.order_qty_limit("binance", "BTCUSDT") == D(2)
    assert limits.position_limit("binance", "ETHUSDT") == D(10)
    assert limits.open_orders_limit("binance", "ETHUSDT") == 4
    assert limits.open_orders_limit("binance", "BTCUSDT") == 50


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("max_order_qtty = 1", "max_order_qtty"),
        ("[daily_loss]\nlimitt = 1", "limitt"),
        ('max_position = "-1"', "max_position must be zero or more"),
        ('[instruments."BTCUSDT"]\nmax_position = 1', "<venue>:<symbol>"),
        ("[var]\nlevel = 0.9", "var.level must be one of 0.95, 0.99"),
        ("day_start_hour_utc = 24", "day_start_hour_utc"),
        ('[drawdown]\nlimit = "10"', "strictly between 0 and 1"),
    ],
)
def test_config_errors_name_the_key(text, fragment):
    with pytest.raises(msgspec.ValidationError) as err:
        decode_limits(tomllib.loads(text))
    assert fragment in str(err.value)


def test_set_limit_returns_new_limits_and_leaves_the_old_ones_alone():
    before = RiskLimits()
    after = set_limit(before, "max_order_notional", "100000")
    assert after.max_order_notional == D(100000)
    assert before.max_order_notional is None
    assert after.max_orders_per_second == before.max_orders_per_second


def test_set_limit_parses_each_kind_of_value():
    limits = RiskLimits()
    assert set_limit(limits, "daily_loss.limit", " 2500.5 ").daily_loss.limit == D("2500.5")
    assert set_limit(limits, "rejects.enabled", "off").rejects.enabled is False
    assert set_limit(limits, "rejects.enabled", "true").rejects.enabled is True
    assert set_limit(limits, "max_open_orders", "12").max_open_orders == 12
    assert set_limit(limits, "stale_quote_seconds", "2.5").stale_quote_seconds == 2.5
    assert set_limit(limits, "var.method", "parametric").var.method == "parametric"
    assert set_limit(limits, "var.level", "0.95").var.level == 0.95
    assert set_limit(limits, "daily_loss.action", "halt").daily_loss.action == "halt"
    assert set_limit(limits, "price_collar_bps", "none").price_collar_bps is None
    assert set_limit(limits, "max_orders_per_second", "unlimited").max_orders_per_second is None


def test_set_limit_creates_and_updates_an_instrument_override():
    limits = set_limit(RiskLimits(), "instruments.binance:BTCUSDT.max_position", "3")
    assert limits.instruments == {"binance:BTCUSDT": InstrumentLimits(max_position=D(3))}
    limits = set_limit(limits, "instruments.binance:BTCUSDT.max_order_qty", "0.5")
    assert limits.instruments["binance:BTCUSDT"] == InstrumentLimits(max_position=D(3), max_order_qty=D("0.5"))
    assert limits.position_limit("binance", "BTCUSDT") == D(3)


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("max_order_qtty", "1", "unknown risk limit 'max_order_qtty'"),
        ("daily_loss.limitt", "1", "unknown risk limit"),
        ("max_position.x", "1", "has no sub-keys"),
        ("var", "1", "is a section"),
        ("instruments.binance:BTCUSDT", "1", "needs an instrument and a field"),
        ("instruments.BTCUSDT.max_position", "1", "<venue>:<symbol>"),
        ("instruments.binance:BTCUSDT.max_pos", "1", "unknown risk limit"),
        ("max_order_qty", "abc", "expects a decimal number"),
        ("max_order_qty", "-1", "zero or more"),
        ("max_order_qty", "NaN", "finite"),
        ("max_open_orders", "2.5", "whole number"),
        ("max_open_orders", "-2", ">= 0"),
        ("rejects.enabled", "maybe", "true or false"),
        ("var.method", "montecarlo", "historical, parametric"),
        ("var.level", "0.97", "0.95, 0.99"),
        ("var.window", "10", "cannot exceed var.window"),
        ("drawdown.limit", "1.5", "strictly between 0 and 1"),
        ("stale_quote_seconds", "inf", "finite"),
        ("stale_quote_seconds", "none", "cannot be removed"),
        ("day_start_hour_utc", "25", "<= 23"),
        ("daily_loss.action", "panic", "reduce, halt, kill"),
    ],
)
def test_set_limit_errors_name_the_key(key, value, fragment):
    with pytest.raises(LimitError) as err:
        set_limit(RiskLimits(), key, value)
    assert err.value.key == key
    assert key in str(err.value)
    assert fragment in str(err.value)


def test_every_listed_key_accepts_its_current_value():
    limits = RiskLimits()
    for key in limit_keys():
        key = key.replace("<venue>:<symbol>", "sim:BTCUSDT")
        node = msgspec.to_builtins(limits)
        for part in key.split("."):
            node = node.get(part, None) if isinstance(node, dict) else None
        text = "none" if node is None else str(node).lower()
        assert msgspec.to_builtins(set_limit(limits, key, text)) == msgspec.to_builtins(limits) or key.startswith(
            "instruments."
        ), key


def test_get_limit_reads_the_value_a_key_names():
    limits = set_limit(RiskLimits(), "instruments.sim:BTCUSDT.max_position", "3")
    assert get_limit(limits, "instruments.sim:BTCUSDT.max_position") == D(3)
    assert get_limit(limits, "instruments.sim:ETHUSDT.max_position") is None
    assert get_limit(limits, "var.method") == "historical"
    assert get_limit(limits, "max_orders_per_second") == 20
    with pytest.raises(LimitError):
        get_limit(limits, "nope")
