"""Fault injection of the loopback Binance server: clients are misled, the engine never is."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest
from msgspec.structs import replace
import trio
from websockets.exceptions import ConnectionClosedError
from websockets.trio.client import connect

from daemon.model import OrderType, Side, TimeInForce
from sim_server_support import Raw, assert_code, keep_the_book_moving, quiet_config, wait_for
from venues.base import BookDiff, OrderNotFound, OrderRequest, StreamNotice, UnknownOutcome
from venues.binance import codec
from venues.binance.adapter import BinanceAdapter
from venues.orderbook import BookSync, LocalBook, SyncAction
from venues.sim.serve import open_binance_server
from venues.sim.server_config import Faults

pytestmark = pytest.mark.slow

ORDER = "/api/v3/order"


def resting(cid: str, price: str = "50000.00") -> dict[str, str]:
    return {
        "symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC",
        "price": price, "quantity": "0.001", "newClientOrderId": cid,
    }  # fmt: skip


def request(cid: str) -> OrderRequest:
    return OrderRequest(
        symbol="BTCUSDT", client_order_id=cid, side=Side.BUY, order_type=OrderType.LIMIT,
        price=Decimal("50000"), quantity=Decimal("0.001"), time_in_force=TimeInForce.GTC,
    )  # fmt: skip


def open_ids(server) -> list[str]:
    return [o.client_order_id for o in server.engine.open_orders("demo")]


async def test_errors_before_and_after_execution():
    faults = Faults(paths=(ORDER,))
    async with open_binance_server(quiet_config(), faults=faults) as server, httpx.AsyncClient(base_url=server.rest_url) as http:
        raw = Raw(http, server.credentials("demo"))
        faults.error_rate = 1.0
        r = await raw.signed("POST", ORDER, resting("before"))
        assert r.status_code in (500, 503) and r.json()["code"] in (-1001, -1008)
        assert (await raw.get("/api/v3/ping")).status_code == 200  # other paths untouched
        faults.error_rate, faults.error_after_rate = 0.0, 1.0
        r = await raw.signed("POST", ORDER, resting("after"))
        assert r.status_code in (500, 503)
        faults.error_after_rate, faults.timeout_rate = 0.0, 1.0
        assert_code(await raw.signed("POST", ORDER, resting("timeout-before")), 503, -1007)
        faults.timeout_rate, faults.timeout_after_rate = 0.0, 1.0
        assert_code(await raw.signed("POST", ORDER, resting("timeout-after")), 503, -1007)
        assert open_ids(server) == ["after", "timeout-after"]  # the "unknown status" orders exist

        # The project's adapter reports the unknown outcome and settles it by query.
        adapter = BinanceAdapter(server.binance_config(), server.signer())
        try:
            with pytest.raises(UnknownOutcome):
                await adapter.place_order(request("adapter-1"))
            faults.timeout_after_rate = 0.0
            state = await adapter.query_order("BTCUSDT", "adapter-1")
            assert state.venue_order_id == server.engine.query_order("demo", "BTCUSDT", client_order_id="adapter-1").venue_order_id
            # A cancel answered 5xx after it happened: the order is gone, and cancelling again says so.
            faults.error_after_rate = 1.0
            r = await raw.signed("DELETE", ORDER, {"symbol": "BTCUSDT", "origClientOrderId": "after"})
            assert r.status_code in (500, 503)
            faults.error_after_rate = 0.0
            with pytest.raises(OrderNotFound):
                await adapter.cancel_order("BTCUSDT", "after")
        finally:
            await adapter.aclose()
        assert "after" not in open_ids(server)
        assert server.engine.audit() == []


async def test_fault_decisions_are_deterministic_under_the_seed():
    async def statuses() -> list[int]:
        faults = Faults(error_rate=0.3, timeout_rate=0.2, paths=("/api/v3/time",))
        async with open_binance_server(quiet_config(seed=5), faults=faults) as server:
            async with httpx.AsyncClient(base_url=server.rest_url) as http:
                return [(await http.get("/api/v3/time")).status_code for _ in range(30)]

    first, second = await statuses(), await statuses()
    assert first == second and 200 in first and 503 in first


async def test_429_burst_and_latency():
    faults = Faults(burst_429=2, burst_retry_after=1)
    async with open_binance_server(quiet_config(), faults=faults) as server, httpx.AsyncClient(base_url=server.rest_url) as http:
        for _ in range(2):
            r = await http.get("/api/v3/time")
            assert_code(r, 429, -1003)
            assert r.headers["Retry-After"] == "1"
        await trio.sleep(1.05)
        assert (await http.get("/api/v3/time")).status_code == 200
        faults.latency = 0.3
        start = trio.current_time()
        assert (await http.get("/api/v3/time")).status_code == 200
        assert trio.current_time() - start >= 0.3  # a lower bound: the server slept at least this long


async def test_dropped_connections_and_server_shutdown():
    faults = Faults()
    async with open_binance_server(quiet_config(), faults=faults) as server:
        async with connect(f"{server.stream_url}/ws/btcusdt@trade") as raw_ws, connect(
            f"{server.stream_url}/stream?streams=btcusdt@trade"
        ) as combined, connect(server.ws_api_url) as api:
            await wait_for(lambda: len(server.sessions) == 3)
            assert server.announce_shutdown() == 3
            assert json.loads(await raw_ws.recv())["e"] == "serverShutdown"
            frame = json.loads(await combined.recv())
            assert frame["stream"] == "!serverShutdown" and frame["data"]["e"] == "serverShutdown"
            notice = codec.frame_user_events("sim", codec.decode_ws_api_frame(await api.recv()))
            assert notice == [StreamNotice(kind=codec.SERVER_SHUTDOWN, detail="server shutdown announced")]
            assert server.drop_connections("market") == 2
            for ws in (raw_ws, combined):
                with pytest.raises(ConnectionClosedError), trio.fail_after(5):
                    await ws.recv()
                assert ws.close_code is None or ws.close_code == 1006  # no close frame: a lost connection
            await api.send(json.dumps({"id": 1, "method": "ping"}))
            assert json.loads(await api.recv())["status"] == 200  # other kinds stay up
        # A share of frames: with 1.0 the first frame a client would get drops it instead.
        faults.ws_drop_rate = 1.0
        async with connect(f"{server.stream_url}/ws/btcusdt@trade") as ws:
            ask = server.engine.best_ask("BTCUSDT")[0]
            server.engine.place_order("other", OrderRequest(
                symbol="BTCUSDT", client_order_id="t", side=Side.BUY, order_type=OrderType.LIMIT,
                price=ask, quantity=Decimal("0.01"), time_in_force=TimeInForce.GTC,
            ))  # fmt: skip
            with pytest.raises(ConnectionClosedError), trio.fail_after(5):
                await ws.recv()


async def test_depth_gap_and_stale_snapshot_are_caught_by_the_documented_sync():
    faults = Faults(stale_snapshot_age=30.0)  # older than anything kept: the first snapshot of the run
    async with open_binance_server(quiet_config(), faults=faults) as server, trio.open_nursery() as nursery:
        nursery.start_soon(keep_the_book_moving, server.engine)
        adapter = BinanceAdapter(server.binance_config(), server.signer())
        sync = BookSync(LocalBook("BTCUSDT", Decimal("0.01")))
        actions: list[SyncAction] = []
        await trio.sleep(0.3)  # let the book move on from that first snapshot
        try:
            with trio.fail_after(15):
                await _sync_through_faults(adapter, sync, actions, faults)
        finally:
            await adapter.aclose()
            nursery.cancel_scope.cancel()
        assert sync.stale_snapshots == 1 and sync.gaps == 1
        assert actions.count(SyncAction.SYNCED) == 2
        assert server.market.gaps_injected == 1 and faults.depth_gaps == 0 and faults.stale_snapshots == 0


async def _sync_through_faults(adapter, sync, actions, faults) -> None:
    """Follow the documented procedure: one stale snapshot, then one gap, each recovered from."""
    gap_asked = False
    async with adapter.market_stream(["BTCUSDT"]) as events:
        faults.stale_snapshots = 1
        async for event in events:
            if type(event) is not BookDiff:
                continue
            actions.append(sync.on_diff(event))
            if sync.needs_snapshot and sync.buffered >= 2:
                actions.append(sync.on_snapshot(await adapter.book_snapshot("BTCUSDT", 1000)))
            if sync.is_live and faults.stale_snapshots == 0 and not gap_asked:
                faults.depth_gaps = 1
                gap_asked = True
            if SyncAction.RESYNC in actions and sync.is_live:
                return


async def test_duplicated_and_reordered_user_events():
    faults = Faults()
    async with open_binance_server(quiet_config(), faults=faults) as server:
        adapter = BinanceAdapter(server.binance_config(), server.signer())
        try:
            async with adapter.user_stream() as events:
                faults.user_duplicate_rate = 1.0
                server.engine.place_order("demo", request("dup-1"))
                got = [await events.__anext__() for _ in range(4)]
                assert [type(e).__name__ for e in got] == ["OrderUpdate", "OrderUpdate", "BalanceUpdate", "BalanceUpdate"]
                assert replace(got[0], ts=0.0) == replace(got[1], ts=0.0)  # the same event twice
                faults.user_duplicate_rate, faults.user_reorder_rate = 0.0, 1.0
                server.engine.cancel_order("demo", "BTCUSDT", client_order_id="dup-1")
                got = [await events.__anext__() for _ in range(2)]
                assert [type(e).__name__ for e in got] == ["BalanceUpdate", "OrderUpdate"]  # swapped
                assert got[1].status.value == "CANCELED"
        finally:
            await adapter.aclose()
        assert server.engine.open_orders("demo") == [] and server.engine.audit() == []
