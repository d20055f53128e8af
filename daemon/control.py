"""The control socket: JSON lines over a Unix stream socket.

    {"id": 1, "cmd": "status", "args": {}}
    -> {"id": 1, "ok": true, "result": {...}}
    -> {"id": 1, "ok": false, "error": {"code": "unknown_command", "message": "..."}}

Several requests may be in flight on one connection; each answer carries its
request's id. Streaming commands (``watch``, ``logs --follow``) send
``{"id": N, "ok": true, "event": {...}}`` lines until the client leaves.
Any client that speaks JSON lines works (``socat``, ``nc -U``); ``tradectl``
is the friendly one.

Who may connect is decided from the peer's credentials (``SO_PEERCRED``):
root, the daemon's own user, and members of the configured operators' group.
The socket is created with mode 0660, a stale socket file left by a crash is
replaced, and the file is removed on exit.

Bad input never hurts the daemon: malformed JSON, a line that is not an
object, unknown commands, wrong argument types, oversized lines, binary
garbage, silent clients and clients that leave mid-answer each get an error
(when one can still be sent) or are dropped, and nothing else is affected.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import re
import socket as _stdsocket
import stat
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import trio

from daemon.logs import describe_error, get_logger

log = get_logger("control")

_PEERCRED = struct.Struct("3i")


class CommandError(Exception):
    """A refusal with a stable code (``bad_args``, ``not_found``, ``refused`` ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Request(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    cmd: str
    id: int | str | None = None
    args: dict[str, Any] = {}


@dataclass(frozen=True)
class Caller:
    """Who is on the other end of a connection (for permissions and audit)."""

    pid: int
    uid: int
    gid: int

    @property
    def user(self) -> str:
        try:
            return pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return str(self.uid)


Emit = Callable[[Any], Awaitable[None]]
Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Command:
    name: str
    handler: Handler  # handler(args, caller) or, streaming, handler(args, caller, emit)
    args_type: type[msgspec.Struct] | None = None
    help: str = ""
    streaming: bool = False
    audited: bool = False  # changes state: recorded with who and when


class Commands:
    """The table of commands the daemon answers."""

    def __init__(self) -> None:
        self._table: dict[str, Command] = {}

    def add(
        self,
        name: str,
        handler: Handler,
        args_type: type[msgspec.Struct] | None = None,
        *,
        help: str = "",
        streaming: bool = False,
        audited: bool = False,
    ) -> None:
        if name in self._table:
            raise ValueError(f"command {name!r} is already registered")
        self._table[name] = Command(name, handler, args_type, help, streaming, audited)

    def get(self, name: str) -> Command | None:
        return self._table.get(name)

    def names(self) -> list[str]:
        return sorted(self._table)


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"a command result cannot contain a {type(obj).__name__}; return JSON-able values")


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook, decimal_format="string")


def encode_line(obj: Any) -> bytes:
    return _encoder.encode(obj) + b"\n"


AuditHook = Callable[[Caller, str, dict[str, Any], bool, str], Awaitable[None]]


