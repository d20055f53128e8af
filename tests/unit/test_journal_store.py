"""The journal's storage, without trio: schema, idempotency, queries, failures."""

from __future__ import annotations

import sqlite3
from decimal import Decimal as D

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon.journal import journal_path
from daemon.journal_store import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    BalanceSnapshot,
    CommandResult,
    JournalConflict,
    JournalLocked,
    JournalSchemaError,
    JournalStore,
    NewExecution,
    OperatorCommand,
    UnknownCommand,
    UnknownExecution,
    migrate,
)
from daemon.messages import (
    BalanceUpdate,
    BreakerTripped,
    ExecutionCheckpoint,
    ExecutionStateChanged,
    Fill,
    OrderIntent,
    OrderUpdate,
    RiskLimitChanged,
    TradingStateChanged,
)
from daemon.model import OrderStatus, OrderType, Side, TradingState


def intent(seq: int = 0, exec_id: str = "e1", **changes) -> OrderIntent:
    fields = dict(
        client_order_id=f"td-{exec_id}-{seq}",
        exec_id=exec_id,
        seq=seq,
        venue="sim",
        symbol="BTCUSDT",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        quantity=D("0.50"),
        price=D("64000.10"),
    )
    fields.update(changes)
    return OrderIntent(**fields)


def update(cid: str = "td-e1-0", status: OrderStatus = OrderStatus.NEW, filled: str = "0", **changes) -> OrderUpdate:
    fields = dict(
        venue="sim",
        symbol="BTCUSDT",
        client_order_id=cid,
        status=status,
        side=Side.BUY,
        quantity=D("0.50"),
        filled_qty=D(filled),
        price=D("64000.10"),
    )
    fields.update(changes)
    return OrderUpdate(**fields)


def fill(trade_id: str = "1", cid: str = "td-e1-0", **changes) -> Fill:
    fields = dict(
        venue="sim",
        symbol="BTCUSDT",
        client_order_id=cid,
        trade_id=trade_id,
        side=Side.BUY,
        price=D("64000.10"),
        qty=D("0.10"),
        fee=D("0.0001"),
        fee_asset="BTC",
        is_maker=True,
        venue_ms=1_700_000_000_000 + int(trade_id) if trade_id.isdigit() else 0,
    )
    fields.update(changes)
    return Fill(**fields)


def new_execution(exec_id: str = "e1", **changes) -> NewExecution:
    fields = dict(
        exec_id=exec_id,
        algo="TWAP",
        venue="sim",
        symbol="BTCUSDT",
        side=Side.BUY,
        quantity=D("2"),
        params={"duration": 1800, "limit_price": D("64000")},
        by="alice",
    )
    fields.update(changes)
    return NewExecution(**fields)


@pytest.fixture
def store(tmp_path):
    with JournalStore.open(tmp_path / "journal.sqlite") as s:
        yield s


# --- the file ----------------------------------------------------------------------------


def test_a_new_journal_is_wal_with_full_sync_at_the_current_schema(tmp_path):
    path = tmp_path / "state" / "journal.sqlite"
    with JournalStore.open(path) as s:
        conn = s._conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert s.schema_version == SCHEMA_VERSION
    assert path.exists()


def test_a_version_1_file_is_migrated_and_keeps_its_data(tmp_path):
    path = tmp_path / "journal.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, target=1)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.execute(
        "INSERT INTO intents (client_order_id, exec_id, seq, venue, symbol, side, order_type, quantity, price, "
        "time_in_force, reduce_only, recorded_ms) "
        "VALUES ('td-e9-0', 'e9', 0, 'sim', 'BTCUSDT', 'BUY', 'LIMIT', '1', '100', 'GTC', 0, 1)"
    )
    conn.execute(
        "INSERT INTO fills (venue, symbol, client_order_id, trade_id, side, price, qty, fee, fee_asset, is_maker, "
        "venue_ms, recorded_ms) VALUES ('sim', 'BTCUSDT', 'td-e9-0', '77', 'BUY', '100', '1', '0', 'USDT', 0, 5, 6)"
    )
    conn.close()

    with JournalStore.open(path) as s:
        assert s.schema_version == SCHEMA_VERSION
        (migrated,) = s.fills(exec_id="e9")
        assert migrated.fill.trade_id == "77" and migrated.fill.qty == D("1")
        assert s.intent("td-e9-0").quantity == D("1")
        # new writes use the new column too
        s.record_intent(intent(1, exec_id="e9"))
        s.record_fill(fill("78", cid="td-e9-1"))
        assert [f.fill.trade_id for f in s.fills(exec_id="e9")] == ["77", "78"]


