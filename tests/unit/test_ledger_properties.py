"""Properties of position accounting over arbitrary fill sequences.

The reference the ledger is checked against is computed here from the cash
flows alone (what was paid, received and held), so it does not share the
ledger's lot bookkeeping.
"""

from decimal import Decimal as D

from hypothesis import given
from hypothesis import strategies as st

from actors.ledger import CostMethod, Ledger
from daemon.messages import Fill
from daemon.model import Instrument, Side

BTCUSDT = Instrument(venue="sim", symbol="BTCUSDT", base="BTC", quote="USDT", tick_size=D("0.01"), step_size=D("0.001"))

# Lots cost price x quantity exactly; only the average method divides, so the
# methods may differ by rounding far below any tick.
TOLERANCE = D("1e-12")

fee_kinds = st.sampled_from(["none", "quote", "base", "third", "third-unpriced"])


@st.composite
def fill_specs(draw):
    side = draw(st.sampled_from([Side.BUY, Side.SELL]))
    qty = D(draw(st.integers(1, 5_000))) / 1000
    price = D(draw(st.integers(1_000, 200_000))) / 100
    kind = draw(fee_kinds)
    return side, qty, price, kind


def to_fill(i, spec):
    side, qty, price, kind = spec
    fee, asset, rate = D(0), "", None
    if kind == "quote":
        fee, asset = (qty * price / 1000).quantize(D("0.00000001")), "USDT"
    elif kind == "base":
        fee, asset = qty / 1000, "BTC"
    elif kind.startswith("third"):
        fee, asset = D("0.0015"), "BNB"
        rate = D("312.5") if kind == "third" else None
    f = Fill(
        venue="sim",
        symbol="BTCUSDT",
        client_order_id="td-p-1",
        trade_id=str(i),
        side=side,
        price=price,
        qty=qty,
        fee=fee,
        fee_asset=asset,
        is_maker=False,
        venue_ms=i,
    )
    return f, rate


def build(method, fills, mark):
    book = Ledger([BTCUSDT], method=method)
    for f, rate in fills:
        book.apply_fill(f, fee_rate=rate)
    book.set_mark("sim", "BTCUSDT", mark)
    return book


def cash_flow_pnl(fills, mark):
    """PnL from first principles: quote paid and received, fees valued, base held at the mark."""
    quote = D(0)
    held = D(0)
    for f, rate in fills:
        quote -= f.side.sign * f.qty * f.price
        held += f.side.sign * f.qty
        if f.fee_asset == "USDT":
            quote -= f.fee
        elif f.fee_asset == "BTC":
            held -= f.fee
        elif f.fee_asset == "BNB" and rate is not None:
            quote -= f.fee * rate
    return quote + held * mark, held


sequences = st.lists(fill_specs(), min_size=1, max_size=40)
marks = st.integers(1_000, 200_000).map(lambda n: D(n) / 100)


@given(sequences, marks)
def test_realised_plus_unrealised_is_the_same_under_every_method(specs, mark):
    fills = [to_fill(i, s) for i, s in enumerate(specs)]
    expected, held = cash_flow_pnl(fills, mark)
    for method in CostMethod:
        pos = build(method, fills, mark).position("sim", "BTCUSDT")
        total = pos.realised_pnl + pos.unrealised_pnl
        assert abs(total - expected) <= TOLERANCE, (method, total, expected)
        assert pos.quantity == held


@given(sequences, marks)
def test_quantity_and_balances_are_conserved(specs, mark):
    fills = [to_fill(i, s) for i, s in enumerate(specs)]
    bought = sum((f.qty for f, _ in fills if f.side is Side.BUY), D(0))
    sold = sum((f.qty for f, _ in fills if f.side is Side.SELL), D(0))
    base_fees = sum((f.fee for f, _ in fills if f.fee_asset == "BTC"), D(0))
    bnb_fees = sum((f.fee for f, _ in fills if f.fee_asset == "BNB"), D(0))
    for method in CostMethod:
        book = build(method, fills, mark)
        pos = book.position("sim", "BTCUSDT")
        assert (pos.bought, pos.sold) == (bought, sold)
        assert pos.quantity == bought - sold - base_fees
        assert book.balance("sim", "BTC") == pos.quantity
        assert book.balance("sim", "BNB") == -bnb_fees
        # The cost basis is never negative, and is zero exactly when flat
        # (no rounding dust left on a closed position).
        assert pos.cost_basis >= 0
        assert (pos.cost_basis == 0) == (pos.quantity == 0)


@given(sequences, marks)
def test_round_trips_add_up_to_realised_pnl_once_flat(specs, mark):
    fills = [to_fill(i, s) for i, s in enumerate(specs)]
    held = cash_flow_pnl(fills, mark)[1]
    if held != 0:  # close out at the mark, so every lot is closed
        side = Side.SELL if held > 0 else Side.BUY
        closing = Fill(
            venue="sim", symbol="BTCUSDT", client_order_id="td-p-2", trade_id="close", side=side,
            price=mark, qty=abs(held), fee=D(0), fee_asset="", is_maker=False, venue_ms=10**6,
        )
        fills.append((closing, None))
    per_method = []
    for method in CostMethod:
        book = build(method, fills, mark)
        pos = book.position("sim", "BTCUSDT")
        assert pos.quantity == 0
        trips = book.closed_trades
        assert abs(sum((t.realised_pnl for t in trips), D(0)) - pos.realised_pnl) <= TOLERANCE
        per_method.append([(t.side, t.quantity, t.opened_ms, t.closed_ms) for t in trips])
    # Round trips are a fact of the fills, not of the cost method.
    assert per_method[0] == per_method[1] == per_method[2]


@given(sequences, marks, st.data())
def test_replay_with_duplicates_rebuilds_the_same_state(specs, mark, data):
    fills = [to_fill(i, s) for i, s in enumerate(specs)]
    # A journal replay after a crash may deliver some fills again.
    repeats = data.draw(st.lists(st.integers(0, len(fills) - 1), max_size=10))
    noisy = list(fills)
    for index in repeats:
        original = next(k for k, item in enumerate(noisy) if item is fills[index])
        noisy.insert(data.draw(st.integers(original + 1, len(noisy))), fills[index])
    clean = build(CostMethod.AVERAGE, fills, mark)
    replayed = build(CostMethod.AVERAGE, noisy, mark)
    assert replayed.positions(include_flat=True) == clean.positions(include_flat=True)
    assert replayed.balances() == clean.balances()
    assert replayed.closed_trades == clean.closed_trades
