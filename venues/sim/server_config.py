"""Settings of the loopback Binance server: where it listens, its limits, its faults, its keys.

``tradingd venue --protocol binance --config FILE`` reads an optional
``[venue_server]`` table (and its ``[venue_server.faults]`` sub-table) next
to the ``[venues.NAME] type = "sim"`` table it serves. Every key has a
default, so the table can be left out.

`Faults` is deliberately mutable: a test holds the server's `Faults` and
changes it while the server runs ("from now on, answer 30% of order calls
with 503 after executing them"). Every fault is decided by the server's own
seeded random generator, so a run with the same seed and the same requests
injects the same faults.

The API keys guard nothing real: the venue is a simulation on loopback. The
demo account's key and secret are fixed and documented so that any Binance
client can be pointed at the server without setup; other accounts get keys
derived from their names, printed when the server starts. They are not
config keys on purpose: the daemon's config loader refuses secrets in files.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

import msgspec

_Share = Annotated[float, msgspec.Meta(ge=0, le=1)]
_NonNegative = Annotated[float, msgspec.Meta(ge=0)]
_Count = Annotated[int, msgspec.Meta(ge=0)]

DEFAULT_PORT = 18080  # REST; the WebSocket endpoints listen on the next port (18081)

# The demo account's credentials: fixed, documented, printed at start. They guard nothing.
DEMO_ACCOUNT = "demo"
DEMO_API_KEY = "tradingdLoopbackDemoKey0000000000000000000000000000000000000000"
DEMO_API_SECRET = "tradingdLoopbackDemoSecret000000000000000000000000000000000000"


class ApiCredentials(msgspec.Struct, frozen=True):
    """An API key, its HMAC secret, and the sim account it trades for."""

    api_key: str
    secret: str
    account: str

    def __repr__(self) -> str:  # keep secrets out of test failure output and logs
        return f"ApiCredentials(api_key={self.api_key[:6]}…, account={self.account!r})"


def derived_credentials(account: str) -> ApiCredentials:
    """Stable credentials for a configured account (the demo account gets the documented ones)."""
    if account == DEMO_ACCOUNT:
        return ApiCredentials(DEMO_API_KEY, DEMO_API_SECRET, account)
    digest = hashlib.sha256(f"tradingd loopback venue account {account}".encode()).hexdigest()
    secret = hashlib.sha256(f"tradingd loopback venue secret {account}".encode()).hexdigest()
    return ApiCredentials(f"loopback{digest[:56]}", secret, account)


class Faults(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What the server does wrong, on purpose. Change the fields at run time to steer a test.

    Shares are probabilities per request (REST) or per frame (streams). The
    counters (`burst_429`, `depth_gaps`, `stale_snapshots`) are one-shot: each
    affected request or update decrements them. "After" faults execute the
    request in the engine first and then answer with an error, which is the
    "unknown status" case a client must settle by querying. Faults change
    only what clients are told, never the engine's own state.
    """

    # --- REST ------------------------------------------------------------------------
    latency: _NonNegative = 0.0  # seconds added to every REST answer (half before, half after the work)
    latency_jitter: _NonNegative = 0.0  # plus up to this many seconds, uniformly
    error_rate: _Share = 0.0  # answered 500/503 without doing anything
    error_after_rate: _Share = 0.0  # executed, then answered 500/503
    timeout_rate: _Share = 0.0  # answered -1007 without doing anything
    timeout_after_rate: _Share = 0.0  # executed, then answered -1007
    paths: tuple[str, ...] = ()  # REST paths the shares above apply to; empty: all but /api/v3/ping
    burst_429: _Count = 0  # the next N REST calls are answered 429 whatever the weight used
    burst_retry_after: Annotated[int, msgspec.Meta(ge=1)] = 1  # Retry-After (s) of those answers
    # --- market streams --------------------------------------------------------------
    ws_drop_rate: _Share = 0.0  # a stream or WebSocket API connection drops (no close frame) before a frame
    depth_gaps: _Count = 0  # the next N depth updates someone follows are never sent (U > last u + 1)
    depth_gap_rate: _Share = 0.0
    stale_snapshots: _Count = 0  # the next N /depth answers come from `stale_snapshot_age` ago
    stale_snapshot_rate: _Share = 0.0
    stale_snapshot_age: _NonNegative = 2.0
    # --- user data -------------------------------------------------------------------
    user_duplicate_rate: _Share = 0.0  # a user-data event is sent twice
    user_reorder_rate: _Share = 0.0  # a user-data event is held back and sent after the next one

    def applies_to(self, path: str) -> bool:
        if self.paths:
            return path in self.paths
        return path != "/api/v3/ping"


