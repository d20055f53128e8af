"""The journal read the position keeper replays its balance adoptions from."""

from decimal import Decimal as D

from daemon.journal_store import BalanceSnapshot, JournalStore
from daemon.messages import BalanceUpdate


def balance(venue, asset, free, locked="0"):
    return BalanceUpdate(venue=venue, asset=asset, free=D(free), locked=D(locked), venue_ms=7)


def test_balance_snapshots_come_back_in_order_filtered_by_venue_and_source():
    with JournalStore.open(":memory:") as store:
        store.apply(
            [
                BalanceSnapshot(venue="sim", balances=(balance("sim", "USDT", "0"),), source="positions.ledger"),
                BalanceSnapshot(venue="sim", balances=(balance("sim", "USDT", "10"), balance("sim", "BTC", "1", "0.5")), source="positions.adopted"),
                balance("sim", "USDT", "11"),  # a venue push, journaled by the gateway
                BalanceSnapshot(venue="bin", balances=(), source="positions.adopted"),  # an empty snapshot is kept too
            ]
        )
        everything = store.balance_snapshots()
        assert [(s.venue, s.source, len(s.balances)) for s in everything] == [
            ("sim", "positions.ledger", 1),
            ("sim", "positions.adopted", 2),
            ("sim", "stream", 1),
            ("bin", "positions.adopted", 0),
        ]
        assert [s.seq for s in everything] == sorted(s.seq for s in everything)
        adopted = store.balance_snapshots(venue="sim", sources=("positions.adopted",))
        assert [b for s in adopted for b in s.balances] == [balance("sim", "USDT", "10"), balance("sim", "BTC", "1", "0.5")]
        assert store.balance_snapshots(sources=()) == []
        # the latest figure per asset is still the venue's
        assert {(b.asset, b.free) for b in store.latest_balances("sim")} == {("USDT", D("11")), ("BTC", D("1"))}
