"""Binance signing: the documented vectors, and secrets that stay secret."""

import pickle

import pytest

from venues.binance.signing import (
    Ed25519Signer,
    HmacSigner,
    Signer,
    encode_params,
    make_signer,
    rest_payload,
    websocket_payload,
)

# Binance's documented example keys (public documentation, not real credentials)
API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"


def _order_params(symbol: str) -> dict[str, str]:
    return {
        "symbol": symbol,
        "side": "BUY",
        "type": "LIMIT",
        "timeInForce": "GTC",
        "quantity": "1",
        "price": "0.1",
        "recvWindow": "5000",
        "timestamp": "1499827319559",
    }


def test_rest_example_request_produces_the_documented_signature():
    query = encode_params(_order_params("LTCBTC"))
    assert query == (
        "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
    )
    assert HmacSigner(API_KEY, SECRET).sign(rest_payload(query)) == (
        "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
    )


def test_rest_non_ascii_symbol_is_percent_encoded_before_signing():
    query = encode_params(_order_params("１２３４５６"))
    assert query.startswith("symbol=%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96&side=BUY")
    assert HmacSigner(API_KEY, SECRET).sign(query) == "e1353ec6b14d888f1164ae9af8228a3dbd508bc82eb867db8ab6046442f33ef3"


def test_rest_payload_is_query_then_body_without_separator():
    signer = HmacSigner(API_KEY, SECRET)
    whole = encode_params(_order_params("LTCBTC"))
    query, body = whole[:40], whole[40:]
    assert signer.sign(rest_payload(query, body)) == signer.sign(whole)


def test_client_order_id_characters_are_encoded():
    assert encode_params({"newClientOrderId": "td-a:b/c_1.2~"}) == "newClientOrderId=td-a%3Ab%2Fc_1.2~"


def test_websocket_api_first_documented_vector():
    params = {
        "symbol": "BTCUSDT",
        "side": "SELL",
        "type": "LIMIT",
        "timeInForce": "GTC",
        "quantity": "0.01000000",
        "price": "52000.00",
        "recvWindow": 100,
        "timestamp": 1645423376532,
        "apiKey": API_KEY,
    }
    payload = websocket_payload(params)
    assert payload == (
        f"apiKey={API_KEY}&price=52000.00&quantity=0.01000000&recvWindow=100&side=SELL"
        "&symbol=BTCUSDT&timeInForce=GTC&timestamp=1645423376532&type=LIMIT"
    )
    assert HmacSigner(API_KEY, SECRET).sign(payload) == (
        "aa1b5712c094bc4e57c05a1a5c1fd8d88dcd628338ea863fec7b88e59fe2db24"
    )


def test_websocket_api_non_ascii_vector_signs_raw_utf8():
    params = {
        "apiKey": API_KEY,
        "price": "0.10000000",
        "quantity": "1.00000000",
        "recvWindow": 5000,
        "side": "BUY",
        "symbol": "１２３４５６",
        "timeInForce": "GTC",
        "timestamp": 1645423376532,
        "type": "LIMIT",
        "signature": "ignored: never part of the payload",
    }
    payload = websocket_payload(params)
    assert "symbol=１２３４５６" in payload and "signature" not in payload
    assert HmacSigner(API_KEY, SECRET).sign(payload) == (
        "b33892ae8e687c939f4468c6268ddd4c40ac1af18ad19a064864c47bae0752cd"
    )


def test_hmac_signer_never_shows_its_secret():
    signer = HmacSigner(API_KEY, SECRET)
    for text in (repr(signer), str(signer), f"{signer}", repr([signer])):
        assert SECRET not in text
        assert API_KEY not in text
    assert not any(SECRET in repr(getattr(signer, name, "")) for name in dir(signer))
    with pytest.raises(TypeError, match="secrets"):
        pickle.dumps(signer)
    assert isinstance(signer, Signer)


def test_hmac_signer_refuses_missing_credentials():
    with pytest.raises(ValueError, match="environment"):
        HmacSigner(API_KEY, "")


def test_make_signer_picks_by_key_type():
    assert isinstance(make_signer("HMAC", API_KEY, SECRET), HmacSigner)
    with pytest.raises(ValueError, match="unknown key type"):
        make_signer("rsa", API_KEY, SECRET)


# --- Ed25519 (needs the optional `cryptography` package) --------------------------------

# RFC 8032 section 7.1, TEST 2: one-byte message 0x72 ("r")
RFC8032_SEED = bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
RFC8032_SIG = bytes.fromhex(
    "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da"
    "085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"
)


def test_ed25519_signs_like_rfc8032():
    pytest.importorskip("cryptography")
    import base64

    signer = Ed25519Signer.from_seed("edkey-1234567890", RFC8032_SEED)
    assert base64.b64decode(signer.sign("r")) == RFC8032_SIG
    assert signer.needs_url_encoding
    assert "4ccd" not in repr(signer) and "edkey-1234567890" not in repr(signer)
    with pytest.raises(TypeError):
        pickle.dumps(signer)


def test_ed25519_signer_from_a_pem_key_verifies():
    pytest.importorskip("cryptography")
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.from_private_bytes(RFC8032_SEED)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    signer = make_signer("ed25519", "edkey-1234567890", pem)
    payload = websocket_payload({"apiKey": "edkey-1234567890", "timestamp": 1})
    key.public_key().verify(base64.b64decode(signer.sign(payload)), payload.encode())
    assert "PRIVATE" not in repr(signer)
