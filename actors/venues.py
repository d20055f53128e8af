"""The venues part of the daemon: one adapter per configured venue, and the venue supervisor.

    [venues.binance]          [venues.sim]
    type = "binance"          type = "sim"

`install` builds one adapter per ``[venues.NAME]`` table through a small
registry keyed by the table's ``type`` (`register_venue_kind` adds one), and
one `Gateway` and one `Feed` per venue. They run under a venue supervisor
(one_for_one, the ``[supervisor]`` back-off and restart intensity) that is a
child of the root: ``gateway[NAME]`` first (it loads the instruments the feed
needs, and reconciles before it reports ready), then ``feed[NAME]``. A venue
that needs a worker of its own (the simulated venue's market) gets it under
the same supervisor, before its gateway.

Adapters are built once and outlive restarts of the actors that use them: the
rate budget remembers a 429 across a crash, and the emergency stop can still
cancel through them after the root supervisor stopped every actor. They are
closed only when the daemon stops normally.

Published: ``daemon.services["gateways"]`` and ``["feeds"]`` (dicts by venue
name) and ``["instruments"]`` ((venue, symbol) -> Instrument, filled by the
gateways); the ``venues`` control command (connection state, latency,
rate-limit usage, reconnects of every venue) and a `status` summary.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from actors.feed import Feed, FeedConfig
from actors.gateway import Gateway, GatewayConfig
from daemon import topics
from daemon.config import ConfigError
from daemon.control import Caller, CommandError
from daemon.logs import describe_error, get_logger
from daemon.messages import ShutdownRequested
from daemon.model import TradingState
from daemon.supervisor import ChildSpec, Restart, Strategy, Supervisor, SupervisorGaveUp
from venues.base import VenueAdapter

if TYPE_CHECKING:
    from daemon.app import Daemon

log = get_logger("venues")

ADAPTER_CLOSE_TIMEOUT = 5.0


# ---------------------------------------------------------------------------------------
# The registry of venue kinds
# ---------------------------------------------------------------------------------------


@dataclass
class VenueParts:
    """What a venue kind builds from its config table."""

    adapter: VenueAdapter
    workers: list[ChildSpec] = field(default_factory=list)  # started before the venue's gateway
    default_symbols: tuple[str, ...] | None = None  # None: [feed.symbols] must list them


VenueBuilder = Callable[[str, Any], VenueParts]
VENUE_KINDS: dict[str, VenueBuilder] = {}


def register_venue_kind(kind: str, builder: VenueBuilder) -> None:
    """`builder(name, config)` for ``[venues.NAME]`` tables with ``type = kind``."""
    VENUE_KINDS[kind] = builder


def _binance(name: str, config: Any) -> VenueParts:
    from venues.binance.adapter import BinanceAdapter

    return VenueParts(adapter=BinanceAdapter.from_config(config, name=name))


def _sim(name: str, config: Any) -> VenueParts:
    from venues.sim.world import build_world

    world = build_world(config, venue=name)
    return VenueParts(
        adapter=world.venue(name=name),
        workers=[ChildSpec(f"market[{name}]", world.run, restart=Restart.PERMANENT)],
        default_symbols=tuple(i.symbol for i in config.instruments),
    )


register_venue_kind("binance", _binance)
register_venue_kind("sim", _sim)


def build_venue(name: str, config: Any, *, source: str = "<config>") -> VenueParts:
    """The parts of one venue; a problem with its config or credentials is a `ConfigError`."""
    kind = getattr(config, "type", None)
    builder = VENUE_KINDS.get(kind)  # type: ignore[arg-type]
    if builder is None:
        raise ConfigError(source, f"venues.{name}.type", f"no adapter for venue type {kind!r}; known: {', '.join(sorted(VENUE_KINDS))}")
    try:
        return builder(name, config)
    except (LookupError, ValueError) as exc:  # MissingCredentials is a LookupError
        raise ConfigError(source, f"venues.{name}", str(exc)) from None


# ---------------------------------------------------------------------------------------
# The venue supervisor
# ---------------------------------------------------------------------------------------


@dataclass
class Venue:
    name: str
    kind: str
    parts: VenueParts
    gateway: Gateway
    feed: Feed | None


class VenueSupervisor:
    """The root's ``venues`` child: a one_for_one supervisor over every venue's actors."""

    def __init__(self, daemon: Daemon, venues: Sequence[Venue], feed_config: FeedConfig, gateway_config: GatewayConfig) -> None:
        self.daemon = daemon
        self.venues = list(venues)
        self.feed_config = feed_config
        self.gateway_config = gateway_config
        self.supervisor: Supervisor | None = None
        self._stopping = False

    def children(self) -> list[ChildSpec]:
        specs: list[ChildSpec] = []
        for venue in self.venues:
            specs.extend(venue.parts.workers)
            specs.append(
                ChildSpec(
                    f"gateway[{venue.name}]",
                    venue.gateway.run,
                    restart=Restart.PERMANENT,
                    start_timeout=self.gateway_config.start_timeout,
                    shutdown_timeout=5.0,
                )
            )
            if venue.feed is not None:
                specs.append(
                    ChildSpec(
                        f"feed[{venue.name}]",
                        venue.feed.run,
                        restart=Restart.PERMANENT,
                        start_timeout=self.feed_config.start_timeout,
                    )
                )
        return specs

    def start_timeout(self) -> float:
        return sum(spec.start_timeout for spec in self.children()) + 5.0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.daemon.config.supervisor
        self.supervisor = Supervisor(
            "venues",
            self.children(),
            strategy=Strategy.ONE_FOR_ONE,
            intensity=cfg.intensity,
            backoff=cfg.backoff,
            registry=self.daemon.registry,
            rng=random.Random(),
        )
        try:
            with self.daemon.bus.subscribe(topics.LIFECYCLE, maxsize=256, name="venues") as lifecycle:
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._watch_lifecycle, lifecycle)
                        await nursery.start(self.supervisor.run)
                        task_status.started()
                except BaseExceptionGroup as group:
                    gave_up = [e for e in _leaves(group) if isinstance(e, SupervisorGaveUp)]
                    if gave_up:
                        raise gave_up[0] from None
                    raise
        finally:
            if self._stopping:
                await self._close_adapters()

    async def _watch_lifecycle(self, lifecycle: Any) -> None:
        async for msg in lifecycle:
            if isinstance(msg, ShutdownRequested):
                self._stopping = True

    async def _close_adapters(self) -> None:
        with trio.move_on_after(ADAPTER_CLOSE_TIMEOUT, shield=True):
            for venue in self.venues:
                try:
                    await venue.parts.adapter.aclose()
                except Exception as exc:
                    log.warning("venue.close_failed", venue=venue.name, error=describe_error(exc))


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            out.extend(_leaves(exc))
        else:
            out.append(exc)
    return out


# ---------------------------------------------------------------------------------------
# Installing
# ---------------------------------------------------------------------------------------


class VenuesArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    venue: str | None = None


class OrdersArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    venue: str | None = None
    symbol: str | None = None
    exec_id: str | None = None
    all: bool = False  # also orders that are done (as far as the gateways still remember them)
    limit: int = 500


def install(daemon: Daemon) -> VenueSupervisor | None:
    """Build the adapters, gateways and feeds of every configured venue and add the venue supervisor."""
    config = daemon.config
    feed_config: FeedConfig = config.section("feed")
    gateway_config: GatewayConfig = config.section("gateway")
    instruments = daemon.services.setdefault("instruments", {})
    gateways: dict[str, Gateway] = daemon.services.setdefault("gateways", {})
    feeds: dict[str, Feed] = daemon.services.setdefault("feeds", {})

    unknown = sorted(set(feed_config.symbols) - set(config.venues))
    if unknown:
        raise ConfigError(config.source, f"feed.symbols.{unknown[0]}", f"no venue named {unknown[0]!r} is configured under [venues]")

    venues: list[Venue] = []
    for name, venue_config in config.venues.items():
        parts = build_venue(name, venue_config, source=config.source)
        symbols = feed_config.symbols.get(name)
        if symbols is None:
            symbols = parts.default_symbols
        if symbols is None:
            raise ConfigError(
                config.source,
                f"feed.symbols.{name}",
                f'list the symbols to stream from {name}, e.g. {name} = ["BTCUSDT"] under [feed.symbols] '
                "(an empty list: no market data from it)",
            )
        feed = None
        if symbols:
            feed = Feed(
                name,
                parts.adapter,
                symbols,
                bus=daemon.bus,
                instruments=instruments,
                config=feed_config,
                health=daemon.health,
            )
            feeds[name] = feed
        gateway = Gateway(
            name,
            parts.adapter,
            bus=daemon.bus,
            journal=lambda: daemon.services.get("journal"),
            instruments=instruments,
            symbols=symbols,
            config=gateway_config,
            health=daemon.health,
            feed=feed,
            halted=_halted_at(daemon, name),
        )
        gateways[name] = gateway
        venues.append(Venue(name, getattr(venue_config, "type", "?"), parts, gateway, feed))

    _register_command(daemon, venues)
    daemon.status_extras["venues"] = lambda: {v.name: _summary(v) for v in venues}
    if not venues:
        return None
    supervisor = VenueSupervisor(daemon, venues, feed_config, gateway_config)
    daemon.services["venue_supervisor"] = supervisor
    daemon.child_factories.append(
        lambda d: [
            ChildSpec(
                "venues",
                supervisor.run,
                restart=Restart.PERMANENT,
                start_timeout=supervisor.start_timeout(),
                shutdown_timeout=15.0,
            )
        ]
    )
    return supervisor


def _summary(venue: Venue) -> dict[str, Any]:
    return {
        "type": venue.kind,
        "feed": venue.feed.state.value if venue.feed is not None else None,
        "order_entry": venue.gateway.order_entry,
        "working_orders": len(venue.gateway.table.working()),
    }


def _halted_at(daemon: Daemon, venue: str) -> Callable[[], bool]:
    def halted() -> bool:
        risk = daemon.services.get("risk")
        return risk is not None and risk.state_for(venue) is TradingState.HALTED

    return halted


def venue_report(venue: Venue) -> dict[str, Any]:
    return {
        "venue": venue.name,
        "type": venue.kind,
        "feed": venue.feed.status() if venue.feed is not None else None,
        "gateway": venue.gateway.status(),
    }


def _register_command(daemon: Daemon, venues: list[Venue]) -> None:
    async def venues_cmd(args: VenuesArgs, caller: Caller) -> dict[str, Any]:
        chosen = venues
        if args.venue is not None:
            chosen = [v for v in venues if v.name == args.venue]
            if not chosen:
                known = ", ".join(v.name for v in venues) or "none configured"
                raise CommandError("not_found", f"no venue named {args.venue!r} (configured: {known})")
        return {"venues": [venue_report(v) for v in chosen]}

    daemon.commands.add(
        "venues",
        venues_cmd,
        VenuesArgs,
        help="connection state, latency, rate-limit usage and reconnects of every venue",
    )

    async def orders_cmd(args: OrdersArgs, caller: Caller) -> dict[str, Any]:
        rows: list[dict[str, Any]] = []
        for venue in venues:
            if args.venue is not None and venue.name != args.venue:
                continue
            for order in venue.gateway.table:
                if not args.all and order.is_final:
                    continue
                if args.symbol is not None and order.symbol != args.symbol:
                    continue
                exec_id = order.intent.exec_id if order.intent is not None else None
                if args.exec_id is not None and exec_id != args.exec_id:
                    continue
                rows.append(order_row(venue.name, order, exec_id))
        if args.venue is not None and not any(v.name == args.venue for v in venues):
            raise CommandError("not_found", f"no venue named {args.venue!r}")
        return {"orders": rows[-args.limit :] if args.limit > 0 else rows, "total": len(rows)}

    daemon.commands.add(
        "orders",
        orders_cmd,
        OrdersArgs,
        help="orders the gateways track: working ones by default, with --all the recent finished ones too",
    )


def order_row(venue: str, order: Any, exec_id: str | None) -> dict[str, Any]:
    return {
        "venue": venue,
        "symbol": order.symbol,
        "client_order_id": order.client_order_id,
        "exec_id": exec_id,
        "side": order.side,
        "quantity": order.quantity,
        "filled": order.filled_qty,
        "price": order.price,
        "status": order.status.value if order.status is not None else "PENDING_NEW",
        "venue_order_id": order.venue_order_id,
        "ours": order.ours,
        "inferred": order.inferred,
    }


__all__ = ["VENUE_KINDS", "Venue", "VenueParts", "VenueSupervisor", "build_venue", "install", "register_venue_kind"]
