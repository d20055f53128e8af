"""Configuration of a Binance Spot venue: a ``[venues.NAME]`` table with ``type = "binance"``.

The table names *which* secrets hold the API key and secret, never their
values: they are read through `daemon.secrets` from systemd credentials
(`$CREDENTIALS_DIRECTORY/<name>`) or the environment (`TRADINGD_<NAME>`), and
registered with the log sink so they can never show up in a log line.
"""

from __future__ import annotations

from typing import Literal

import msgspec

import daemon.logs as logs
from daemon.secrets import env_name, read_secret
from venues.binance.signing import Signer, make_signer


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ValueError(f"{key}: {message}")


class BinanceConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Defaults point at Binance Spot production; `testnet()` gives the Spot testnet."""

    type: Literal["binance"] = "binance"
    rest_url: str = "https://api.binance.com"
    market_stream_url: str = "wss://stream.binance.com:9443"
    ws_api_url: str = "wss://ws-api.binance.com:443/ws-api/v3"

    # Credentials: the *names* of the secrets (see daemon.secrets), not their values.
    api_key_name: str = "binance_api_key"
    api_secret_name: str = "binance_api_secret"
    key_type: Literal["hmac", "ed25519"] = "hmac"  # ed25519: the secret is the PEM private key

    recv_window_ms: int = 5000
    connect_timeout: float = 5.0
    request_timeout: float = 10.0  # Binance's own backend timeout is 10 s (-1007)
    emergency_timeout: float = 5.0
    max_retries: int = 3  # for GET/DELETE only; an order POST is never retried
    retry_backoff: float = 0.25  # first retry delay in seconds; doubles, with jitter
    max_connections: int = 10  # per HTTP pool (market data, orders, emergency)

    depth_speed_ms: Literal[100, 1000] = 100
    ws_open_timeout: float = 10.0
    ws_ping_interval: float = 20.0
    ws_ping_timeout: float = 20.0

    rate_limit_reserve: float = 0.1  # share of each rate window kept for emergency cancels
    rate_limit_max_wait: float = 10.0  # wait at most this long for budget, else RateLimited

    def __post_init__(self) -> None:
        _require(0 < self.recv_window_ms <= 60_000, "recv_window_ms", "must be between 1 and 60000 (Binance's maximum)")
        for key in ("connect_timeout", "request_timeout", "emergency_timeout", "ws_open_timeout", "retry_backoff"):
            _require(getattr(self, key) > 0, key, "must be positive")
        for key in ("ws_ping_interval", "ws_ping_timeout", "rate_limit_max_wait"):
            _require(getattr(self, key) >= 0, key, "must not be negative")
        _require(self.max_retries >= 0, "max_retries", "must be 0 or more")
        _require(self.max_connections >= 1, "max_connections", "must be at least 1")
        _require(0 <= self.rate_limit_reserve < 1, "rate_limit_reserve", "must be a fraction in [0, 1)")
        for key, schemes in (
            ("rest_url", ("http://", "https://")),
            ("market_stream_url", ("ws://", "wss://")),
            ("ws_api_url", ("ws://", "wss://")),
        ):
            url = getattr(self, key)
            _require(url.startswith(schemes), key, f"must start with {' or '.join(schemes)}, got {url!r}")
            _require(not url.endswith("/"), key, f"must not end with '/': {url!r}")

    @classmethod
    def testnet(cls, **overrides: object) -> BinanceConfig:
        """The Spot testnet's endpoints (keys from https://testnet.binance.vision)."""
        urls: dict[str, object] = {
            "rest_url": "https://testnet.binance.vision",
            "market_stream_url": "wss://stream.testnet.binance.vision",
            "ws_api_url": "wss://ws-api.testnet.binance.vision/ws-api/v3",
        }
        return cls(**(urls | overrides))  # type: ignore[arg-type]


class MissingCredentials(LookupError):
    """The venue's API key or secret is not set."""


def signer_from_secrets(config: BinanceConfig) -> Signer:
    """The signer for `config`, its key and secret read through `daemon.secrets`."""
    # Stray whitespace (an `echo` into a file, a newline in an env file) would only
    # give -1022 bad-signature errors later; Binance keys never contain any.
    api_key = (read_secret(config.api_key_name) or "").strip()
    secret = (read_secret(config.api_secret_name) or "").strip()
    logs.sink.register_secret(api_key)
    logs.sink.register_secret(secret)
    missing = [name for name, value in ((config.api_key_name, api_key), (config.api_secret_name, secret)) if not value]
    if missing:
        where = " and ".join(f"$CREDENTIALS_DIRECTORY/{n} or {env_name(n)}" for n in missing)
        raise MissingCredentials(
            f"Binance credentials not found: set {where}; they are never read from the config file"
        )
    return make_signer(config.key_type, api_key, secret)


def _register() -> None:
    """Let the daemon's config loader decode ``[venues.NAME]`` tables with ``type = "binance"``."""
    from daemon.config import register_venue_type

    register_venue_type("binance", BinanceConfig)


_register()
