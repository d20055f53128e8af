"""The journal's storage: one SQLite file, plain synchronous code, no trio.

Everything durable that tradingd knows passes through here: order intents
(written before the request leaves), what the venues said about each order,
fills, executions with their checkpoints, risk events, operator commands and
balance snapshots. After a crash the daemon rebuilds its state from this file
and then reconciles with the venues (DESIGN §7).

Durability
    The file runs in WAL mode with ``synchronous=FULL``: every COMMIT fsyncs
    the write-ahead log before it returns, so a record whose transaction has
    committed survives a process kill *and* a power cut or kernel crash.
    ``synchronous=NORMAL`` would only fsync at checkpoints and could lose the
    last commits on power loss; for a fill we have already told the rest of the
    daemon about, that is not acceptable. The price of FULL is one fsync per
    transaction, which is why writes come in batches: `JournalStore.apply`
    commits many records in one transaction (group commit) and the actor that
    owns the store acknowledges each record only after that commit returned.

Idempotency
    An intent is keyed by its client order id: journaling it again reports
    that it already existed, and a *different* intent under the same id is
    refused (`JournalConflict`), because that would be two orders sharing one
    id. A fill is unique by (venue, symbol, trade id, side), since venues such
    as Binance number trades per symbol, and a self-trade (our buy meeting our
    sell) is one trade id with a fill on each side: a duplicate is ignored and
    reported as such. So replays after a crash and reconciliation can record whatever
    they find without double counting.

Representation
    Decimals are stored as TEXT in plain notation (exact; ``1.50`` stays
    ``1.50``). Times are wall-clock UTC milliseconds; monotonic ``ts`` fields of
    messages mean nothing after a restart and are not stored. Structured values
    (execution parameters, algorithm state, risk events, command arguments)
    are msgspec JSON in TEXT columns, readable with SQLite's JSON functions.

Schema versions
    ``PRAGMA user_version`` is the schema version and `MIGRATIONS` the ordered
    list of steps to reach the current one. Opening an older file migrates it
    in one transaction (all steps or none); opening a newer one is refused, so
    an old binary never scribbles on a file it does not understand.

One writer
    A lock file next to the journal (``journal.sqlite.lock``, flock) keeps a
    second daemon from opening the same journal: two writers would mean two
    daemons trading one account.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from daemon.logs import get_logger
from daemon.messages import (
    ANY_MESSAGE,
    BalanceUpdate,
    BreakerTripped,
    Denial,
    ExecutionCheckpoint,
    ExecutionStateChanged,
    Fill,
    KillReport,
    Message,
    OrderIntent,
    OrderUpdate,
    RiskLimitChanged,
    TradingStateChanged,
)
from daemon.model import OrderStatus, OrderType, Side, TimeInForce

log = get_logger("journal")

APPLICATION_ID = 0x54524144  # "TRAD": marks the file as a tradingd journal
FINAL_EXECUTION_STATES = frozenset({"COMPLETED", "CANCELLED", "FAILED"})

# Statuses only a venue can report. Our own PENDING_NEW / PENDING_CANCEL /
# UNKNOWN say nothing about whether the venue ever saw the order.
_VENUE_STATUSES = frozenset(
    {
        OrderStatus.NEW,
        OrderStatus.PARTIALLY_FILLED,
        OrderStatus.FILLED,
        OrderStatus.CANCELED,
        OrderStatus.REJECTED,
        OrderStatus.EXPIRED,
    }
)
_FINAL_SQL = "('FILLED', 'CANCELED', 'REJECTED', 'EXPIRED')"


def wall_ms() -> int:
    """Wall-clock UTC time in milliseconds: the journal's timestamp."""
    return time.time_ns() // 1_000_000


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------


class JournalError(Exception):
    """Base of every journal error."""


class JournalLocked(JournalError):
    """Another process has this journal open."""


class JournalSchemaError(JournalError):
    """The file is not a journal this version of tradingd can use."""


class JournalConflict(JournalError):
    """A record contradicts one already journaled under the same key."""


class UnknownExecution(JournalError):
    """A state change or checkpoint for an execution that was never journaled."""


class UnknownCommand(JournalError):
    """A result for an operator command that was never journaled."""


# ---------------------------------------------------------------------------------------
# Records the journal accepts besides the actor messages
# ---------------------------------------------------------------------------------------


class NewExecution(msgspec.Struct, frozen=True, kw_only=True):
    """An execution as submitted. `params` is whatever the submitter used
    (normally a msgspec Struct); it is stored as msgspec JSON."""

    exec_id: str
    algo: str
    venue: str
    symbol: str
    side: Side
    quantity: Decimal
    params: Any
    by: str = ""
    state: str = "PENDING"


class OperatorCommand(msgspec.Struct, frozen=True, kw_only=True):
    """One command from the control socket, for the audit trail.

    Journal it when it arrives (``ok=None``) and add the outcome with
    `CommandResult`, so a command that crashed the daemon is still on record.
    """

    uid: int | None
    user: str
    command: str
    args: Mapping[str, Any] = {}
    ok: bool | None = None
    result: Any = None


class CommandResult(msgspec.Struct, frozen=True, kw_only=True):
    command_id: int
    ok: bool
    result: Any = None


class BalanceSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Balances of one venue at one moment. Include zero balances to record
    that an asset was emptied; `latest_balances` keeps the latest row per asset."""

    venue: str
    balances: tuple[BalanceUpdate, ...]
    source: str = "reconcile"


RiskEvent = TradingStateChanged | BreakerTripped | RiskLimitChanged | Denial | KillReport
Record = (
    OrderIntent
    | OrderUpdate
    | Fill
    | BalanceUpdate
    | BalanceSnapshot
    | NewExecution
    | ExecutionStateChanged
    | ExecutionCheckpoint
    | TradingStateChanged
    | BreakerTripped
    | RiskLimitChanged
    | Denial
    | KillReport
    | OperatorCommand
    | CommandResult
)


# ---------------------------------------------------------------------------------------
# Rows the journal returns
# ---------------------------------------------------------------------------------------


class JournaledFill(msgspec.Struct, frozen=True, kw_only=True):
    """A fill with its place in the journal. `seq` orders fills as they were
    journaled (the order to replay positions in); `exec_id` is None for a
    fill of an order no execution of ours placed."""

    seq: int
    recorded_ms: int
    exec_id: str | None
    fill: Fill


class JournaledBalances(msgspec.Struct, frozen=True, kw_only=True):
    """A balance snapshot as journaled; `seq` orders snapshots as they were written."""

    seq: int
    recorded_ms: int
    venue: str
    source: str
    balances: tuple[BalanceUpdate, ...]


class JournaledEvent(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    recorded_ms: int
    event: Message


class ExecutionRecord(msgspec.Struct, frozen=True, kw_only=True):
    exec_id: str
    algo: str
    venue: str
    symbol: str
    side: Side
    quantity: Decimal
    params: bytes  # msgspec JSON, as submitted; see `decode_params`
    state: str
    by: str
    created_ms: int
    updated_ms: int
    checkpoint: ExecutionCheckpoint | None = None
    checkpoint_ms: int | None = None

    def decode_params(self, type: Any = Any) -> Any:
        return msgspec.json.decode(self.params, type=type)

    @property
    def finished(self) -> bool:
        return self.state in FINAL_EXECUTION_STATES


class CommandRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    uid: int | None
    user: str
    command: str
    args: dict[str, Any]
    ok: bool | None
    result: Any
    received_ms: int
    finished_ms: int | None


# ---------------------------------------------------------------------------------------
# Schema and migrations
# ---------------------------------------------------------------------------------------


class Migration(NamedTuple):
    version: int
    summary: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "initial schema",
        (
            # Written before an order leaves; `acknowledged` turns 1 at the
            # first venue-side status or fill, so recovery finds the intents
            # whose fate is unknown without scanning the whole history.
            """CREATE TABLE intents (
                client_order_id TEXT PRIMARY KEY,
                exec_id         TEXT NOT NULL,
                seq             INTEGER NOT NULL,
                venue           TEXT NOT NULL,
                symbol          TEXT NOT NULL,
                side            TEXT NOT NULL,
                order_type      TEXT NOT NULL,
                quantity        TEXT NOT NULL,
                price           TEXT,
                time_in_force   TEXT,
                quote_quantity  TEXT,
                reduce_only     INTEGER NOT NULL,
                acknowledged    INTEGER NOT NULL DEFAULT 0,
                recorded_ms     INTEGER NOT NULL
            )""",
            "CREATE INDEX intents_by_execution ON intents (exec_id, seq)",
            "CREATE INDEX intents_unacknowledged ON intents (venue) WHERE acknowledged = 0",
            """CREATE TABLE order_updates (
                id              INTEGER PRIMARY KEY,
                client_order_id TEXT NOT NULL,
                venue           TEXT NOT NULL,
                symbol          TEXT NOT NULL,
                status          TEXT NOT NULL,
                side            TEXT NOT NULL,
                quantity        TEXT NOT NULL,
                filled_qty      TEXT NOT NULL,
                price           TEXT,
                avg_price       TEXT,
                venue_order_id  TEXT,
                reason          TEXT NOT NULL,
                venue_ms        INTEGER NOT NULL,
                recorded_ms     INTEGER NOT NULL
            )""",
            "CREATE INDEX order_updates_by_order ON order_updates (client_order_id, id)",
            # The latest known state of each order, kept next to the history.
            """CREATE TABLE orders (
                client_order_id TEXT PRIMARY KEY,
                venue           TEXT NOT NULL,
                symbol          TEXT NOT NULL,
                status          TEXT NOT NULL,
                side            TEXT NOT NULL,
                quantity        TEXT NOT NULL,
                filled_qty      TEXT NOT NULL,
                price           TEXT,
                avg_price       TEXT,
                venue_order_id  TEXT,
                reason          TEXT NOT NULL,
                venue_ms        INTEGER NOT NULL,
                final           INTEGER NOT NULL,
                update_id       INTEGER NOT NULL REFERENCES order_updates (id),
                updated_ms      INTEGER NOT NULL
            )""",
            "CREATE INDEX orders_open ON orders (venue, symbol) WHERE final = 0",
            """CREATE TABLE fills (
                id              INTEGER PRIMARY KEY,
                venue           TEXT NOT NULL,
                symbol          TEXT NOT NULL,
                client_order_id TEXT NOT NULL,
                trade_id        TEXT NOT NULL,
                side            TEXT NOT NULL,
                price           TEXT NOT NULL,
                qty             TEXT NOT NULL,
                fee             TEXT NOT NULL,
                fee_asset       TEXT NOT NULL,
                is_maker        INTEGER NOT NULL,
                venue_order_id  TEXT,
                venue_ms        INTEGER NOT NULL,
                recorded_ms     INTEGER NOT NULL,
                UNIQUE (venue, trade_id)
            )""",
            "CREATE INDEX fills_by_instrument ON fills (venue, symbol, id)",
            "CREATE INDEX fills_by_order ON fills (client_order_id)",
            """CREATE TABLE executions (
                exec_id         TEXT PRIMARY KEY,
                algo            TEXT NOT NULL,
                venue           TEXT NOT NULL,
                symbol          TEXT NOT NULL,
                side            TEXT NOT NULL,
                quantity        TEXT NOT NULL,
                params          TEXT NOT NULL,
                state           TEXT NOT NULL,
                submitted_by    TEXT NOT NULL,
                created_ms      INTEGER NOT NULL,
                updated_ms      INTEGER NOT NULL
            )""",
            """CREATE TABLE execution_transitions (
                id              INTEGER PRIMARY KEY,
                exec_id         TEXT NOT NULL REFERENCES executions (exec_id),
                state           TEXT NOT NULL,
                previous        TEXT,
                reason          TEXT NOT NULL,
                changed_by      TEXT NOT NULL,
                recorded_ms     INTEGER NOT NULL
            )""",
            "CREATE INDEX execution_transitions_by_execution ON execution_transitions (exec_id, id)",
            """CREATE TABLE execution_checkpoints (
                id              INTEGER PRIMARY KEY,
                exec_id         TEXT NOT NULL REFERENCES executions (exec_id),
                next_seq        INTEGER NOT NULL,
                filled_qty      TEXT NOT NULL,
                avg_price       TEXT,
                algo_state      TEXT NOT NULL,
                recorded_ms     INTEGER NOT NULL
            )""",
            "CREATE INDEX execution_checkpoints_by_execution ON execution_checkpoints (exec_id, id)",
            """CREATE TABLE risk_events (
                id              INTEGER PRIMARY KEY,
                kind            TEXT NOT NULL,
                changed_by      TEXT NOT NULL,
                body            TEXT NOT NULL,
                recorded_ms     INTEGER NOT NULL
            )""",
            """CREATE TABLE operator_commands (
                id              INTEGER PRIMARY KEY,
                uid             INTEGER,
                user            TEXT NOT NULL,
                command         TEXT NOT NULL,
                args            TEXT NOT NULL,
                ok              INTEGER,
                result          TEXT,
                received_ms     INTEGER NOT NULL,
                finished_ms     INTEGER
            )""",
            """CREATE TABLE balance_snapshots (
                id              INTEGER PRIMARY KEY,
                venue           TEXT NOT NULL,
                source          TEXT NOT NULL,
                recorded_ms     INTEGER NOT NULL
            )""",
            """CREATE TABLE balances (
                id              INTEGER PRIMARY KEY,
                snapshot_id     INTEGER NOT NULL REFERENCES balance_snapshots (id),
                venue           TEXT NOT NULL,
                asset           TEXT NOT NULL,
                free            TEXT NOT NULL,
                locked          TEXT NOT NULL,
                venue_ms        INTEGER NOT NULL
            )""",
            "CREATE INDEX balances_latest ON balances (venue, asset, id)",
        ),
    ),
    Migration(
        2,
        "fills carry the execution they belong to",
        (
            # Per-execution progress and cost analysis read fills by
            # execution; a column beats joining through the intents each time.
            "ALTER TABLE fills ADD COLUMN exec_id TEXT",
            """UPDATE fills SET exec_id =
                (SELECT exec_id FROM intents WHERE intents.client_order_id = fills.client_order_id)""",
            "CREATE INDEX fills_by_execution ON fills (exec_id, id)",
        ),
    ),
    Migration(
        3,
        "a fill is unique by (venue, symbol, trade id)",
        (
            # Binance numbers trades per symbol: BTCUSDT trade 7 and ETHUSDT
            # trade 7 are two trades. Unique by (venue, trade id), the second
            # was taken for a duplicate and lost. SQLite cannot change a table's
            # constraint in place, so the table is rebuilt, ids (and so the
            # journal's order of fills) kept.
            """CREATE TABLE fills_v3 (
                id              INTEGER PRIMARY KEY,
                venue           TEXT NOT NULL,
                symbol          TEXT NOT NULL,
                client_order_id TEXT NOT NULL,
                trade_id        TEXT NOT NULL,
                side            TEXT NOT NULL,
                price           TEXT NOT NULL,
                qty             TEXT NOT NULL,
                fee             TEXT NOT NULL,
                fee_asset       TEXT NOT NULL,
                is_maker        INTEGER NOT NULL,
                venue_order_id  TEXT,
                venue_ms        INTEGER NOT NULL,
                recorded_ms     INTEGER NOT NULL,
                exec_id         TEXT,
                UNIQUE (venue, symbol, trade_id)
            )""",
            """INSERT INTO fills_v3 (id, venue, symbol, client_order_id, trade_id, side, price, qty, fee, fee_asset,
                                     is_maker, venue_order_id, venue_ms, recorded_ms, exec_id)
               SELECT id, venue, symbol, client_order_id, trade_id, side, price, qty, fee, fee_asset,
                      is_maker, venue_order_id, venue_ms, recorded_ms, exec_id FROM fills""",
            "DROP TABLE fills",
            "ALTER TABLE fills_v3 RENAME TO fills",
            "CREATE INDEX fills_by_instrument ON fills (venue, symbol, id)",
            "CREATE INDEX fills_by_order ON fills (client_order_id)",
            "CREATE INDEX fills_by_execution ON fills (exec_id, id)",
        ),
    ),
    Migration(
        4,
        "a fill is unique by (venue, symbol, trade id, side)",
        (
            # A self-trade (our buy meets our sell) is one trade id and two
            # fills, one per side: the venue lists both. Unique without the
            # side, the second leg was taken for a duplicate and lost. The
            # table is rebuilt as in version 3, ids kept.
            """CREATE TABLE fills_v4 (
                id              INTEGER PRIMARY KEY,
                venue           TEXT NOT NULL,
                symbol          TEXT NOT NULL,
                client_order_id TEXT NOT NULL,
                trade_id        TEXT NOT NULL,
                side            TEXT NOT NULL,
                price           TEXT NOT NULL,
                qty             TEXT NOT NULL,
                fee             TEXT NOT NULL,
                fee_asset       TEXT NOT NULL,
                is_maker        INTEGER NOT NULL,
                venue_order_id  TEXT,
                venue_ms        INTEGER NOT NULL,
                recorded_ms     INTEGER NOT NULL,
                exec_id         TEXT,
                UNIQUE (venue, symbol, trade_id, side)
            )""",
            """INSERT INTO fills_v4 (id, venue, symbol, client_order_id, trade_id, side, price, qty, fee, fee_asset,
                                     is_maker, venue_order_id, venue_ms, recorded_ms, exec_id)
               SELECT id, venue, symbol, client_order_id, trade_id, side, price, qty, fee, fee_asset,
                      is_maker, venue_order_id, venue_ms, recorded_ms, exec_id FROM fills""",
            "DROP TABLE fills",
            "ALTER TABLE fills_v4 RENAME TO fills",
            "CREATE INDEX fills_by_instrument ON fills (venue, symbol, id)",
            "CREATE INDEX fills_by_order ON fills (client_order_id)",
            "CREATE INDEX fills_by_execution ON fills (exec_id, id)",
        ),
    ),
)
SCHEMA_VERSION = MIGRATIONS[-1].version


def schema_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn: sqlite3.Connection, *, target: int = SCHEMA_VERSION) -> int:
    """Bring the schema up to `target` in one transaction; return the version found.

    The connection must be in autocommit mode (``isolation_level=None``): DDL in
    SQLite is transactional, so a failure leaves the file exactly as it was.
    """
    found = schema_version(conn)
    if found > SCHEMA_VERSION:
        raise JournalSchemaError(
            f"the journal has schema version {found}, newer than the {SCHEMA_VERSION} this tradingd "
            f"understands; run a newer tradingd or restore a backup made by this version"
        )
    if found >= target:
        return found
    conn.execute("BEGIN IMMEDIATE")
    try:
        if found == 0:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        for migration in MIGRATIONS:
            if found < migration.version <= target:
                for statement in migration.statements:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {migration.version}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found


# ---------------------------------------------------------------------------------------
# Value conversion
# ---------------------------------------------------------------------------------------


def _text(value: Decimal | None, field: str) -> str | None:
    """Exact decimal text; refuses floats, which must never reach the journal."""
    if value is None:
        return None
    if not isinstance(value, Decimal):
        raise TypeError(f"{field} must be a Decimal, got {type(value).__name__} {value!r}; money is never float")
    return format(value, "f")


def _dec(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def _intent_row(intent: OrderIntent, now: int) -> tuple:
    return (
        intent.client_order_id,
        intent.exec_id,
        intent.seq,
        intent.venue,
        intent.symbol,
        Side(intent.side).value,
        OrderType(intent.order_type).value,
        _text(intent.quantity, "quantity"),
        _text(intent.price, "price"),
        None if intent.time_in_force is None else TimeInForce(intent.time_in_force).value,
        _text(intent.quote_quantity, "quote_quantity"),
        int(intent.reduce_only),
        now,
    )


_INTENT_COLUMNS = (
    "client_order_id, exec_id, seq, venue, symbol, side, order_type, quantity, price, "
    "time_in_force, quote_quantity, reduce_only"
)


def _intent_from(row: sqlite3.Row) -> OrderIntent:
    return OrderIntent(
        client_order_id=row["client_order_id"],
        exec_id=row["exec_id"],
        seq=row["seq"],
        venue=row["venue"],
        symbol=row["symbol"],
        side=Side(row["side"]),
        order_type=OrderType(row["order_type"]),
        quantity=Decimal(row["quantity"]),
        price=_dec(row["price"]),
        time_in_force=None if row["time_in_force"] is None else TimeInForce(row["time_in_force"]),
        quote_quantity=_dec(row["quote_quantity"]),
        reduce_only=bool(row["reduce_only"]),
    )


_UPDATE_COLUMNS = (
    "client_order_id, venue, symbol, status, side, quantity, filled_qty, price, avg_price, "
    "venue_order_id, reason, venue_ms"
)


def _update_from(row: sqlite3.Row) -> OrderUpdate:
    return OrderUpdate(
        venue=row["venue"],
        symbol=row["symbol"],
        client_order_id=row["client_order_id"],
        status=OrderStatus(row["status"]),
        side=Side(row["side"]),
        quantity=Decimal(row["quantity"]),
        filled_qty=Decimal(row["filled_qty"]),
        price=_dec(row["price"]),
        avg_price=_dec(row["avg_price"]),
        venue_order_id=row["venue_order_id"],
        reason=row["reason"],
        venue_ms=row["venue_ms"],
    )


_FILL_COLUMNS = (
    "venue, symbol, client_order_id, trade_id, side, price, qty, fee, fee_asset, is_maker, venue_order_id, venue_ms"
)


def _fill_from(row: sqlite3.Row) -> Fill:
    return Fill(
        venue=row["venue"],
        symbol=row["symbol"],
        client_order_id=row["client_order_id"],
        trade_id=row["trade_id"],
        side=Side(row["side"]),
        price=Decimal(row["price"]),
        qty=Decimal(row["qty"]),
        fee=Decimal(row["fee"]),
        fee_asset=row["fee_asset"],
        is_maker=bool(row["is_maker"]),
        venue_order_id=row["venue_order_id"],
        venue_ms=row["venue_ms"],
    )


def _is_stale(update: OrderUpdate, status: OrderStatus, filled: Decimal) -> bool:
    """Whether `update` is older news than the state we hold.

    The REST answer and the user stream race, so updates can arrive out of
    order. Filled quantity never shrinks, a final state is only replaced by a
    final state that filled more, and our own PENDING_NEW never overrides what
    the venue said.
    """
    new_status = OrderStatus(update.status)
    if update.filled_qty < filled:
        return True
    if status.is_final:
        return not (new_status.is_final and update.filled_qty > filled)
    return new_status is OrderStatus.PENDING_NEW and status is not OrderStatus.PENDING_NEW


# ---------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------


class JournalStore:
    """The journal file: batched writes (`apply`) and the queries recovery and
    tradectl need. Not thread-safe by itself: the journal actor serialises
    every call through one thread at a time."""

    def __init__(self, conn: sqlite3.Connection, path: Path | None, lock_fd: int | None, clock: Callable[[], int]):
        self._conn = conn
        self.path = path
        self._lock_fd = lock_fd
        self._clock = clock
        self._handlers: dict[type, Callable[[Any, int], Any]] = {
            OrderIntent: self._put_intent,
            OrderUpdate: self._put_update,
            Fill: self._put_fill,
            BalanceUpdate: self._put_balance,
            BalanceSnapshot: self._put_balance_snapshot,
            NewExecution: self._put_execution,
            ExecutionStateChanged: self._put_execution_state,
            ExecutionCheckpoint: self._put_checkpoint,
            TradingStateChanged: self._put_risk_event,
            BreakerTripped: self._put_risk_event,
            RiskLimitChanged: self._put_risk_event,
            Denial: self._put_risk_event,
            KillReport: self._put_risk_event,
            OperatorCommand: self._put_command,
            CommandResult: self._put_command_result,
        }

    # --- opening and closing -----------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        durable: bool = True,
        clock: Callable[[], int] = wall_ms,
    ) -> JournalStore:
        """Open (creating and migrating as needed) the journal at `path`.

        ``":memory:"`` gives a throw-away journal for tests. ``durable=False``
        drops to ``synchronous=OFF``; only tests and the benchmark's scratch
        files may use it.
        """
        if str(path) == ":memory:":
            conn = cls._connect(":memory:")
            store = cls(conn, None, None, clock)
        else:
            file = Path(path)
            file.parent.mkdir(parents=True, exist_ok=True)
            lock_fd = _lock(file)
            try:
                conn = cls._connect(str(file))
                store = cls(conn, file, lock_fd, clock)
            except BaseException:
                os.close(lock_fd)
                raise
        try:
            store._prepare(durable=durable)
        except BaseException:
            store.close()
            raise
        return store

    @staticmethod
    def _connect(target: str) -> sqlite3.Connection:
        # check_same_thread=False: trio runs each call on whichever worker
        # thread is free; the actor's CapacityLimiter(1) guarantees one at a time.
        conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        return conn

    def _prepare(self, *, durable: bool) -> None:
        conn = self._conn
        try:
            application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise JournalSchemaError(
                f"{self.path} is not a SQLite database ({exc}); point the journal at another path "
                f"or move this file away"
            ) from None
        foreign = application_id not in (0, APPLICATION_ID) or (
            application_id == 0
            and (schema_version(conn) != 0 or conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0])
        )
        if foreign:
            raise JournalSchemaError(
                f"{self.path} is a SQLite database but not a tradingd journal; point the journal at another path"
            )
        conn.execute("PRAGMA busy_timeout = 5000")
        if self.path is not None:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise JournalError(
                    f"SQLite refused WAL mode for {self.path} (got {mode!r}); put the journal on a local filesystem"
                )
        conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'OFF'}")
        conn.execute("PRAGMA foreign_keys = ON")
        found = migrate(conn)
        if found == 0:
            log.info("journal.created", path=self.path, schema_version=SCHEMA_VERSION)
        elif found != SCHEMA_VERSION:
            log.info("journal.migrated", path=self.path, from_version=found, to_version=SCHEMA_VERSION)

    def close(self) -> None:
        """Close the file. The last close checkpoints the WAL into the main file."""
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> JournalStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return schema_version(self._conn)

    # --- writing -----------------------------------------------------------------------

    def apply(self, records: Sequence[Any]) -> list[Any]:
        """Write `records` in one transaction and return one result per record.

        Each record runs inside its own savepoint: a record that is refused (a
        conflicting intent, a float where a Decimal belongs) is rolled back
        alone and its slot in the result list holds the exception, while the
        others commit. If the database fails (disk full, I/O error) the whole
        transaction is rolled back and the error raised: no record of the
        batch was made durable.
        """
        if not records:
            return []
        conn = self._conn
        now = self._clock()
        results: list[Any] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for record in records:
                handler = self._handlers.get(type(record))
                if handler is None:
                    results.append(TypeError(f"the journal does not record {type(record).__name__}"))
                    continue
                conn.execute("SAVEPOINT record")
                try:
                    results.append(handler(record, now))
                except sqlite3.DatabaseError as exc:
                    if not isinstance(exc, sqlite3.IntegrityError):
                        raise  # the file or the disk is in trouble, not this record
                    conn.execute("ROLLBACK TO record")
                    results.append(exc)
                except Exception as exc:
                    conn.execute("ROLLBACK TO record")
                    results.append(exc)
                conn.execute("RELEASE record")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results

    def _one(self, record: Any) -> Any:
        (result,) = self.apply([record])
        if isinstance(result, Exception):
            raise result
        return result

    def record_intent(self, intent: OrderIntent) -> bool:
        """True if new, False if this very intent was already journaled."""
        return self._one(intent)

    def record_update(self, update: OrderUpdate) -> bool:
        """True if the update became the order's latest state (else history only)."""
        return self._one(update)

    def record_fill(self, fill: Fill) -> bool:
        """True if new, False if (venue, symbol, trade_id, side) was already journaled."""
        return self._one(fill)

    def record(self, record: Any) -> Any:
        """Journal any accepted record in its own transaction."""
        return self._one(record)

    # --- write handlers (run inside apply's transaction) -----------------------------

    def _put_intent(self, intent: OrderIntent, now: int) -> bool:
        cursor = self._conn.execute(
            f"INSERT INTO intents ({_INTENT_COLUMNS}, recorded_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
            f"ON CONFLICT (client_order_id) DO NOTHING",
            _intent_row(intent, now),
        )
        if cursor.rowcount == 1:
            return True
        existing = self.intent(intent.client_order_id)
        if existing != msgspec.structs.replace(intent, ts=0.0):
            raise JournalConflict(
                f"client order id {intent.client_order_id} is already journaled for a different order "
                f"({existing}); each child order needs its own (execution id, sequence number)"
            )
        return False

    def _put_update(self, update: OrderUpdate, now: int) -> bool:
        conn = self._conn
        cid = update.client_order_id
        status = OrderStatus(update.status)
        values = (
            cid,
            update.venue,
            update.symbol,
            status.value,
            Side(update.side).value,
            _text(update.quantity, "quantity"),
            _text(update.filled_qty, "filled_qty"),
            _text(update.price, "price"),
            _text(update.avg_price, "avg_price"),
            update.venue_order_id,
            update.reason,
            update.venue_ms,
        )
        update_id = conn.execute(
            f"INSERT INTO order_updates ({_UPDATE_COLUMNS}, recorded_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (*values, now),
        ).lastrowid
        if status in _VENUE_STATUSES:
            self._acknowledge(cid)
        current = conn.execute("SELECT status, filled_qty FROM orders WHERE client_order_id = ?", (cid,)).fetchone()
        if current is not None and _is_stale(update, OrderStatus(current["status"]), Decimal(current["filled_qty"])):
            return False
        conn.execute(
            f"""INSERT INTO orders ({_UPDATE_COLUMNS}, final, update_id, updated_ms)
                VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
                ON CONFLICT (client_order_id) DO UPDATE SET
                    status = excluded.status, quantity = excluded.quantity, filled_qty = excluded.filled_qty,
                    price = coalesce(excluded.price, price), avg_price = coalesce(excluded.avg_price, avg_price),
                    venue_order_id = coalesce(excluded.venue_order_id, venue_order_id),
                    reason = excluded.reason, venue_ms = excluded.venue_ms, final = excluded.final,
                    update_id = excluded.update_id, updated_ms = excluded.updated_ms""",
            (*values, int(status.is_final), update_id, now),
        )
        return True

    def _put_fill(self, fill: Fill, now: int) -> bool:
        conn = self._conn
        cursor = conn.execute(
            f"""INSERT INTO fills ({_FILL_COLUMNS}, recorded_ms, exec_id)
                VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,
                        (SELECT exec_id FROM intents WHERE client_order_id = ?))
                ON CONFLICT (venue, symbol, trade_id, side) DO NOTHING""",
            (
                fill.venue,
                fill.symbol,
                fill.client_order_id,
                fill.trade_id,
                Side(fill.side).value,
                _text(fill.price, "price"),
                _text(fill.qty, "qty"),
                _text(fill.fee, "fee"),
                fill.fee_asset,
                int(fill.is_maker),
                fill.venue_order_id,
                fill.venue_ms,
                now,
                fill.client_order_id,
            ),
        )
        if cursor.rowcount == 1:
            self._acknowledge(fill.client_order_id)
            return True
        row = conn.execute(
            f"SELECT {_FILL_COLUMNS} FROM fills WHERE venue = ? AND symbol = ? AND trade_id = ? AND side = ?",
            (fill.venue, fill.symbol, fill.trade_id, Side(fill.side).value),
        ).fetchone()
        existing = _fill_from(row)
        if existing != msgspec.structs.replace(fill, ts=0.0):
            # Same trade id, different content: the venue is the authority and
            # the first record stays; make the discrepancy visible.
            log.warning(
                "journal.fill_differs", venue=fill.venue, symbol=fill.symbol, trade_id=fill.trade_id, kept=existing, ignored=fill
            )
        return False

    def _acknowledge(self, client_order_id: str) -> None:
        self._conn.execute(
            "UPDATE intents SET acknowledged = 1 WHERE client_order_id = ? AND acknowledged = 0", (client_order_id,)
        )

    def _put_balance(self, balance: BalanceUpdate, now: int) -> int:
        return self._put_balance_snapshot(BalanceSnapshot(venue=balance.venue, balances=(balance,), source="stream"), now)

    def _put_balance_snapshot(self, snapshot: BalanceSnapshot, now: int) -> int:
        conn = self._conn
        snapshot_id = conn.execute(
            "INSERT INTO balance_snapshots (venue, source, recorded_ms) VALUES (?,?,?)",
            (snapshot.venue, snapshot.source, now),
        ).lastrowid
        for balance in snapshot.balances:
            if balance.venue != snapshot.venue:
                raise ValueError(f"a {snapshot.venue} balance snapshot holds a balance of {balance.venue}")
            conn.execute(
                "INSERT INTO balances (snapshot_id, venue, asset, free, locked, venue_ms) VALUES (?,?,?,?,?,?)",
                (
                    snapshot_id,
                    balance.venue,
                    balance.asset,
                    _text(balance.free, "free"),
                    _text(balance.locked, "locked"),
                    balance.venue_ms,
                ),
            )
        return snapshot_id

    def _put_execution(self, execution: NewExecution, now: int) -> bool:
        params = _json(execution.params)
        cursor = self._conn.execute(
            """INSERT INTO executions (exec_id, algo, venue, symbol, side, quantity, params, state, submitted_by,
                                       created_ms, updated_ms)
               VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (exec_id) DO NOTHING""",
            (
                execution.exec_id,
                execution.algo,
                execution.venue,
                execution.symbol,
                Side(execution.side).value,
                _text(execution.quantity, "quantity"),
                params,
                execution.state,
                execution.by,
                now,
                now,
            ),
        )
        if cursor.rowcount == 1:
            return True
        row = self._conn.execute(
            "SELECT algo, venue, symbol, side, quantity, params FROM executions WHERE exec_id = ?",
            (execution.exec_id,),
        ).fetchone()
        same = (
            row["algo"] == execution.algo
            and row["venue"] == execution.venue
            and row["symbol"] == execution.symbol
            and row["side"] == Side(execution.side).value
            and Decimal(row["quantity"]) == execution.quantity
            and row["params"] == params
        )
        if not same:
            raise JournalConflict(
                f"execution {execution.exec_id} is already journaled with different parameters; "
                f"submit it under a new execution id"
            )
        return False

    def _require_execution(self, exec_id: str) -> None:
        if self._conn.execute("SELECT 1 FROM executions WHERE exec_id = ?", (exec_id,)).fetchone() is None:
            raise UnknownExecution(f"execution {exec_id} was never journaled; journal it with record_execution first")

    def _put_execution_state(self, change: ExecutionStateChanged, now: int) -> int:
        self._require_execution(change.exec_id)
        self._conn.execute(
            "UPDATE executions SET state = ?, updated_ms = ? WHERE exec_id = ?", (change.state, now, change.exec_id)
        )
        return self._conn.execute(
            """INSERT INTO execution_transitions (exec_id, state, previous, reason, changed_by, recorded_ms)
               VALUES (?,?,?,?,?,?)""",
            (change.exec_id, change.state, change.previous, change.reason, change.by, now),
        ).lastrowid

    def _put_checkpoint(self, checkpoint: ExecutionCheckpoint, now: int) -> int:
        self._require_execution(checkpoint.exec_id)
        self._conn.execute("UPDATE executions SET updated_ms = ? WHERE exec_id = ?", (now, checkpoint.exec_id))
        return self._conn.execute(
            """INSERT INTO execution_checkpoints (exec_id, next_seq, filled_qty, avg_price, algo_state, recorded_ms)
               VALUES (?,?,?,?,?,?)""",
            (
                checkpoint.exec_id,
                checkpoint.next_seq,
                _text(checkpoint.filled_qty, "filled_qty"),
                _text(checkpoint.avg_price, "avg_price"),
                _json(checkpoint.algo_state),
                now,
            ),
        ).lastrowid

    def _put_risk_event(self, event: RiskEvent, now: int) -> int:
        by = getattr(event, "by", "") or "risk"
        return self._conn.execute(
            "INSERT INTO risk_events (kind, changed_by, body, recorded_ms) VALUES (?,?,?,?)",
            (type(event).__name__, by, _json(event), now),
        ).lastrowid

    def _put_command(self, command: OperatorCommand, now: int) -> int:
        finished = None if command.ok is None else now
        return self._conn.execute(
            """INSERT INTO operator_commands (uid, user, command, args, ok, result, received_ms, finished_ms)
               VALUES (?,?,?,?,?,?,?,?)""",
            (
                command.uid,
                command.user,
                command.command,
                _json(command.args),
                None if command.ok is None else int(command.ok),
                None if command.ok is None else _json(command.result),
                now,
                finished,
            ),
        ).lastrowid

    def _put_command_result(self, outcome: CommandResult, now: int) -> None:
        cursor = self._conn.execute(
            "UPDATE operator_commands SET ok = ?, result = ?, finished_ms = ? WHERE id = ?",
            (int(outcome.ok), _json(outcome.result), now, outcome.command_id),
        )
        if cursor.rowcount != 1:
            raise UnknownCommand(f"operator command {outcome.command_id} was never journaled")

    # --- orders ------------------------------------------------------------------------

    def intent(self, client_order_id: str) -> OrderIntent | None:
        row = self._conn.execute(
            f"SELECT {_INTENT_COLUMNS} FROM intents WHERE client_order_id = ?", (client_order_id,)
        ).fetchone()
        return None if row is None else _intent_from(row)

    def intents(self, exec_id: str) -> list[OrderIntent]:
        """The child orders of one execution, by sequence number."""
        rows = self._conn.execute(
            f"SELECT {_INTENT_COLUMNS} FROM intents WHERE exec_id = ? ORDER BY seq", (exec_id,)
        ).fetchall()
        return [_intent_from(row) for row in rows]

    def intents_without_ack(self, venue: str | None = None) -> list[OrderIntent]:
        """Intents no venue has said anything about (no venue status, no fill):
        the request may or may not have reached the venue, so recovery must
        look each one up by client order id."""
        sql = f"SELECT {_INTENT_COLUMNS} FROM intents WHERE acknowledged = 0"
        params: tuple = ()
        if venue is not None:
            sql += " AND venue = ?"
            params = (venue,)
        rows = self._conn.execute(sql + " ORDER BY rowid", params).fetchall()
        return [_intent_from(row) for row in rows]

    def next_child_seq(self, exec_id: str) -> int:
        """The first child sequence number no intent of `exec_id` has used."""
        row = self._conn.execute("SELECT max(seq) FROM intents WHERE exec_id = ?", (exec_id,)).fetchone()
        return 0 if row[0] is None else row[0] + 1

    def order(self, client_order_id: str) -> OrderUpdate | None:
        """The latest known state of one order."""
        row = self._conn.execute(
            f"SELECT {_UPDATE_COLUMNS} FROM orders WHERE client_order_id = ?", (client_order_id,)
        ).fetchone()
        return None if row is None else _update_from(row)

    def open_orders(self, venue: str | None = None, symbol: str | None = None) -> list[OrderUpdate]:
        """Orders whose latest state is not final (they may still be working)."""
        sql = f"SELECT {_UPDATE_COLUMNS} FROM orders WHERE final = 0"
        params: list[Any] = []
        if venue is not None:
            sql += " AND venue = ?"
            params.append(venue)
        if symbol is not None:
            sql += " AND symbol = ?"
            params.append(symbol)
        rows = self._conn.execute(sql + " ORDER BY update_id", params).fetchall()
        return [_update_from(row) for row in rows]

    def orders_by_venue_order_id(self, venue: str, symbol: str, venue_order_ids: Sequence[str]) -> dict[str, OrderUpdate]:
        """The latest state of the orders a venue knows by these ids (its own order ids, per symbol).

        Reconciliation needs it: a venue's trade list may name an order only by
        the venue's id (Binance's myTrades carries no client order id, and
        numbers orders per symbol).
        """
        found: dict[str, OrderUpdate] = {}
        ids = list(dict.fromkeys(venue_order_ids))
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = self._conn.execute(
                f"SELECT {_UPDATE_COLUMNS} FROM orders WHERE venue = ? AND symbol = ? "
                f"AND venue_order_id IN ({','.join('?' * len(chunk))})",
                (venue, symbol, *chunk),
            ).fetchall()
            for row in rows:
                found[row["venue_order_id"]] = _update_from(row)
        return found

    def order_history(self, client_order_id: str) -> list[OrderUpdate]:
        """Every update journaled for one order, oldest first (stale ones included)."""
        rows = self._conn.execute(
            f"SELECT {_UPDATE_COLUMNS} FROM order_updates WHERE client_order_id = ? ORDER BY id", (client_order_id,)
        ).fetchall()
        return [_update_from(row) for row in rows]

    # --- fills -------------------------------------------------------------------------

    def fills(
        self,
        *,
        venue: str | None = None,
        symbol: str | None = None,
        exec_id: str | None = None,
        client_order_id: str | None = None,
        since_ms: int | None = None,
        after_seq: int | None = None,
        limit: int | None = None,
    ) -> list[JournaledFill]:
        """Fills in journal order, filtered. With no filter: every fill, the
        order to replay positions in. `since_ms` compares the venue's trade
        time (or the journal time when the venue gave none); `after_seq` and
        `limit` page through a long history."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("venue", venue),
            ("symbol", symbol),
            ("exec_id", exec_id),
            ("client_order_id", client_order_id),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if since_ms is not None:
            clauses.append("(CASE WHEN venue_ms > 0 THEN venue_ms ELSE recorded_ms END) >= ?")
            params.append(since_ms)
        if after_seq is not None:
            clauses.append("id > ?")
            params.append(after_seq)
        sql = f"SELECT id, recorded_ms, exec_id, {_FILL_COLUMNS} FROM fills"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [
            JournaledFill(seq=row["id"], recorded_ms=row["recorded_ms"], exec_id=row["exec_id"], fill=_fill_from(row))
            for row in self._conn.execute(sql, params)
        ]

    def last_trade_id(self, venue: str, symbol: str) -> str | None:
        """The newest trade id journaled for an instrument, to resume a trade
        history query from. Numeric ids (Binance) compare as numbers; other
        ids fall back to the most recently journaled one."""
        row = self._conn.execute(
            """SELECT trade_id FROM fills
               WHERE venue = ? AND symbol = ? AND trade_id <> '' AND trade_id NOT GLOB '*[^0-9]*'
               ORDER BY length(trade_id) DESC, trade_id DESC LIMIT 1""",
            (venue, symbol),
        ).fetchone()
        if row is None:
            row = self._conn.execute(
                "SELECT trade_id FROM fills WHERE venue = ? AND symbol = ? ORDER BY id DESC LIMIT 1", (venue, symbol)
            ).fetchone()
        return None if row is None else row[0]

    def last_trade_ids(self) -> dict[tuple[str, str], str]:
        """`last_trade_id` for every (venue, symbol) with fills."""
        pairs = self._conn.execute("SELECT DISTINCT venue, symbol FROM fills").fetchall()
        result: dict[tuple[str, str], str] = {}
        for venue, symbol in pairs:
            trade_id = self.last_trade_id(venue, symbol)
            if trade_id is not None:
                result[(venue, symbol)] = trade_id
        return result

    # --- executions --------------------------------------------------------------------

    _EXECUTION_SELECT = """
        SELECT e.*, c.next_seq, c.filled_qty, c.avg_price, c.algo_state, c.recorded_ms AS checkpoint_ms
        FROM executions e
        LEFT JOIN execution_checkpoints c
          ON c.id = (SELECT max(id) FROM execution_checkpoints WHERE exec_id = e.exec_id)
    """

    @staticmethod
    def _execution_from(row: sqlite3.Row) -> ExecutionRecord:
        checkpoint = None
        if row["next_seq"] is not None:
            checkpoint = ExecutionCheckpoint(
                exec_id=row["exec_id"],
                next_seq=row["next_seq"],
                filled_qty=Decimal(row["filled_qty"]),
                avg_price=_dec(row["avg_price"]),
                algo_state=msgspec.json.decode(row["algo_state"]),
            )
        return ExecutionRecord(
            exec_id=row["exec_id"],
            algo=row["algo"],
            venue=row["venue"],
            symbol=row["symbol"],
            side=Side(row["side"]),
            quantity=Decimal(row["quantity"]),
            params=row["params"].encode(),
            state=row["state"],
            by=row["submitted_by"],
            created_ms=row["created_ms"],
            updated_ms=row["updated_ms"],
            checkpoint=checkpoint,
            checkpoint_ms=row["checkpoint_ms"],
        )

    def execution(self, exec_id: str) -> ExecutionRecord | None:
        row = self._conn.execute(self._EXECUTION_SELECT + " WHERE e.exec_id = ?", (exec_id,)).fetchone()
        return None if row is None else self._execution_from(row)

    def executions(self, *, unfinished: bool = False) -> list[ExecutionRecord]:
        """Executions with their latest checkpoint, oldest first. `unfinished`
        leaves out COMPLETED, CANCELLED and FAILED ones (what recovery resumes)."""
        sql = self._EXECUTION_SELECT
        params: list[Any] = []
        if unfinished:
            sql += f" WHERE e.state NOT IN ({','.join('?' * len(FINAL_EXECUTION_STATES))})"
            params.extend(sorted(FINAL_EXECUTION_STATES))
        rows = self._conn.execute(sql + " ORDER BY e.rowid", params).fetchall()
        return [self._execution_from(row) for row in rows]

    def execution_transitions(self, exec_id: str) -> list[JournaledEvent]:
        rows = self._conn.execute(
            "SELECT * FROM execution_transitions WHERE exec_id = ? ORDER BY id", (exec_id,)
        ).fetchall()
        return [
            JournaledEvent(
                seq=row["id"],
                recorded_ms=row["recorded_ms"],
                event=ExecutionStateChanged(
                    exec_id=row["exec_id"],
                    state=row["state"],
                    previous=row["previous"],
                    reason=row["reason"],
                    by=row["changed_by"],
                ),
            )
            for row in rows
        ]

    # --- risk, audit, balances ---------------------------------------------------------

    def risk_events(self, *, since_ms: int | None = None, limit: int | None = None) -> list[JournaledEvent]:
        """Risk events oldest first; `limit` keeps the most recent ones."""
        rows = self._newest("risk_events", "recorded_ms", since_ms, limit)
        return [
            JournaledEvent(
                seq=row["id"], recorded_ms=row["recorded_ms"], event=msgspec.json.decode(row["body"], type=ANY_MESSAGE)
            )
            for row in rows
        ]

    def commands(self, *, since_ms: int | None = None, limit: int | None = None) -> list[CommandRecord]:
        """The operator audit trail, oldest first; `limit` keeps the most recent."""
        rows = self._newest("operator_commands", "received_ms", since_ms, limit)
        return [
            CommandRecord(
                id=row["id"],
                uid=row["uid"],
                user=row["user"],
                command=row["command"],
                args=msgspec.json.decode(row["args"]),
                ok=None if row["ok"] is None else bool(row["ok"]),
                result=None if row["result"] is None else msgspec.json.decode(row["result"]),
                received_ms=row["received_ms"],
                finished_ms=row["finished_ms"],
            )
            for row in rows
        ]

    def _newest(self, table: str, time_column: str, since_ms: int | None, limit: int | None) -> list[sqlite3.Row]:
        sql = f"SELECT * FROM {table}"
        params: list[Any] = []
        if since_ms is not None:
            sql += f" WHERE {time_column} >= ?"
            params.append(since_ms)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self._conn.execute(sql, params).fetchall()
        rows.reverse()
        return rows

    def latest_balances(self, venue: str | None = None) -> list[BalanceUpdate]:
        """The most recent journaled balance of every (venue, asset)."""
        sql = """SELECT venue, asset, free, locked, venue_ms FROM balances
                 WHERE id IN (SELECT max(id) FROM balances GROUP BY venue, asset)"""
        params: tuple = ()
        if venue is not None:
            sql += " AND venue = ?"
            params = (venue,)
        rows = self._conn.execute(sql + " ORDER BY venue, asset", params).fetchall()
        return [
            BalanceUpdate(
                venue=row["venue"],
                asset=row["asset"],
                free=Decimal(row["free"]),
                locked=Decimal(row["locked"]),
                venue_ms=row["venue_ms"],
            )
            for row in rows
        ]

    def balance_snapshots(
        self, *, venue: str | None = None, sources: Sequence[str] | None = None
    ) -> list[JournaledBalances]:
        """Balance snapshots oldest first, optionally only of one venue or of some sources
        (the position keeper reads back the adjustments it journaled this way)."""
        clauses: list[str] = []
        params: list[Any] = []
        if venue is not None:
            clauses.append("s.venue = ?")
            params.append(venue)
        if sources is not None:
            if not sources:
                return []
            clauses.append(f"s.source IN ({','.join('?' * len(sources))})")
            params.extend(sources)
        sql = """SELECT s.id AS seq, s.recorded_ms, s.venue AS snapshot_venue, s.source,
                        b.venue, b.asset, b.free, b.locked, b.venue_ms
                 FROM balance_snapshots s LEFT JOIN balances b ON b.snapshot_id = s.id"""
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY s.id, b.id"
        snapshots: list[JournaledBalances] = []
        current: dict[str, Any] | None = None
        for row in self._conn.execute(sql, params):
            if current is None or current["seq"] != row["seq"]:
                if current is not None:
                    snapshots.append(JournaledBalances(**current))
                current = {
                    "seq": row["seq"],
                    "recorded_ms": row["recorded_ms"],
                    "venue": row["snapshot_venue"],
                    "source": row["source"],
                    "balances": (),
                }
            if row["asset"] is not None:
                current["balances"] += (
                    BalanceUpdate(
                        venue=row["venue"],
                        asset=row["asset"],
                        free=Decimal(row["free"]),
                        locked=Decimal(row["locked"]),
                        venue_ms=row["venue_ms"],
                    ),
                )
        if current is not None:
            snapshots.append(JournaledBalances(**current))
        return snapshots

    # --- maintenance -------------------------------------------------------------------

    def integrity_problems(self) -> list[str]:
        """What ``PRAGMA integrity_check`` finds wrong; empty when the file is sound."""
        rows = [row[0] for row in self._conn.execute("PRAGMA integrity_check")]
        return [] if rows == ["ok"] else rows

    def backup(self, destination: str | os.PathLike[str]) -> Path:
        """Write a consistent copy of the journal to `destination` while it stays in use."""
        target = Path(destination)
        if target.exists():
            raise FileExistsError(f"{target} already exists; choose a new file name for the backup")
        target.parent.mkdir(parents=True, exist_ok=True)
        copy = sqlite3.connect(str(target))
        try:
            self._conn.backup(copy)
        finally:
            copy.close()
        return target


def _lock(file: Path) -> int:
    """Take the journal's single-writer lock, or explain who holds it."""
    lock_path = file.with_name(file.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise JournalLocked(
            f"the journal {file} is in use by another process (pid {holder}); stop that tradingd first "
            f"or give this one its own state directory"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd

