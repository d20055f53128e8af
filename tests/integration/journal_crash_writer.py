"""Child process of the journal crash test: journals fills until it is killed.

    python journal_crash_writer.py JOURNAL FIRST_TRADE_ID

Several tasks journal an intent and then fills for it through the journal
actor, concurrently (so commits are grouped), starting at FIRST_TRADE_ID and
counting up. After each fill is acknowledged the child writes one line,
``<trade_id> <1 if new else 0>``, to stdout with a single write(2), so the
parent sees exactly the acknowledgements that were given before the kill.
The content of a fill is a function of its trade id, so the parent can check
what it finds.
"""

from __future__ import annotations

import os
import sys
from decimal import Decimal
from itertools import count

import trio

from daemon import logs
from daemon.journal import Journal
from daemon.messages import Fill, OrderIntent
from daemon.model import OrderType, Side

WRITERS = 8
FILLS_PER_ORDER = 4


def order_of(trade_id: int) -> str:
    return f"td-crash-{trade_id // FILLS_PER_ORDER}"


def intent_for(trade_id: int) -> OrderIntent:
    seq = trade_id // FILLS_PER_ORDER
    return OrderIntent(
        client_order_id=order_of(trade_id),
        exec_id="crash",
        seq=seq,
        venue="sim",
        symbol="BTCUSDT",
        side=Side.BUY,
        order_type=OrderType.LIMIT,
        quantity=Decimal(FILLS_PER_ORDER),
        price=Decimal("100.01"),
    )


def fill_for(trade_id: int) -> Fill:
    return Fill(
        venue="sim",
        symbol="BTCUSDT",
        client_order_id=order_of(trade_id),
        trade_id=str(trade_id),
        side=Side.BUY,
        price=Decimal("100.01") - Decimal(trade_id % 7) / 100,
        qty=Decimal(1 + trade_id % 5) / 4,
        fee=Decimal(trade_id % 3) / 1000,
        fee_asset="USDT",
        is_maker=trade_id % 2 == 0,
        venue_ms=1_700_000_000_000 + trade_id,
    )


async def main(path: str, first: int) -> None:
    journal = Journal(path)
    trade_ids = count(first)

    async def writer() -> None:
        for trade_id in trade_ids:
            if trade_id % FILLS_PER_ORDER == 0 or trade_id == first:
                await journal.record_intent(intent_for(trade_id))
            new = await journal.record_fill(fill_for(trade_id))
            os.write(1, f"{trade_id} {int(new)}\n".encode())

    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        for _ in range(WRITERS):
            nursery.start_soon(writer)


if __name__ == "__main__":
    logs.sink.stream = sys.stderr  # stdout carries the acknowledgements only
    trio.run(main, sys.argv[1], int(sys.argv[2]))
