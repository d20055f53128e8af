"""Execution parameters: validation names the field, decoding, amending."""

from decimal import Decimal as D

import pytest

from actors.algos import (
    ChildStyle,
    ExecutionParams,
    IcebergParams,
    ParameterError,
    PovParams,
    TwapParams,
    Urgency,
    VwapParams,
    amend,
    make_algorithm,
    parse_params,
    validate,
)
from daemon.model import Instrument, Side

BTC = Instrument(venue="sim", symbol="BTCUSDT", base="BTC", quote="USDT", tick_size=D("0.01"),
                 step_size=D("0.00001"), min_qty=D("0.0001"), min_notional=D("5"))


def twap(**overrides):
    fields = dict(instrument=BTC, side=Side.BUY, quantity=D("1"), duration=3600.0, algo=TwapParams(slices=60))
    fields.update(overrides)
    return ExecutionParams(**fields)


def rejected(params) -> ParameterError:
    with pytest.raises(ParameterError) as info:
        validate(params)
    return info.value


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        (dict(quantity=D("1.000005")), "quantity"),
        (dict(quantity=D("-1")), "quantity"),
        (dict(quantity=D("0.00005")), "quantity"),  # below min_qty
        (dict(quantity=None), "quantity"),
        (dict(quote_amount=D("1000")), "quantity"),  # both given
        (dict(quantity=None, quote_amount=D("1")), "quote_amount"),  # below min notional
        (dict(limit_price=D("60000.005")), "limit_price"),
        (dict(duration=None), "duration"),
        (dict(end=10.0), "duration"),  # both end and duration
        (dict(duration=None, start=100.0, end=50.0), "end"),
        (dict(duration=-5.0), "duration"),
        (dict(algo=TwapParams(slices=0)), "slices"),
        (dict(algo=TwapParams(slices=10, interval=60.0)), "slices"),
        (dict(algo=TwapParams(interval=7200.0)), "interval"),
        (dict(algo=TwapParams(catch_up=0.5)), "catch_up"),
        (dict(size_jitter=0.5), "size_jitter"),
        (dict(time_jitter=-0.1), "time_jitter"),
        (dict(collar_bps=0.0), "collar_bps"),
        (dict(max_child=D("0.00005")), "max_child"),
        (dict(min_child=D("0.2"), max_child=D("0.1")), "min_child"),
        (dict(max_live_children=0), "max_live_children"),
        (dict(replace_after=float("nan")), "replace_after"),
        (dict(algo=VwapParams(profile=(1.0, -1.0))), "profile"),
        (dict(algo=VwapParams(profile=(0.0, 0.0))), "profile"),
        (dict(algo=VwapParams(max_participation=1.0)), "max_participation"),
        (dict(algo=VwapParams(expected_volume=D(0))), "expected_volume"),
        (dict(algo=IcebergParams(display=D("0.01"))), "limit_price"),
        (dict(limit_price=D("60000"), algo=IcebergParams(display=D("2"))), "display"),
        (dict(limit_price=D("60000"), algo=IcebergParams(display=D("0.00001"))), "display"),
        (dict(limit_price=D("40000"), algo=IcebergParams(display=D("0.0001"))), "display"),  # 4 USDT < 5
        (dict(limit_price=D("60000"), algo=IcebergParams(display=D("0.01"), native=True)), "native"),
        (dict(algo=PovParams(rate=1.0)), "rate"),
        (dict(algo=PovParams(rate=0.1, band=1.0)), "band"),
        (dict(instrument=Instrument(venue="sim", symbol="X", base="X", quote="Y", tick_size=D("1"),
                                    step_size=D("1"), trading=False)), "instrument"),
    ],
)
def test_each_bad_parameter_is_named(overrides, param):
    error = rejected(twap(**overrides))
    assert error.param == param
    assert param in str(error)


def test_off_grid_quantity_suggests_the_neighbouring_valid_values():
    error = rejected(twap(quantity=D("1.000005")))
    assert "1.00000" in error.message and "1.00001" in error.message