class ControlServer:
    def __init__(
        self,
        path: Path,
        commands: Commands,
        *,
        group: str | None = None,
        max_clients: int = 256,
        idle_timeout: float = 300.0,
        max_line_bytes: int = 1 << 20,
        write_timeout: float = 10.0,
        audit: AuditHook | None = None,
    ) -> None:
        self.path = Path(path)
        self.commands = commands
        self.group = group
        self.max_clients = max_clients
        self.idle_timeout = idle_timeout
        self.max_line_bytes = max_line_bytes
        self.write_timeout = write_timeout
        self.audit = audit
        self.clients = 0
        self.refused = 0
        self._group_gid: int | None = None
        self._group_members: set[str] = set()

    # socket lifecycle -------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._resolve_group()
        sock = await self._bind()
        listener = trio.SocketListener(sock)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.serve_listeners, self._handle, [listener])
                log.info("control.listening", path=str(self.path), group=self.group)
                task_status.started()
        finally:
            self._unlink()

    def _resolve_group(self) -> None:
        if not self.group:
            return
        try:
            entry = grp.getgrnam(self.group)
        except KeyError:
            log.warning("control.group_unknown", group=self.group)
            return
        self._group_gid = entry.gr_gid
        self._group_members = set(entry.gr_mem)

    async def _bind(self) -> trio.socket.SocketType:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        await self._replace_stale()
        sock = trio.socket.socket(_stdsocket.AF_UNIX, _stdsocket.SOCK_STREAM)
        old_umask = os.umask(0o117)  # the file is born 0660: no window where others may connect
        try:
            await sock.bind(str(self.path))
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o660)
        # Under the systemd unit the socket is born with the right group, and chown() is
        # outside its system-call filter: only change what needs changing.
        if self._group_gid is not None and os.stat(self.path).st_gid != self._group_gid:
            try:
                os.chown(self.path, -1, self._group_gid)
            except PermissionError:
                log.warning("control.chown_refused", path=str(self.path), group=self.group)
        sock.listen(_stdsocket.SOMAXCONN)  # bursts of hundreds of clients must queue, not fail
        return sock

    async def _replace_stale(self) -> None:
        """Remove a socket file left by a dead daemon; refuse to steal a live one."""
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise RuntimeError(f"{self.path} exists and is not a socket; move it away or choose another control_socket")
        probe = trio.socket.socket(_stdsocket.AF_UNIX, _stdsocket.SOCK_STREAM)
        try:
            with trio.move_on_after(1.0):
                await probe.connect(str(self.path))
                raise RuntimeError(f"another tradingd is serving {self.path}; stop it first or use another control_socket")
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
                raise
        finally:
            probe.close()
        log.info("control.stale_socket_removed", path=str(self.path))
        self.path.unlink(missing_ok=True)

    def _unlink(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    # connections ------------------------------------------------------------------------
    def _caller(self, stream: trio.SocketStream) -> Caller:
        raw = stream.socket.getsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_PEERCRED, _PEERCRED.size)
        pid, uid, gid = _PEERCRED.unpack(raw)
        return Caller(pid, uid, gid)

    def allowed(self, caller: Caller) -> bool:
        if caller.uid in (0, os.getuid()):
            return True
        if self._group_gid is None:
            return False
        if caller.gid == self._group_gid:
            return True
        try:
            name = pwd.getpwuid(caller.uid).pw_name
        except KeyError:
            return False
        return name in self._group_members or self._group_gid in os.getgrouplist(name, caller.gid)

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = _Connection(self, stream)
        try:
            try:
                caller = self._caller(stream)
            except OSError:
                return
            if not self.allowed(caller):
                self.refused += 1
                log.warning("control.forbidden", uid=caller.uid, pid=caller.pid)
                await conn.send_error(None, "forbidden", "you may not use this socket: ask for membership of the operators' group")
                return
            if self.clients >= self.max_clients:
                self.refused += 1
                await conn.send_error(None, "too_many_clients", f"the daemon serves at most {self.max_clients} clients")
                return
            self.clients += 1
            try:
                await conn.serve(caller)
            finally:
                self.clients -= 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception as exc:  # a bug in one connection must never reach the server
            log.error("control.connection_error", error=describe_error(exc))
        finally:
            stream.socket.close()


@dataclass(frozen=True)
class _Refusal:
    req_id: Any
    code: str
    message: str


