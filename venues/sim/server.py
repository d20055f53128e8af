"""The sim venue served over the Binance Spot protocol on loopback.

    server = BinanceServer(world, settings=ServerSettings(port=0))
    await nursery.start(world.run)        # the market keeps moving while served
    await nursery.start(server.run)       # listening once this returns
    server.rest_url, server.stream_url, server.ws_api_url

Two listeners, as Binance has separate hosts for REST and streams:

- ``port``: REST (``/api/v3/...``), HTTP/1.1 through h11 (`server_http`,
  `server_rest`);
- ``ws_port`` (default ``port + 1``): WebSockets through websockets' trio
  server: market streams ``/ws/<name>`` and ``/stream?streams=a/b``
  (`server_market`), the WebSocket API ``/ws-api/v3`` with user-data
  subscriptions (`server_wsapi`, `server_userdata`), and the legacy
  ``/ws/<listenKey>`` user stream.

The engine is the truth: the server only reads it and places or cancels
orders in it on behalf of authenticated clients. Faults (`Faults`, changeable
at run time) alter what clients are told, never the engine's state, so a test
can compare what a client believes with what the venue really did.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from functools import partial
from urllib.parse import parse_qs, urlsplit

import trio
from websockets.http11 import Request, Response
from websockets.trio.server import ServerConnection, serve

from daemon.logs import describe_error, get_logger
from venues.binance.config import BinanceConfig
from venues.binance.signing import HmacSigner
from venues.sim.server_auth import KeyRing
from venues.sim.server_config import ApiCredentials, Faults, ServerSettings, derived_credentials
from venues.sim.server_http import serve_http
from venues.sim.server_market import MarketHub, MarketSession, StreamName
from venues.sim.server_ratelimit import OrderCounter, RequestLimiter
from venues.sim.server_rest import RestApi
from venues.sim.server_userdata import UserDataHub
from venues.sim.server_wire import Shapes, encode
from venues.sim.server_ws import WsSession
from venues.sim.server_wsapi import WsApi, WsApiSession
from venues.sim.world import SimWorld

log = get_logger("venue_server")

WS_API_PATH = "/ws-api/v3"


class ListenKeySession(WsSession):
    """A legacy ``/ws/<listenKey>`` user stream: events unwrapped."""

    kind = "listen_key"

    def deliver(self, payload: bytes) -> None:
        self.push(payload)

    def shutdown_notice(self, payload: bytes) -> None:
        self.push(payload)


class BinanceServer:
    """One sim world behind Binance's REST, streams and WebSocket API.

    `credentials` are extra API keys (e.g. the documentation's example key
    for an account the test configured). Every account of the world also
    gets its derived key; the demo account gets the documented one.
    """

    def __init__(
        self,
        world: SimWorld,
        *,
        settings: ServerSettings | None = None,
        faults: Faults | None = None,
        credentials: Iterable[ApiCredentials] = (),
    ) -> None:
        self.world = world
        self.engine = world.engine
        self.settings = settings or ServerSettings()
        self.faults = faults if faults is not None else Faults()
        self.log = log
        seed = self.settings.seed if self.settings.seed is not None else world.config.seed
        self.rng = random.Random(f"venue-server:{seed}")
        self.keys = KeyRing(derived_credentials(name) for name in (a.name for a in world.config.accounts))
        for c in credentials:
            self.add_credentials(c)
        self.limiter = RequestLimiter(self.settings)
        self._order_counters: dict[str, OrderCounter] = {}
        self.shapes = Shapes(self.engine)
        self.market = MarketHub(self.engine, self.shapes, self.faults, self.rng, log)
        self.user_data = UserDataHub(self.engine, self.shapes, self.faults, self.rng, log)
        self.rest = RestApi(self)
        self.ws_api = WsApi(self)
        self.sessions: set[WsSession] = set()  # every open WebSocket, whatever its kind
        self.host = self.settings.host
        self.port = 0
        self.ws_port = 0
        self.ready = trio.Event()

    # --- addresses and credentials -------------------------------------------------------------

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def stream_url(self) -> str:
        return f"ws://{self.host}:{self.ws_port}"

    @property
    def ws_api_url(self) -> str:
        return f"ws://{self.host}:{self.ws_port}{WS_API_PATH}"

    def credentials(self, account: str = "demo") -> ApiCredentials:
        """The API key and secret that trade for `account`."""
        for c in self.keys.credentials():
            if c.account == account:
                return c
        raise KeyError(f"no API key trades for account {account!r}; add one with add_credentials()")

    def signer(self, account: str = "demo") -> HmacSigner:
        c = self.credentials(account)
        return HmacSigner(c.api_key, c.secret)

    def add_credentials(self, credentials: ApiCredentials) -> None:
        if not self.engine.has_account(credentials.account):
            raise ValueError(f"the sim venue has no account {credentials.account!r}; configure it first")
        self.keys.add(credentials)

    def binance_config(self, **overrides: object) -> BinanceConfig:
        """A `BinanceConfig` pointing the real Binance adapter at this server."""
        urls: dict[str, object] = {
            "rest_url": self.rest_url,
            "market_stream_url": self.stream_url,
            "ws_api_url": self.ws_api_url,
        }
        return BinanceConfig(**(urls | overrides))  # type: ignore[arg-type]

    def venue_toml(
        self, name: str = "binance", *, key_name: str = "loopback_api_key", secret_name: str = "loopback_api_secret"
    ) -> str:
        """A ``[venues.NAME]`` table pointing tradingd at this server (its keys come from `credential_env`)."""
        return (
            f"[venues.{name}]\n"
            'type = "binance"\n'
            f'rest_url = "{self.rest_url}"\n'
            f'market_stream_url = "{self.stream_url}"\n'
            f'ws_api_url = "{self.ws_api_url}"\n'
            f'api_key_name = "{key_name}"\n'
            f'api_secret_name = "{secret_name}"\n'
        )

    def credential_env(
        self, account: str = "demo", *, key_name: str = "loopback_api_key", secret_name: str = "loopback_api_secret"
    ) -> dict[str, str]:
        """Environment variables that hand `account`'s keys to a daemon using `venue_toml`."""
        from daemon.secrets import env_name

        c = self.credentials(account)
        return {env_name(key_name): c.api_key, env_name(secret_name): c.secret}

    # --- state shared by the endpoints -------------------------------------------------------------

    def now_ms(self) -> int:
        return self.engine.now_ms()

    def order_counter(self, account: str) -> OrderCounter:
        counter = self._order_counters.get(account)
        if counter is None:
            counter = self._order_counters[account] = OrderCounter(self.settings)
        return counter

    def uid(self, account: str) -> int:
        return 1_000_000 + self.engine.accounts().index(account)

    def rate_limits(self) -> list[dict]:
        s = self.settings
        limits = (
            ("REQUEST_WEIGHT", "MINUTE", 1, s.request_weight_per_minute),
            ("ORDERS", "SECOND", 10, s.orders_per_10s),
            ("ORDERS", "DAY", 1, s.orders_per_day),
            ("RAW_REQUESTS", "MINUTE", 5, s.raw_requests_per_5m),
        )
        return [
            {"rateLimitType": kind, "interval": interval, "intervalNum": num, "limit": limit}
            for kind, interval, num, limit in limits
        ]

    # --- actions for tests and operators -------------------------------------------------------------

    def drop_connections(self, kind: str | None = None) -> int:
        """Cut WebSocket connections (all, or one kind: market, ws_api, listen_key) without a close frame."""
        dropped = 0
        for session in tuple(self.sessions):
            if kind is None or session.kind == kind:
                session.drop("dropped on request")
                dropped += 1
        log.info("venue_server.dropped_connections", kind=kind or "all", count=dropped)
        return dropped

    def announce_shutdown(self) -> int:
        """Send `serverShutdown` on every WebSocket (clients should reconnect now)."""
        now = self.now_ms()
        payload = encode({"e": "serverShutdown", "E": now})
        count = 0
        for session in tuple(self.sessions):
            if isinstance(session, MarketSession):
                session.push_event("!serverShutdown", payload)
            else:
                session.shutdown_notice(payload)  # type: ignore[attr-defined]
            count += 1
        log.info("venue_server.shutdown_announced", connections=count)
        return count

    # --- running ---------------------------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[BinanceServer] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled; `started(self)` once both listeners accept connections."""
        settings = self.settings
        async with trio.open_nursery() as nursery:
            await nursery.start(self.market.run)
            await nursery.start(self.user_data.run)
            listeners = await nursery.start(
                partial(trio.serve_tcp, self._serve_rest, settings.port, host=settings.host)
            )
            self.port = listeners[0].socket.getsockname()[1]
            ws_port = settings.ws_port
            if ws_port is None:
                ws_port = self.port + 1 if settings.port else 0
            ws_server = await nursery.start(
                partial(
                    serve,
                    self._serve_ws,
                    ws_port,
                    host=settings.host,
                    compression=None,
                    process_request=self._check_ws_request,
                    ping_interval=settings.ping_interval,
                    ping_timeout=settings.ping_timeout,
                    close_timeout=2,
                    max_queue=64,
                    server_header="tradingd-loopback",
                )
            )
            self.ws_port = ws_server.listeners[0].socket.getsockname()[1]
            self.ready.set()
            log.info("venue_server.ready", rest=self.rest_url, streams=self.stream_url, ws_api=self.ws_api_url)
            task_status.started(self)

    async def _serve_rest(self, stream: trio.SocketStream) -> None:
        await serve_http(stream, self.rest.handle, log, max_body=self.settings.max_body_bytes)

    # --- WebSocket routing ----------------------------------------------------------------------------

    def _route(self, path: str) -> tuple[str, list[StreamName] | str] | str:
        """("market", names) / ("combined", names) / ("ws_api", "") / ("listen_key", account), or an error."""
        parts = urlsplit(path)
        if parts.path == WS_API_PATH:
            return "ws_api", ""
        if parts.path == "/stream":
            raw = parse_qs(parts.query).get("streams", [""])[0]
            names = [n for n in raw.split("/") if n]
            kind = "combined"
        elif parts.path == "/ws" or parts.path.startswith("/ws/"):
            names = [n for n in parts.path[len("/ws/"):].split("/") if n]
            if len(names) == 1:
                account = self.user_data.listen_key_account(names[0])
                if account is not None:
                    return "listen_key", account
            kind = "market"
        else:
            return f"unknown path {parts.path}: use /ws/<stream>, /stream?streams=a/b or {WS_API_PATH}"
        parsed = []
        for name in names:
            stream = self.market.parse(name)
            if stream is None:
                return f"unknown stream {name!r} (e.g. btcusdt@depth@100ms, btcusdt@trade, btcusdt@bookTicker)"
            parsed.append(stream)
        return kind, parsed

    def _check_ws_request(self, connection: ServerConnection, request: Request) -> Response | None:
        now = self.now_ms()
        if now < self.limiter.banned_until_ms:
            response = connection.respond(418, "IP banned; see Retry-After.\n")
            response.headers["Retry-After"] = str(max(1, (self.limiter.banned_until_ms - now) // 1000))
            return response
        routed = self._route(request.path)
        if isinstance(routed, str):
            return connection.respond(404 if routed.startswith("unknown path") else 400, routed + "\n")
        return None

    async def _serve_ws(self, ws: ServerConnection) -> None:
        routed = self._route(ws.request.path)  # type: ignore[union-attr]
        if isinstance(routed, str):  # a listen key closed between handshake and here
            return
        kind, detail = routed
        args = (ws, self.settings, self.faults, self.rng, log)
        try:
            if kind == "ws_api":
                await self.ws_api.serve(WsApiSession(*args))
            elif kind == "listen_key":
                session = ListenKeySession(*args)
                detach = self.user_data.attach(detail, session)  # type: ignore[arg-type]
                self.sessions.add(session)
                try:
                    await session.run()
                finally:
                    detach()
                    self.sessions.discard(session)
            else:
                session = MarketSession(*args, combined=kind == "combined")
                self.sessions.add(session)
                try:
                    await self.market.serve(session, detail)  # type: ignore[arg-type]
                finally:
                    self.sessions.discard(session)
        except Exception as exc:
            log.error("venue_server.ws_failed", kind=kind, error=describe_error(exc))
            raise