def test_a_failing_migration_leaves_the_file_untouched(tmp_path, monkeypatch):
    import daemon.journal_store as journal_store

    path = tmp_path / "journal.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, target=1)
    conn.close()
    broken = journal_store.Migration(
        2, "broken", (*journal_store.MIGRATIONS[1].statements, "CREATE TABLE fills (x)")
    )
    monkeypatch.setattr(journal_store, "MIGRATIONS", (journal_store.MIGRATIONS[0], broken))
    with pytest.raises(sqlite3.OperationalError):
        JournalStore.open(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    columns = [row[1] for row in conn.execute("PRAGMA table_info(fills)")]
    assert "exec_id" not in columns
    conn.close()


def test_a_journal_from_a_newer_version_is_refused(tmp_path):
    path = tmp_path / "journal.sqlite"
    JournalStore.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(JournalSchemaError, match="newer"):
        JournalStore.open(path)


def test_a_file_that_is_not_a_journal_is_refused(tmp_path):
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(JournalSchemaError, match="not a SQLite database"):
        JournalStore.open(garbage)

    other = tmp_path / "other.sqlite"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE notes (text)")
    conn.commit()
    conn.close()
    with pytest.raises(JournalSchemaError, match="not a tradingd journal"):
        JournalStore.open(other)


def test_a_second_writer_is_locked_out_until_the_first_closes(tmp_path):
    path = tmp_path / "journal.sqlite"
    first = JournalStore.open(path)
    with pytest.raises(JournalLocked, match="in use by another process"):
        JournalStore.open(path)
    first.close()
    JournalStore.open(path).close()


def test_journal_path_prefers_override_then_state_directory_then_cwd(monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/tradingd:/var/lib/other")
    assert str(journal_path("/srv/j.sqlite")) == "/srv/j.sqlite"
    assert str(journal_path()) == "/var/lib/tradingd/journal.sqlite"
    monkeypatch.delenv("STATE_DIRECTORY")
    assert str(journal_path()) == "state/journal.sqlite"


def test_integrity_check_and_online_backup(store, tmp_path):
    store.record_intent(intent())
    store.record_fill(fill("1"))
    assert store.integrity_problems() == []
    copy = store.backup(tmp_path / "backups" / "copy.sqlite")
    with JournalStore.open(copy) as restored:
        assert [f.fill for f in restored.fills()] == [f.fill for f in store.fills()]
    with pytest.raises(FileExistsError):
        store.backup(copy)


# --- intents and orders ------------------------------------------------------------------


def test_an_intent_is_journaled_once_and_a_repeat_says_so(store):
    assert store.record_intent(intent()) is True
    assert store.record_intent(intent(ts=123.0)) is False  # same intent, other monotonic time
    assert store.intent("td-e1-0") == intent()
    assert store.intent("td-e1-0").quantity.as_tuple() == D("0.50").as_tuple()  # exact text


def test_a_different_intent_under_a_used_client_order_id_is_a_conflict(store):
    store.record_intent(intent())
    with pytest.raises(JournalConflict, match="td-e1-0"):
        store.record_intent(intent(quantity=D("0.6")))
    assert store.intent("td-e1-0").quantity == D("0.50")


def test_floats_never_reach_the_journal(store):
    with pytest.raises(TypeError, match="never float"):
        store.record_intent(intent(quantity=0.5))
    assert store.intent("td-e1-0") is None


def test_intents_without_ack_are_those_no_venue_spoke_about(store):
    for seq in range(5):
        store.record_intent(intent(seq))
    store.record_intent(intent(0, exec_id="e2", venue="binance"))
    store.record_update(update("td-e1-0", OrderStatus.PENDING_NEW))  # our own state: not an ack
    store.record_update(update("td-e1-1", OrderStatus.NEW))
    store.record_update(update("td-e1-2", OrderStatus.REJECTED, reason="insufficient balance"))
    store.record_fill(fill("5", cid="td-e1-3"))  # a fill proves the venue had it
    assert [i.client_order_id for i in store.intents_without_ack()] == ["td-e1-0", "td-e1-4", "td-e2-0"]
    assert [i.client_order_id for i in store.intents_without_ack("binance")] == ["td-e2-0"]


def test_next_child_seq_is_past_every_journaled_intent(store):
    assert store.next_child_seq("e1") == 0
    for seq in (0, 1, 4):
        store.record_intent(intent(seq))
    assert store.next_child_seq("e1") == 5
    assert [i.seq for i in store.intents("e1")] == [0, 1, 4]


def test_updates_keep_full_history_and_the_latest_state(store):
    cid = "td-e1-0"
    assert store.record_update(update(cid, OrderStatus.PENDING_NEW)) is True
    assert store.record_update(update(cid, OrderStatus.NEW, venue_order_id="9001")) is True
    assert store.record_update(update(cid, OrderStatus.PARTIALLY_FILLED, "0.2")) is True
    assert [o.client_order_id for o in store.open_orders()] == [cid]
    assert store.record_update(update(cid, OrderStatus.FILLED, "0.5", avg_price=D("64000"))) is True
    latest = store.order(cid)
    assert latest.status is OrderStatus.FILLED and latest.filled_qty == D("0.5")
    assert latest.venue_order_id == "9001"  # kept from an earlier update
    assert store.open_orders() == []
    assert [u.status for u in store.order_history(cid)] == [
        OrderStatus.PENDING_NEW,
        OrderStatus.NEW,
        OrderStatus.PARTIALLY_FILLED,
        OrderStatus.FILLED,
    ]


def test_late_updates_do_not_roll_the_latest_state_back(store):
    cid = "td-e1-0"
    store.record_update(update(cid, OrderStatus.NEW))
    assert store.record_update(update(cid, OrderStatus.PENDING_NEW)) is False  # our own echo, late
    store.record_update(update(cid, OrderStatus.PARTIALLY_FILLED, "0.3"))
    assert store.record_update(update(cid, OrderStatus.PARTIALLY_FILLED, "0.2")) is False
    store.record_update(update(cid, OrderStatus.CANCELED, "0.3"))
    assert store.record_update(update(cid, OrderStatus.NEW)) is False
    assert store.order(cid).status is OrderStatus.CANCELED
    assert len(store.order_history(cid)) == 6


def test_open_orders_filter_by_venue_and_symbol(store):
    store.record_update(update("a", OrderStatus.NEW))
    store.record_update(update("b", OrderStatus.NEW, venue="binance"))
    store.record_update(update("c", OrderStatus.UNKNOWN, symbol="ETHUSDT"))
    store.record_update(update("d", OrderStatus.EXPIRED))
    assert [o.client_order_id for o in store.open_orders()] == ["a", "b", "c"]
    assert [o.client_order_id for o in store.open_orders("sim")] == ["a", "c"]
    assert [o.client_order_id for o in store.open_orders("sim", "BTCUSDT")] == ["a"]


# --- fills -------------------------------------------------------------------------------


def test_a_duplicate_fill_is_ignored_and_reported(store):
    store.record_intent(intent())
    assert store.record_fill(fill("1")) is True
    assert store.record_fill(fill("1", ts=5.0)) is False
    assert store.record_fill(fill("1", qty=D("9"))) is False  # first record stays
    assert store.record_fill(fill("1", venue="binance")) is True  # unique per venue
    assert [(f.fill.venue, f.fill.qty) for f in store.fills()] == [("sim", D("0.10")), ("binance", D("0.10"))]


def test_fills_are_listed_in_journal_order_with_filters(store):
    store.record_intent(intent(0))
    store.record_intent(intent(0, exec_id="e2"))
    store.record_fill(fill("3", cid="td-e1-0"))
    store.record_fill(fill("1", cid="td-e2-0"))
    store.record_fill(fill("2", cid="td-e1-0", symbol="ETHUSDT"))
    store.record_fill(fill("4", cid="adopted-order"))
    everything = store.fills()
    assert [f.fill.trade_id for f in everything] == ["3", "1", "2", "4"]
    assert [f.exec_id for f in everything] == ["e1", "e2", "e1", None]
    assert [f.fill.trade_id for f in store.fills(exec_id="e1")] == ["3", "2"]
    assert [f.fill.trade_id for f in store.fills(venue="sim", symbol="ETHUSDT")] == ["2"]
    assert [f.fill.trade_id for f in store.fills(client_order_id="td-e2-0")] == ["1"]
    assert [f.fill.trade_id for f in store.fills(since_ms=1_700_000_000_003)] == ["3", "4"]  # 4: journal time
    first_page = store.fills(limit=2)
    assert [f.fill.trade_id for f in store.fills(after_seq=first_page[-1].seq)] == ["2", "4"]


def test_last_trade_id_compares_numeric_ids_as_numbers(store):
    assert store.last_trade_id("sim", "BTCUSDT") is None
    for trade_id in ("9", "10", "8"):
        store.record_fill(fill(trade_id))
    store.record_fill(fill("abc-2", symbol="ETHUSDT"))
    store.record_fill(fill("abc-1", symbol="ETHUSDT"))
    assert store.last_trade_id("sim", "BTCUSDT") == "10"
    assert store.last_trade_id("sim", "ETHUSDT") == "abc-1"  # not numeric: the latest journaled
    assert store.last_trade_ids() == {("sim", "BTCUSDT"): "10", ("sim", "ETHUSDT"): "abc-1"}


# --- executions --------------------------------------------------------------------------


class TwapParams(msgspec.Struct, frozen=True):
    duration: float
    limit_price: D | None = None


def test_an_execution_keeps_its_parameters_state_and_latest_checkpoint(store):
    params = TwapParams(duration=1800.0, limit_price=D("64000.5"))
    assert store.record(new_execution(params=params)) is True
    assert store.record(new_execution(params=params)) is False
    with pytest.raises(JournalConflict):
        store.record(new_execution(params=TwapParams(duration=60.0)))
    store.record(ExecutionStateChanged(exec_id="e1", state="RUNNING", previous="PENDING", by="scheduler"))
    store.record(ExecutionCheckpoint(exec_id="e1", next_seq=3, filled_qty=D("0.3"), algo_state={"slice": 3}))
    store.record(
        ExecutionCheckpoint(exec_id="e1", next_seq=4, filled_qty=D("0.45"), avg_price=D("64000.2"), algo_state={"slice": 4})
    )
    record = store.execution("e1")
    assert record.state == "RUNNING" and record.by == "alice"
    assert record.decode_params(TwapParams) == params
    assert record.checkpoint == ExecutionCheckpoint(
        exec_id="e1", next_seq=4, filled_qty=D("0.45"), avg_price=D("64000.2"), algo_state={"slice": 4}
    )
    assert [t.event.state for t in store.execution_transitions("e1")] == ["RUNNING"]


def test_executions_can_be_listed_unfinished_only(store):
    for exec_id in ("a", "b", "c"):
        store.record(new_execution(exec_id))
    store.record(ExecutionStateChanged(exec_id="b", state="COMPLETED", previous="RUNNING"))
    store.record(ExecutionStateChanged(exec_id="c", state="PAUSED", previous="RUNNING"))
    assert [e.exec_id for e in store.executions()] == ["a", "b", "c"]
    assert [(e.exec_id, e.state) for e in store.executions(unfinished=True)] == [("a", "PENDING"), ("c", "PAUSED")]
    assert store.execution("a").checkpoint is None


def test_state_and_checkpoints_need_a_journaled_execution(store):
    with pytest.raises(UnknownExecution, match="record_execution"):
        store.record(ExecutionStateChanged(exec_id="ghost", state="RUNNING"))
    with pytest.raises(UnknownExecution):
        store.record(ExecutionCheckpoint(exec_id="ghost", next_seq=0, filled_qty=D(0)))


# --- risk, audit, balances ---------------------------------------------------------------


def test_risk_events_round_trip_in_order(store, tmp_path):
    events = [
        TradingStateChanged(state=TradingState.HALTED, previous=TradingState.ACTIVE, reason="kill", by="uid:1000"),
        BreakerTripped(breaker="daily_loss", detail="-5.2% < -5%", action=TradingState.HALTED),
        RiskLimitChanged(limit="max_order_notional", value="25000", previous="10000", by="alice"),
    ]
    for event in events:
        store.record(event)
    assert [e.event for e in store.risk_events()] == events
    assert [e.event for e in store.risk_events(limit=2)] == events[1:]
    kinds = store._conn.execute("SELECT kind, changed_by FROM risk_events ORDER BY id").fetchall()
    assert [tuple(k) for k in kinds] == [
        ("TradingStateChanged", "uid:1000"),
        ("BreakerTripped", "risk"),
        ("RiskLimitChanged", "alice"),
    ]


def test_operator_commands_are_audited_on_arrival_and_completed(store):
    first = store.record(OperatorCommand(uid=1000, user="alice", command="kill", args={"flatten": True}))
    second = store.record(
        OperatorCommand(uid=0, user="root", command="status", args={}, ok=True, result={"state": "ACTIVE"})
    )
    (pending, done) = store.commands()
    assert (pending.id, pending.ok, pending.finished_ms) == (first, None, None)
    assert pending.args == {"flatten": True}
    assert (done.id, done.ok, done.result) == (second, True, {"state": "ACTIVE"})
    store.record(CommandResult(command_id=first, ok=False, result={"still_open": 2}))
    assert store.commands(limit=2)[0].ok is False and store.commands()[0].result == {"still_open": 2}
    with pytest.raises(UnknownCommand):
        store.record(CommandResult(command_id=999, ok=True))


def test_latest_balance_per_venue_and_asset(store):
    def bal(asset, free, venue="sim"):
        return BalanceUpdate(venue=venue, asset=asset, free=D(free), locked=D("0"))

    store.record(BalanceSnapshot(venue="sim", balances=(bal("BTC", "1"), bal("USDT", "1000"))))
    store.record(bal("USDT", "936.5"))
    store.record(BalanceSnapshot(venue="binance", balances=(bal("BTC", "2", "binance"),)))
    assert [(b.venue, b.asset, b.free) for b in store.latest_balances()] == [
        ("binance", "BTC", D("2")),
        ("sim", "BTC", D("1")),
        ("sim", "USDT", D("936.5")),
    ]
    assert [b.asset for b in store.latest_balances("binance")] == ["BTC"]
    with pytest.raises(ValueError, match="holds a balance of binance"):
        store.record(BalanceSnapshot(venue="sim", balances=(bal("BTC", "2", "binance"),)))


# --- batches and failures ----------------------------------------------------------------


def test_a_refused_record_does_not_spoil_its_batch(store):
    store.record_intent(intent(0))
    results = store.apply([fill("1"), intent(0, quantity=D("7")), fill("2"), "not a record", fill("1")])
    assert results[0] is True and results[2] is True and results[4] is False
    assert isinstance(results[1], JournalConflict)
    assert isinstance(results[3], TypeError)
    assert [f.fill.trade_id for f in store.fills()] == ["1", "2"]


def test_a_database_failure_aborts_the_whole_batch(store):
    store.record_fill(fill("1"))
    page_count = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {page_count}")
    big = [fill(str(n), client_order_id="x" * 2000) for n in range(2, 200)]
    with pytest.raises(sqlite3.OperationalError, match="full"):
        store.apply(big)
    assert [f.fill.trade_id for f in store.fills()] == ["1"]
    store._conn.execute("PRAGMA max_page_count = 1073741823")
    assert all(store.apply(big))  # nothing half-written is in the way


# --- properties --------------------------------------------------------------------------


@given(st.lists(st.integers(min_value=0, max_value=30), max_size=60), st.integers(min_value=1, max_value=8))
def test_every_trade_id_is_new_exactly_once_whatever_the_batching(trade_ids, batch_size):
    with JournalStore.open(":memory:") as s:
        fills = [fill(str(t)) for t in trade_ids]
        results = []
        for start in range(0, len(fills), batch_size):
            results.extend(s.apply(fills[start : start + batch_size]))
        first_seen = [t not in trade_ids[:i] for i, t in enumerate(trade_ids)]
        assert results == first_seen
        assert [f.fill.trade_id for f in s.fills()] == [str(t) for t in dict.fromkeys(trade_ids)]


_STATUSES = st.sampled_from(list(OrderStatus))


@given(st.lists(st.tuples(_STATUSES, st.integers(min_value=0, max_value=5)), min_size=1, max_size=30))
def test_the_latest_state_never_goes_back(updates):
    with JournalStore.open(":memory:") as s:
        previous = None
        for status, filled in updates:
            s.record_update(update("x", status, str(filled)))
            latest = s.order("x")
            if previous is not None:
                assert latest.filled_qty >= previous.filled_qty
                assert latest.status.is_final or not previous.status.is_final
            previous = latest
        assert len(s.order_history("x")) == len(updates)
