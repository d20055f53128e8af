"""Control commands that belong to the process itself.

``ping``, ``status``, ``log-level``, ``logs``, ``watch``, ``config``,
``shutdown`` and ``help``. Trading commands are registered by the parts
that own them (executions, risk, positions).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import msgspec
import trio

from daemon.bus import NoHandler, RequestTimeout
from daemon.control import Caller, CommandError, Emit
from daemon.logs import Level, LogRecord, sink
from daemon.messages import Depth, MarketTrade, Quote, SetLogLevel, StatusRequest
from daemon.model import client_order_id

if TYPE_CHECKING:
    from daemon.app import Daemon

MARKET_DATA = (Quote, Depth, MarketTrade)


class NoArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class LogLevelArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    level: str | None = None  # None: show the current levels
    actor: str | None = None


class ShutdownArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    cancel_orders: bool = False


class WatchArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    topic: str | None = None  # a message type (Fill, OrderUpdate...), a topic, or an execution id
    market_data: bool = False


class LogsArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    lines: int = 100
    level: str = "debug"
    actor: str | None = None
    follow: bool = False


class ConfigArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    action: Literal["show", "reload"] = "show"


def register_core_commands(daemon: Daemon) -> None:
    c = daemon.commands

    async def ping(args: NoArgs, caller: Caller) -> dict[str, Any]:
        return {"pong": True, "uptime": round(daemon.uptime(), 3)}

    async def status(args: NoArgs, caller: Caller) -> Any:
        try:
            return await daemon.bus.request("status", StatusRequest(), timeout=5.0)
        except (NoHandler, RequestTimeout) as exc:
            raise CommandError("unavailable", f"status is not available: {exc}") from None

    async def log_level(args: LogLevelArgs, caller: Caller) -> dict[str, Any]:
        if args.level is not None:
            try:
                level = Level.parse(args.level)
            except ValueError as exc:
                raise CommandError("bad_args", str(exc)) from None
            sink.set_level(level, args.actor)
            daemon.bus.publish_nowait("lifecycle", SetLogLevel(level=level.name.lower(), actor=args.actor))
        return {
            "default": sink.default_level.name.lower(),
            "actors": {name: lvl.name.lower() for name, lvl in sorted(sink.actor_levels.items())},
        }

    async def shutdown(args: ShutdownArgs, caller: Caller) -> dict[str, Any]:
        daemon.request_stop(f"tradectl shutdown by {caller.user}", cancel_orders=args.cancel_orders)
        return {"stopping": True, "cancel_orders": args.cancel_orders}

    async def watch(args: WatchArgs, caller: Caller, emit: Emit) -> None:
        with daemon.bus.subscribe_conflated("*", key=id, max_keys=10_000, name=f"watch:{caller.pid}") as sub:
            while True:
                batch = await sub.receive_batch()
                for msg in batch:
                    if _matches(msg, args):
                        await emit(msg)

    async def logs(args: LogsArgs, caller: Caller, emit: Emit) -> None:
        try:
            minimum = Level.parse(args.level)
        except ValueError as exc:
            raise CommandError("bad_args", str(exc)) from None

        def wanted(r: LogRecord) -> bool:
            return Level.parse(r.level) >= minimum and (args.actor is None or r.actor.startswith(args.actor))

        recent = [r for r in list(sink.ring) if wanted(r)]
        for record in recent[-args.lines :] if args.lines > 0 else []:
            await emit(record)
        if not args.follow:
            return
        send, recv = trio.open_memory_channel[LogRecord](1000)
        dropped = 0

        def listener(record: LogRecord) -> None:
            nonlocal dropped
            if wanted(record):
                try:
                    send.send_nowait(record)
                except trio.WouldBlock:
                    dropped += 1  # a slow reader loses lines, never the daemon's time

        sink.listeners.append(listener)
        try:
            async for record in recv:
                await emit(record)
        finally:
            sink.listeners.remove(listener)

    async def config_cmd(args: ConfigArgs, caller: Caller) -> Any:
        if args.action == "reload":
            ok, message = await daemon.reload()
            if not ok:
                raise CommandError("config_invalid", message)
            return {"reloaded": True, "config": str(daemon.config_path)}
        return msgspec.to_builtins(daemon.config)

    async def help_cmd(args: NoArgs, caller: Caller) -> dict[str, Any]:
        return {name: (daemon.commands.get(name).help or "") for name in daemon.commands.names()}  # type: ignore[union-attr]

    c.add("ping", ping, NoArgs, help="check that the daemon answers")
    c.add("status", status, NoArgs, help="process, health, trading state and every actor")
    c.add("log-level", log_level, LogLevelArgs, help="show or set the log level (per actor)", audited=True)
    c.add("shutdown", shutdown, ShutdownArgs, help="stop the daemon gracefully", audited=True)
    c.add("watch", watch, WatchArgs, help="stream events", streaming=True)
    c.add("logs", logs, LogsArgs, help="recent log lines; follow to stream", streaming=True)
    c.add("config", config_cmd, ConfigArgs, help="show or reload the configuration", audited=True)
    c.add("help", help_cmd, NoArgs, help="list commands")


def _matches(msg: Any, args: WatchArgs) -> bool:
    if isinstance(msg, MARKET_DATA) and not args.market_data and args.topic is None:
        return False
    topic = args.topic
    if topic is None:
        return True
    if type(msg).__name__.lower() == topic.lower():
        return True
    for field in ("exec_id", "venue", "symbol", "client_order_id"):
        if getattr(msg, field, None) == topic:
            return True
    intent = getattr(msg, "intent", None)
    if intent is not None and getattr(intent, "exec_id", None) == topic:
        return True
    return _is_child_of(getattr(msg, "client_order_id", None), topic)


def _is_child_of(cid: Any, exec_id: str) -> bool:
    """True when `cid` is a child order of execution `exec_id` (its updates and fills)."""
    if not isinstance(cid, str):
        return False
    try:
        prefix = client_order_id(exec_id, 0)[:-1]
    except ValueError:
        return False
    return cid.startswith(prefix)