class ServerSettings(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Where the server listens and how strict it is; defaults follow Binance Spot.

    `port` serves REST; `ws_port` (default `port + 1`) serves the market
    streams (``/ws/...``, ``/stream?streams=...``) and the WebSocket API
    (``/ws-api/v3``). Port 0 picks free ports (tests). Rate limits are per
    server (every client on loopback is the same IP, as on Binance); order
    limits are per account. A client that sends more than `ban_after`
    requests while told to wait by a 429 is banned (418) for `ban_seconds`,
    doubling on each repeat.
    """

    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = DEFAULT_PORT
    ws_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] | None = None
    venue: str | None = None  # which [venues.NAME] sim table to serve (default: the first)
    request_weight_per_minute: Annotated[int, msgspec.Meta(ge=1)] = 6000
    raw_requests_per_5m: Annotated[int, msgspec.Meta(ge=1)] = 61000
    orders_per_10s: Annotated[int, msgspec.Meta(ge=1)] = 100
    orders_per_day: Annotated[int, msgspec.Meta(ge=1)] = 200_000
    ban_after: Annotated[int, msgspec.Meta(ge=0)] = 10
    ban_seconds: Annotated[float, msgspec.Meta(gt=0)] = 120.0
    ping_interval: Annotated[float, msgspec.Meta(gt=0)] = 20.0  # server pings on every WebSocket
    ping_timeout: Annotated[float, msgspec.Meta(gt=0)] = 60.0  # no pong within this: disconnect
    max_connection_seconds: Annotated[float, msgspec.Meta(gt=0)] = 86_400.0  # Binance's 24 h
    stream_queue: Annotated[int, msgspec.Meta(ge=16)] = 4096  # frames a slow client may lag before it is dropped
    stream_messages_per_second: Annotated[int, msgspec.Meta(ge=1)] = 5  # a market-stream client sending more is cut off
    listen_key_minutes: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    max_body_bytes: Annotated[int, msgspec.Meta(ge=1024)] = 64 * 1024
    seed: int | None = None  # fault decisions; default: the sim venue's seed

    def __post_init__(self) -> None:
        if self.ws_port is not None and self.port and self.ws_port == self.port:
            raise ValueError(f"ws_port: must differ from port ({self.port}); REST and WebSocket listen apart")


class VenueServerSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The ``[venue_server]`` table: settings, plus ``[venue_server.faults]``."""

    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = DEFAULT_PORT
    ws_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] | None = None
    venue: str | None = None
    request_weight_per_minute: Annotated[int, msgspec.Meta(ge=1)] = 6000
    orders_per_10s: Annotated[int, msgspec.Meta(ge=1)] = 100
    orders_per_day: Annotated[int, msgspec.Meta(ge=1)] = 200_000
    ban_after: Annotated[int, msgspec.Meta(ge=0)] = 10
    ban_seconds: Annotated[float, msgspec.Meta(gt=0)] = 120.0
    ping_interval: Annotated[float, msgspec.Meta(gt=0)] = 20.0
    ping_timeout: Annotated[float, msgspec.Meta(gt=0)] = 60.0
    max_connection_seconds: Annotated[float, msgspec.Meta(gt=0)] = 86_400.0
    stream_messages_per_second: Annotated[int, msgspec.Meta(ge=1)] = 5
    faults: Faults = msgspec.field(default_factory=Faults)

    def settings(self) -> ServerSettings:
        fields = {f: getattr(self, f) for f in self.__struct_fields__ if f != "faults"}
        return ServerSettings(**fields)


def _register() -> None:
    """Let `tradingd venue --config` and `tradingd check-config` read ``[venue_server]``."""
    from daemon.config import register_section

    register_section("venue_server", VenueServerSection)


_register()
