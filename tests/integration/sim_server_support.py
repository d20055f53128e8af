"""Helpers for the loopback Binance server tests: signed raw requests, quiet worlds, waiting."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal

import httpx
import trio

from daemon.model import OrderType, Side, TimeInForce
from venues.base import OrderRequest

from venues.binance.signing import HmacSigner, encode_params
from venues.sim.engine import SimEngine
from venues.sim.config import BTCUSDT, ETHUSDT, SimAccountConfig, SimConfig
from venues.sim.server_config import ApiCredentials


def quiet_config(**overrides) -> SimConfig:
    """A world whose market stays still during a test (only our orders move the book)."""
    accounts = (
        SimAccountConfig(name="demo", balances={"USDT": Decimal("100000"), "BTC": Decimal("2"), "ETH": Decimal("20")}),
        SimAccountConfig(name="other", balances={"USDT": Decimal("50000"), "BTC": Decimal("1")}),
    )
    values = {"seed": 11, "market_step": 60.0, "accounts": accounts, "instruments": (BTCUSDT, ETHUSDT)}
    return SimConfig(**(values | overrides))


def now_ms() -> int:
    return int(time.time() * 1000)


def signed_query(credentials: ApiCredentials, params: dict[str, str], *, timestamp: int | None = None) -> str:
    """The query string of a SIGNED request, `timestamp` and `signature` last."""
    params = dict(params)
    params.setdefault("timestamp", str(timestamp if timestamp is not None else now_ms()))
    query = encode_params(params)
    return f"{query}&signature={HmacSigner(credentials.api_key, credentials.secret).sign(query)}"


class Raw:
    """Raw signed calls with httpx: what a client library would send, nothing more."""

    def __init__(self, client: httpx.AsyncClient, credentials: ApiCredentials) -> None:
        self.client = client
        self.credentials = credentials

    async def get(self, path: str, **params: str) -> httpx.Response:
        return await self.client.get(path, params=params)

    async def signed(self, method: str, path: str, params: dict[str, str] | None = None, **kw) -> httpx.Response:
        query = signed_query(self.credentials, params or {}, **kw)
        return await self.client.request(
            method, f"{path}?{query}", headers={"X-MBX-APIKEY": self.credentials.api_key}
        )


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


def assert_code(response: httpx.Response, status: int, code: int) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert body["code"] == code, body
    assert isinstance(body["msg"], str) and body["msg"]
    return body


async def keep_the_book_moving(engine: SimEngine, account: str = "other", symbol: str = "BTCUSDT") -> None:
    """Another trader placing and cancelling far from the touch: a steady stream of depth updates."""
    for i in range(1_000_000):
        cid = f"mover-{i}"
        engine.place_order(account, OrderRequest(
            symbol=symbol, client_order_id=cid, side=Side.BUY, order_type=OrderType.LIMIT,
            price=Decimal("40000") + i % 50, quantity=Decimal("0.001"), time_in_force=TimeInForce.GTC,
        ))  # fmt: skip
        await trio.sleep(0.03)
        engine.cancel_order(account, symbol, client_order_id=cid)
        await trio.sleep(0.03)
