"""Request signing for Binance Spot: REST and WebSocket API, HMAC-SHA256 or Ed25519.

The two transports sign different strings:

* REST signs the query string exactly as sent, concatenated with the body
  (no separator), with non-ASCII already percent-encoded. The caller must send
  the very bytes it signed, so `rest_payload` is also what goes on the wire.
* The WebSocket API signs its params sorted by name, *including* `apiKey`,
  joined as `k=v&...` in raw UTF-8 without percent-encoding.

A `Signer` turns payload bytes into the signature string. It never exposes its
secret: not in `repr`, not in `str`, not as a plain attribute (the HMAC key is
held only inside a prepared `hmac` object).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Protocol, runtime_checkable
from urllib.parse import quote


@runtime_checkable
class Signer(Protocol):
    """Signs request payloads for one API key."""

    api_key: str
    key_type: str  # "HMAC_SHA256" | "ED25519"

    def sign(self, payload: str) -> str:
        """The signature as it goes into the request (before URL encoding)."""
        ...

    @property
    def needs_url_encoding(self) -> bool:
        """True when the signature contains characters that must be percent-encoded in a URL."""
        ...


def _mask(api_key: str) -> str:
    """Enough of the key to tell two keys apart in a log line, not enough to use it."""
    return f"{api_key[:4]}…{api_key[-2:]}" if len(api_key) > 8 else "…"


# ---------------------------------------------------------------------------------------
# Payloads
# ---------------------------------------------------------------------------------------


def encode_params(params: Mapping[str, str]) -> str:
    """Percent-encode parameters in the given order, as Binance REST expects them.

    Values are left in the order given, because the signature covers the exact
    string. Letters, digits and `-._~` stay as they are; everything else,
    including non-ASCII, is percent-encoded as UTF-8.
    """
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params.items())


def rest_payload(query: str, body: str = "") -> str:
    """What a REST signature covers: the query string then the body, no separator."""
    return query + body


def websocket_payload(params: Mapping[str, object]) -> str:
    """What a WebSocket API signature covers: params (apiKey included) sorted, raw UTF-8."""
    return "&".join(f"{k}={_ws_value(params[k])}" for k in sorted(params) if k != "signature")


def _ws_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ---------------------------------------------------------------------------------------
# Signers
# ---------------------------------------------------------------------------------------


class HmacSigner:
    """HMAC-SHA256 with an API secret: hex signature."""

    __slots__ = ("api_key", "_prepared")
    key_type = "HMAC_SHA256"
    needs_url_encoding = False

    def __init__(self, api_key: str, secret: str) -> None:
        if not api_key or not secret:
            raise ValueError("an HMAC signer needs both an API key and a secret; check the environment")
        self.api_key = api_key
        # The prepared object holds the padded key; copying it per request is
        # also faster than re-keying.
        self._prepared = hmac.new(secret.encode(), digestmod=hashlib.sha256)

    def sign(self, payload: str) -> str:
        mac = self._prepared.copy()
        mac.update(payload.encode())
        return mac.hexdigest()

    def __repr__(self) -> str:
        return f"HmacSigner(api_key={_mask(self.api_key)!r})"

    __str__ = __repr__

    def __reduce__(self):  # pickling would write the secret out
        raise TypeError("signers hold secrets and cannot be pickled")


class Ed25519Signer:
    """Ed25519 with a private key: base64 signature (percent-encode it in URLs).

    Binance recommends Ed25519 keys. This needs the `cryptography` package;
    the class can be imported without it and says what is missing when built.
    """

    __slots__ = ("api_key", "_key")
    key_type = "ED25519"
    needs_url_encoding = True

    def __init__(self, api_key: str, private_key: object) -> None:
        """`private_key` is a `cryptography` Ed25519PrivateKey; see `from_pem` / `from_seed`."""
        if not api_key:
            raise ValueError("an Ed25519 signer needs an API key")
        self.api_key = api_key
        self._key = private_key

    @classmethod
    def from_pem(cls, api_key: str, pem: bytes, password: bytes | None = None) -> Ed25519Signer:
        serialization, ed25519 = _cryptography()
        key = serialization.load_pem_private_key(pem, password=password)
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise ValueError("the PEM file does not hold an Ed25519 private key")
        return cls(api_key, key)

    @classmethod
    def from_seed(cls, api_key: str, seed: bytes) -> Ed25519Signer:
        """From the raw 32-byte private key (RFC 8032 'secret key')."""
        _, ed25519 = _cryptography()
        return cls(api_key, ed25519.Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, payload: str) -> str:
        return base64.b64encode(self._key.sign(payload.encode())).decode("ascii")  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"Ed25519Signer(api_key={_mask(self.api_key)!r})"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("signers hold secrets and cannot be pickled")


def _cryptography():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "Ed25519 keys need the 'cryptography' package; install it, or use an HMAC key"
        ) from exc
    return serialization, ed25519


def make_signer(key_type: str, api_key: str, secret: str) -> Signer:
    """A signer from configuration: `hmac` takes the secret itself, `ed25519` a PEM private key."""
    kind = key_type.lower()
    if kind == "hmac":
        return HmacSigner(api_key, secret)
    if kind == "ed25519":
        return Ed25519Signer.from_pem(api_key, secret.encode())
    raise ValueError(f"unknown key type {key_type!r}; use 'hmac' or 'ed25519'")