def test_native_iceberg_is_accepted_where_the_venue_allows_it():
    iceberg_venue = Instrument(venue="sim", symbol="BTCUSDT", base="BTC", quote="USDT", tick_size=D("0.01"),
                               step_size=D("0.00001"), iceberg_allowed=True)
    params = twap(instrument=iceberg_venue, duration=None, limit_price=D("60000"),
                  algo=IcebergParams(display=D("0.01"), native=True))
    validate(params)
    assert rejected(twap(instrument=iceberg_venue, duration=None, quantity=None, quote_amount=D("1000"),
                         limit_price=D("60000"), algo=IcebergParams(display=D("0.01"), native=True))).param == "native"


def test_pov_and_iceberg_run_without_a_horizon():
    validate(twap(duration=None, algo=PovParams(rate=0.1)))
    validate(twap(duration=None, limit_price=D("60000"), algo=IcebergParams(display=D("0.0001"))))  # 6 USDT


def test_end_time_and_derived_properties():
    params = twap(start=100.0)
    assert params.end_time == 3700.0 and params.horizon == 3600.0
    assert params.venue == "sim" and params.symbol == "BTCUSDT" and params.kind == "twap"
    assert params.total == D("1") and not params.in_quote
    quote = twap(quantity=None, quote_amount=D("5000"))
    assert quote.in_quote and quote.total == D("5000")


def test_urgency_decides_the_end_behaviour_unless_told():
    assert not twap(urgency=Urgency.LOW).finishes_at_end
    assert not twap(urgency=Urgency.MEDIUM).finishes_at_end
    assert twap(urgency=Urgency.HIGH).finishes_at_end
    assert not twap(urgency=Urgency.HIGH, finish_at_end=False).finishes_at_end
    assert twap(urgency=Urgency.LOW, finish_at_end=True).finishes_at_end


def test_resting_children_are_post_only_except_iceberg_tips():
    assert twap().posts_only
    assert not twap(duration=None, limit_price=D("60000"), algo=IcebergParams(display=D("0.1"))).posts_only
    assert not twap(post_only=False).posts_only


def test_style_escalation_saturates_at_cross():
    assert ChildStyle.PASSIVE.escalated(1) is ChildStyle.MID
    assert ChildStyle.PASSIVE.escalated(5) is ChildStyle.CROSS
    assert ChildStyle.MID.escalated(0) is ChildStyle.MID


def test_parse_params_decodes_strings_and_the_algo_tag():
    params = parse_params(
        {"side": "BUY", "quantity": "0.5", "duration": 1800, "limit_price": "64000",
         "algo": {"kind": "twap", "slices": 30}},
        BTC,
    )
    assert params.quantity == D("0.5") and params.limit_price == D("64000")
    assert isinstance(params.algo, TwapParams) and params.algo.slices == 30
    assert isinstance(make_algorithm(params).params, ExecutionParams)


@pytest.mark.parametrize(
    ("args", "param"),
    [
        ({"side": "BUY", "quantity": "1", "duration": 60, "algo": {"kind": "twap", "slicez": 3}}, "slicez"),
        ({"side": "BUY", "quantity": "1", "duration": 60, "colour": "red", "algo": {"kind": "twap"}}, "colour"),
        ({"side": "BUY", "quantity": "1", "duration": 60}, "algo"),
        ({"side": "BUY", "quantity": "1", "duration": 60, "algo": {"kind": "pov", "rate": "fast"}}, "rate"),
        ({"side": "BUY", "quantity": "1", "duration": 60, "algo": {"kind": "pov", "rate": 2}}, "rate"),
        ({"side": "BUY", "quantity": "1", "instrument": {}, "algo": {"kind": "pov", "rate": 0.1}}, "instrument"),
    ],
)
def test_parse_params_names_the_bad_field(args, param):
    with pytest.raises(ParameterError) as info:
        parse_params(args, BTC)
    assert info.value.param == param


def test_amend_validates_and_replaces_duration_by_end():
    params = twap(start=0.0, limit_price=D("60000"))
    later = amend(params, end=7200.0, limit_price=D("61000"))
    assert later.end_time == 7200.0 and later.duration is None and later.limit_price == D("61000")
    assert amend(params, limit_price=None).limit_price is None
    with pytest.raises(ParameterError) as info:
        amend(params, limit_price=D("61000.001"))
    assert info.value.param == "limit_price"
    with pytest.raises(ParameterError):
        amend(params, end=-1.0)
