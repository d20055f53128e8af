"""Who is calling, and is the request theirs: Binance's SIGNED rules, server side.

REST: the signature covers the query string exactly as received, then the
body exactly as received, with the `signature` parameter taken out and
nothing else touched (no decoding, re-encoding or reordering). The WebSocket
API signs its params sorted by name, `apiKey` included, in raw UTF-8. Both
payload rules come from `venues.binance.signing`, the client side of the
same contract, so the two can never drift apart.

Checks run in this order, each with Binance's code: the API key (-2014
missing or malformed, -2015 unknown), mandatory `timestamp` and `signature`
(-1102), the signature (-1022), then the timing rule (-1021):
``timestamp < serverTime + 1000 and serverTime - timestamp <= recvWindow``.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation

from venues.binance.signing import HmacSigner, websocket_payload
from venues.sim.server_config import ApiCredentials


class ApiError(Exception):
    """An answer with Binance's error body ``{"code": ..., "msg": ...}`` and HTTP `status`."""

    def __init__(self, status: int, code: int, msg: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(f"{status} {code}: {msg}")
        self.status = status
        self.code = code
        self.msg = msg
        self.headers = list(headers)

    def body(self) -> dict:
        return {"code": self.code, "msg": self.msg}


def mandatory(name: str) -> ApiError:
    return ApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def illegal(name: str, legal: str) -> ApiError:
    return ApiError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '{legal}'.")


MAX_RECV_WINDOW_MS = 60_000
DEFAULT_RECV_WINDOW_MS = 5_000
_US_THRESHOLD = 10**14  # a timestamp this large is in microseconds


class KeyRing:
    """API keys the server knows, each with its secret and account."""

    def __init__(self, credentials: Iterable[ApiCredentials] = ()) -> None:
        self._keys: dict[str, tuple[ApiCredentials, HmacSigner]] = {}
        for c in credentials:
            self.add(c)

    def add(self, credentials: ApiCredentials) -> None:
        self._keys[credentials.api_key] = (credentials, HmacSigner(credentials.api_key, credentials.secret))

    def remove(self, api_key: str) -> None:
        self._keys.pop(api_key, None)

    def __contains__(self, api_key: str) -> bool:
        return api_key in self._keys

    def credentials(self) -> list[ApiCredentials]:
        return [c for c, _ in self._keys.values()]

    def lookup(self, api_key: str | None) -> ApiCredentials:
        """The key's credentials, or the error Binance gives for it."""
        if not api_key:
            raise ApiError(401, -2014, "API-key format invalid.")
        entry = self._keys.get(api_key)
        if entry is None:
            raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        return entry[0]

    def signature_ok(self, api_key: str, payload: str, signature: str) -> bool:
        expected = self._keys[api_key][1].sign(payload)
        return hmac.compare_digest(expected, signature.lower())


def split_signature(raw: str) -> tuple[str, str | None]:
    """(`raw` without its ``signature=`` component, the signature) — order and encoding untouched."""
    if "signature=" not in raw:
        return raw, None
    kept, signature = [], None
    for part in raw.split("&"):
        if part.startswith("signature="):
            signature = part[len("signature="):]
        else:
            kept.append(part)
    return "&".join(kept), signature


def check_timing(params: Mapping[str, object], server_ms: int) -> None:
    """Binance's timing rule for SIGNED requests; raises -1021 (or -1100/-1131 for bad values)."""
    raw_ts = params.get("timestamp")
    if raw_ts is None or raw_ts == "":
        raise mandatory("timestamp")
    try:
        timestamp = int(str(raw_ts))
    except ValueError:
        raise illegal("timestamp", "^[0-9]{1,20}$") from None
    if timestamp >= _US_THRESHOLD:
        timestamp //= 1000
    raw_window = params.get("recvWindow")
    window = Decimal(DEFAULT_RECV_WINDOW_MS)
    if raw_window is not None and raw_window != "":
        try:
            window = Decimal(str(raw_window))
        except InvalidOperation:
            raise illegal("recvWindow", "^[0-9]{1,20}(\\.[0-9]{1,3})?$") from None
        if not window.is_finite() or window <= 0 or window.as_tuple().exponent < -3:  # type: ignore[operator]
            raise illegal("recvWindow", "^[0-9]{1,20}(\\.[0-9]{1,3})?$")
        if window > MAX_RECV_WINDOW_MS:
            raise ApiError(400, -1131, f"recvWindow must be less than {MAX_RECV_WINDOW_MS}.")
    if timestamp >= server_ms + 1000:
        raise ApiError(400, -1021, "Timestamp for this request was 1000ms ahead of the server's time.")
    if server_ms - timestamp > window:
        raise ApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")


def authenticate_rest(
    keys: KeyRing,
    api_key: str | None,
    raw_query: str,
    raw_body: str,
    params: Mapping[str, str],
    server_ms: int,
) -> ApiCredentials:
    """The caller of a SIGNED REST request, verified; raises `ApiError` otherwise."""
    credentials = keys.lookup(api_key)
    query, sig_in_query = split_signature(raw_query)
    body, sig_in_body = split_signature(raw_body)
    signature = sig_in_query if sig_in_query is not None else sig_in_body
    if not signature:
        raise mandatory("signature")
    if not params.get("timestamp"):
        raise mandatory("timestamp")
    if not keys.signature_ok(credentials.api_key, query + body, signature):
        raise ApiError(400, -1022, "Signature for this request is not valid.")
    check_timing(params, server_ms)
    return credentials


def authenticate_ws(keys: KeyRing, params: Mapping[str, object], server_ms: int) -> ApiCredentials:
    """The caller of a signed WebSocket API request (params carry `apiKey` and `signature`)."""
    api_key = params.get("apiKey")
    if not isinstance(api_key, str) or not api_key:
        raise mandatory("apiKey")
    credentials = keys.lookup(api_key)
    signature = params.get("signature")
    if not isinstance(signature, str) or not signature:
        raise mandatory("signature")
    if params.get("timestamp") in (None, ""):
        raise mandatory("timestamp")
    if not keys.signature_ok(api_key, websocket_payload(params), signature):
        raise ApiError(400, -1022, "Signature for this request is not valid.")
    check_timing(params, server_ms)
    return credentials
