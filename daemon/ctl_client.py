"""A small synchronous client for the control socket (tradectl's transport).

tradectl is a short-lived command, so it speaks to the socket with the
standard library: one connection, one JSON line out, answer lines in.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

_ids = itertools.count(1)
_decoder = msgspec.json.Decoder()
_encoder = msgspec.json.Encoder(decimal_format="string")


class Unreachable(Exception):
    """No daemon answers on the socket."""


class Refused(Exception):
    """The daemon answered with an error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class Client:
    def __init__(self, path: str | Path, *, timeout: float | None = 30.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._file: Any = None

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except FileNotFoundError:
            sock.close()
            raise Unreachable(f"no control socket at {self.path}: is tradingd running? (use --socket PATH)") from None
        except PermissionError:
            sock.close()
            raise Unreachable(
                f"permission denied on {self.path}: run as the daemon's user or join its operators' group"
            ) from None
        except OSError as exc:
            sock.close()
            raise Unreachable(f"cannot connect to {self.path}: {exc.strerror or exc}") from None
        self._sock = sock
        self._file = sock.makefile("rb")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._sock is not None:
            self._sock.close()
        self._sock = self._file = None

    def _send(self, cmd: str, args: dict[str, Any]) -> int:
        assert self._sock is not None
        req_id = next(_ids)
        line = _encoder.encode({"id": req_id, "cmd": cmd, "args": args}) + b"\n"
        try:
            self._sock.sendall(line)
        except OSError as exc:
            raise Unreachable(f"the daemon closed the connection: {exc}") from None
        return req_id

    def _read(self) -> dict[str, Any]:
        try:
            line = self._file.readline()
        except TimeoutError:
            raise Unreachable(f"no answer within {self.timeout:g}s") from None
        except OSError as exc:
            raise Unreachable(f"connection lost: {exc}") from None
        if not line:
            raise Unreachable("the daemon closed the connection")
        return _decoder.decode(line)

    def call(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        req_id = self._send(cmd, args or {})
        while True:
            reply = self._read()
            if reply.get("id") not in (req_id, None):
                continue
            if reply.get("ok"):
                return reply.get("result")
            err = reply.get("error") or {}
            raise Refused(err.get("code", "error"), err.get("message", "refused"))

    def stream(self, cmd: str, args: dict[str, Any] | None = None) -> Iterator[Any]:
        """Events of a streaming command, until it ends or the caller stops."""
        req_id = self._send(cmd, args or {})
        while True:
            reply = self._read()
            if reply.get("id") not in (req_id, None):
                continue
            if not reply.get("ok"):
                err = reply.get("error") or {}
                raise Refused(err.get("code", "error"), err.get("message", "refused"))
            if "event" in reply:
                yield reply["event"]
            else:
                return