class _Connection:
    def __init__(self, server: ControlServer, stream: trio.SocketStream) -> None:
        self.server = server
        self.stream = stream
        self._write_lock = trio.Lock()
        self.alive = True
        self.active = 0  # requests in flight (a streaming one keeps the connection busy)

    async def send(self, obj: Any) -> None:
        if not self.alive:
            raise trio.ClosedResourceError
        data = encode_line(obj)
        async with self._write_lock:
            with trio.move_on_after(self.server.write_timeout) as scope:
                try:
                    await self.stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self.alive = False
                    raise
            if scope.cancelled_caught:
                self.alive = False
                raise trio.BrokenResourceError("client is not reading")

    async def send_error(self, req_id: Any, code: str, message: str) -> None:
        await self.send({"id": req_id, "ok": False, "error": {"code": code, "message": message}})

    async def serve(self, caller: Caller) -> None:
        """Read requests until the client leaves.

        When the client half-closes (``socat`` after sending its line), answers
        still being computed are delivered; streams end. When the connection is
        unusable (write failed, oversized line, idle), everything in flight is
        dropped.
        """
        async with trio.open_nursery() as requests:
            async with trio.open_nursery() as streams:
                await self._read_loop(caller, requests, streams)
                streams.cancel_scope.cancel()
            if not self.alive:
                requests.cancel_scope.cancel()

    async def _read_loop(self, caller: Caller, requests: trio.Nursery, streams: trio.Nursery) -> None:
        buffer = bytearray()
        limit = self.server.max_line_bytes
        while self.alive:
            timeout = self.server.idle_timeout if self.active == 0 else float("inf")
            with trio.move_on_after(timeout) as idle:
                try:
                    chunk = await self.stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    chunk = b""
            if idle.cancelled_caught:
                if self.active:
                    continue
                await self._try_error(None, "idle_timeout", "no request received in time; closing")
                self.alive = False
                return
            if not chunk:
                return
            buffer += chunk
            while (end := buffer.find(b"\n")) >= 0:
                line = bytes(buffer[:end])
                del buffer[: end + 1]
                if len(line) > limit:
                    break
                if line.strip():
                    self._dispatch(caller, line, requests, streams)
            if len(buffer) > limit or (end >= 0 and len(line) > limit):
                await self._try_error(None, "line_too_long", f"request lines are limited to {limit} bytes")
                self.alive = False
                return

    async def _try_error(self, req_id: Any, code: str, message: str) -> None:
        try:
            await self.send_error(req_id, code, message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def _dispatch(self, caller: Caller, line: bytes, requests: trio.Nursery, streams: trio.Nursery) -> None:
        parsed = self._parse(line)
        if isinstance(parsed, _Refusal):
            requests.start_soon(self._guarded, self._try_error(parsed.req_id, parsed.code, parsed.message))
            return
        command, args, request = parsed
        nursery = streams if command.streaming else requests
        nursery.start_soon(self._guarded, self._run(command, args, request, caller))

    async def _guarded(self, work: Awaitable[None]) -> None:
        self.active += 1
        try:
            await work
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.alive = False  # left mid-answer: nothing else to do
        finally:
            self.active -= 1

    def _parse(self, line: bytes) -> _Refusal | tuple[Command, Any, Request]:
        """A request ready to run, or the refusal to answer with."""
        try:
            raw = msgspec.json.decode(line)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            return _Refusal(None, "parse_error", f"not valid JSON: {exc}")
        if not isinstance(raw, dict):
            return _Refusal(None, "bad_request", 'each line must be a JSON object like {"id": 1, "cmd": "status"}')
        req_id = raw.get("id")
        if not isinstance(req_id, (int, str)) or isinstance(req_id, bool):
            req_id = None
        try:
            request = msgspec.convert(raw, Request)
        except msgspec.ValidationError as exc:
            return _Refusal(req_id, "bad_request", _arg_error(str(exc)))
        command = self.server.commands.get(request.cmd)
        if command is None:
            return _Refusal(req_id, "unknown_command", f"unknown command {request.cmd!r}; try 'help'")
        args: Any = request.args
        if command.args_type is not None:
            try:
                args = msgspec.convert(request.args, command.args_type, strict=False)
            except msgspec.ValidationError as exc:
                return _Refusal(req_id, "bad_args", _arg_error(str(exc), prefix="args."))
        return (command, args, request)

    async def _run(self, command: Command, args: Any, request: Request, caller: Caller) -> None:
        req_id = request.id
        ok, summary = True, "ok"
        try:
            if command.streaming:

                async def emit(event: Any) -> None:
                    await self.send({"id": req_id, "ok": True, "event": event})

                result = await command.handler(args, caller, emit)
            else:
                result = await command.handler(args, caller)
        except CommandError as exc:
            ok, summary = False, f"{exc.code}: {exc.message}"
            await self.send_error(req_id, exc.code, exc.message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise
        except Exception as exc:
            ok, summary = False, describe_error(exc)
            log.error("control.command_failed", cmd=command.name, error=summary)
            await self.send_error(req_id, "internal", f"{command.name} failed: {summary}")
        else:
            await self.send({"id": req_id, "ok": True, "result": result})
        finally:
            if command.audited and self.server.audit is not None:
                with trio.move_on_after(2.0, shield=True):
                    await self.server.audit(caller, command.name, request.args, ok, summary)


def _arg_error(text: str, prefix: str = "") -> str:
    """msgspec's ``Expected `int`, got `str` - at `$.count``` -> ``count: expected int, got str``."""
    message, _, path = text.partition(" - at `$")
    path = path.rstrip("`").lstrip(".")
    message = message.replace("`", "")
    message = message[:1].lower() + message[1:]
    if (m := re.match(r"object contains unknown field (\S+)", message)) is not None:
        path, message = ".".join(p for p in (path, m.group(1)) if p), "unknown argument"
    elif (m := re.match(r"object missing required field (\S+)", message)) is not None:
        path, message = ".".join(p for p in (path, m.group(1)) if p), "required argument is missing"
    return f"{prefix}{path}: {message}" if path else message
