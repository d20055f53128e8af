"""The WebSocket API (``/ws-api/v3``): requests, answers, and user-data subscriptions.

Requests are ``{"id", "method", "params"}``; answers ``{"id", "status",
"result" | "error", "rateLimits"}``, where `status` is the HTTP status the
same REST call would get. Served methods: ``ping``, ``time``,
``userDataStream.subscribe.signature`` (signed with the WebSocket API rule,
any key type Binance allows; HMAC here) and ``userDataStream.unsubscribe``.
A subscription's events arrive as ``{"subscriptionId": N, "event": {...}}``;
one subscription per account per connection, as on Binance.

Requests draw on the same request-weight budget as REST: every client of the
server is one IP.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec
from websockets.exceptions import ConnectionClosed

from venues.sim.server_auth import ApiError, authenticate_ws
from venues.sim.server_wire import encode
from venues.sim.server_ws import WsSession

if TYPE_CHECKING:
    from venues.sim.server import BinanceServer

_WEIGHTS = {
    "ping": 1,
    "time": 1,
    "userDataStream.subscribe.signature": 2,
    "userDataStream.subscribe": 2,
    "userDataStream.unsubscribe": 2,
}


class WsApiSession(WsSession):
    kind = "ws_api"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.subscriptions: dict[int, tuple[str, Callable[[], None]]] = {}
        self._next_subscription = 0

    def shutdown_notice(self, payload: bytes) -> None:
        self.push(b'{"event":' + payload + b"}")

    def detach_all(self) -> None:
        for _, detach in self.subscriptions.values():
            detach()
        self.subscriptions.clear()


class _Subscription:
    """A sink of the user-data hub: one subscription on one connection."""

    __slots__ = ("session", "prefix")

    def __init__(self, session: WsApiSession, subscription_id: int) -> None:
        self.session = session
        self.prefix = b'{"subscriptionId":' + str(subscription_id).encode() + b',"event":'

    def deliver(self, payload: bytes) -> None:
        self.session.push(self.prefix + payload + b"}")


class WsApi:
    """Answers WebSocket API requests for one server."""

    def __init__(self, server: BinanceServer) -> None:
        self.server = server

    async def serve(self, session: WsApiSession) -> None:
        server = self.server
        server.sessions.add(session)
        try:
            await session.run(self._read_requests)
        finally:
            session.detach_all()
            server.sessions.discard(session)

    async def _read_requests(self, session: WsApiSession) -> None:
        try:
            while True:
                message = await session.ws.recv()
                session.push(encode(self.answer(session, message)))
        except ConnectionClosed:
            pass

    def _rate_limits(self, now_ms: int) -> list[dict]:
        limiter = self.server.limiter
        return [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": limiter.weight.limit,
                "count": limiter.used_weight(now_ms),
            }
        ]

    def answer(self, session: WsApiSession, message: str | bytes) -> dict:
        server = self.server
        now_ms = server.now_ms()
        try:
            request = msgspec.json.decode(message)
        except msgspec.DecodeError as exc:
            return self._error(None, ApiError(400, -1100, f"Malformed request: {exc}"), now_ms)
        if not isinstance(request, dict):
            return self._error(None, ApiError(400, -1100, "Malformed request: expected a JSON object"), now_ms)
        request_id = request.get("id")
        method = request.get("method")
        params = request.get("params", {})
        if not isinstance(params, dict):
            return self._error(request_id, ApiError(400, -1100, "Malformed request: params must be an object"), now_ms)
        weight = _WEIGHTS.get(method) if isinstance(method, str) else None
        if weight is None:
            return self._error(request_id, ApiError(400, -1100, f"Unknown method {method!r}."), now_ms)
        verdict = server.limiter.admit(weight, now_ms)
        if not verdict.ok:
            error = {
                "code": verdict.code,
                "msg": verdict.msg,
                "data": {"serverTime": now_ms, "retryAfter": now_ms + verdict.retry_after * 1000},
            }
            return {"id": request_id, "status": verdict.status, "error": error, "rateLimits": self._rate_limits(now_ms)}
        try:
            result = self._call(session, method, params, now_ms)
        except ApiError as exc:
            return self._error(request_id, exc, now_ms)
        return {"id": request_id, "status": 200, "result": result, "rateLimits": self._rate_limits(now_ms)}

    def _error(self, request_id: object, exc: ApiError, now_ms: int) -> dict:
        return {"id": request_id, "status": exc.status, "error": exc.body(), "rateLimits": self._rate_limits(now_ms)}

    def _call(self, session: WsApiSession, method: str, params: dict, now_ms: int) -> dict:
        if method == "ping":
            return {}
        if method == "time":
            return {"serverTime": now_ms}
        if method == "userDataStream.subscribe":
            raise ApiError(
                400,
                -1100,
                "userDataStream.subscribe needs a session.logon, which this server does not offer; "
                "use userDataStream.subscribe.signature",
            )
        if method == "userDataStream.subscribe.signature":
            credentials = authenticate_ws(self.server.keys, params, now_ms)
            if any(account == credentials.account for account, _ in session.subscriptions.values()):
                raise ApiError(400, -2035, "User Data Stream subscription already active.")
            subscription_id = session._next_subscription
            session._next_subscription += 1
            detach = self.server.user_data.attach(credentials.account, _Subscription(session, subscription_id))
            session.subscriptions[subscription_id] = (credentials.account, detach)
            self.server.log.info(
                "venue_server.user_subscribed", account=credentials.account, subscription=subscription_id
            )
            return {"subscriptionId": subscription_id}
        # userDataStream.unsubscribe
        wanted = params.get("subscriptionId")
        if wanted is None:
            session.detach_all()
            return {}
        if not isinstance(wanted, int) or wanted not in session.subscriptions:
            raise ApiError(400, -2036, f"No subscription with id {wanted!r} on this connection.")
        _, detach = session.subscriptions.pop(wanted)
        detach()
        return {}
