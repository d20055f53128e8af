"""Starting the loopback Binance server: in a test, or from ``tradingd venue``.

In a test (trio), with free ports and faults the test can change:

    async with open_binance_server(SimConfig(seed=7), faults=Faults()) as server:
        server.rest_url, server.stream_url, server.ws_api_url
        server.credentials("demo")        # api_key, secret, account
        server.binance_config()           # BinanceConfig for the real adapter
        server.faults.error_after_rate = 0.5
        server.engine                     # the venue's truth

From the command line, in the foreground until Ctrl-C:

    tradingd venue --protocol binance [--port 18080] [--seed 7] [--config venue.toml]
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import msgspec
import trio

from daemon.config import EX_CONFIG, ConfigError
from venues.sim.config import SimConfig
from venues.sim.server import BinanceServer
from venues.sim.server_config import (
    DEFAULT_PORT,
    ApiCredentials,
    Faults,
    ServerSettings,
    VenueServerSection,
)
from venues.sim.world import SimWorld, build_world


@asynccontextmanager
async def open_binance_server(
    world_or_config: SimWorld | SimConfig | None = None,
    *,
    port: int = 0,
    ws_port: int | None = None,
    host: str = "127.0.0.1",
    faults: Faults | None = None,
    settings: ServerSettings | None = None,
    credentials: Iterable[ApiCredentials] = (),
    run_market: bool = True,
) -> AsyncIterator[BinanceServer]:
    """A running server for the duration of the block; yields the `BinanceServer`.

    Pass a `SimWorld` to serve a world the test also uses directly (set
    `run_market=False` if the test already runs `world.run`), or a
    `SimConfig` / None for a fresh world. `port=0` picks free ports; when
    `settings` is given, its host and ports win. Leaving the block stops
    the server and the market it started.
    """
    world = world_or_config if isinstance(world_or_config, SimWorld) else build_world(world_or_config)
    if settings is None:
        settings = ServerSettings(host=host, port=port, ws_port=ws_port)
    server = BinanceServer(world, settings=settings, faults=faults, credentials=credentials)
    async with trio.open_nursery() as nursery:
        if run_market:
            await nursery.start(world.run)
        await nursery.start(server.run)
        try:
            yield server
        finally:
            nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------
# tradingd venue --protocol binance
# ---------------------------------------------------------------------------------------


def load_server_config(
    path: str | None, seed: int | None, port: int | None
) -> tuple[SimConfig, ServerSettings, Faults]:
    """The sim venue, server settings and faults from an optional config file and the flags."""
    sim = SimConfig()
    section = VenueServerSection()
    if path is not None:
        from daemon import config as config_mod

        cfg = config_mod.load(path)
        section = cfg.section("venue_server")
        sims = {name: v for name, v in cfg.venues.items() if isinstance(v, SimConfig)}
        if section.venue is not None:
            if section.venue not in sims:
                raise ConfigError(path, "venue_server.venue", f"no [venues.{section.venue}] table of type 'sim'")
            sim = sims[section.venue]
        elif sims:
            sim = next(iter(sims.values()))
    if seed is not None:
        sim = msgspec.structs.replace(sim, seed=seed)
    settings = section.settings()
    if port is not None:
        settings = msgspec.structs.replace(settings, port=port)
    faults = msgspec.convert(msgspec.to_builtins(section.faults), Faults)  # a copy the server may change
    return sim, settings, faults


def _banner(server: BinanceServer) -> str:
    lines = [
        "tradingd loopback venue: the simulated exchange over the Binance Spot protocol",
        f"  REST               {server.rest_url}/api/v3/...",
        f"  market streams     {server.stream_url}/ws/<stream>  or  {server.stream_url}/stream?streams=a/b",
        f"  WebSocket API      {server.ws_api_url}",
        f"  symbols            {', '.join(server.engine.symbols)}",
        f"  seed               {server.world.config.seed}",
        "  accounts (these keys guard nothing real: the venue is a simulation on this machine)",
    ]
    for c in server.keys.credentials():
        lines.append(f"    {c.account:<12} api key {c.api_key}")
        lines.append(f"    {'':<12} secret  {c.secret}")
    lines.append("  point tradingd at it with config/loopback.toml; Ctrl-C stops the venue")
    return "\n".join(lines)


async def _serve_forever(sim: SimConfig, settings: ServerSettings, faults: Faults) -> None:
    world = build_world(sim)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_binance_server(world, settings=settings, faults=faults) as server:
            print(_banner(server), flush=True)
            async for signum in signals:
                print(f"stopping the loopback venue ({signal.Signals(signum).name})", flush=True)
                break


def serve_main(args: argparse.Namespace) -> int:
    """``tradingd venue --protocol binance``: serve until Ctrl-C; exit 0 (78 for a bad config)."""
    if getattr(args, "protocol", "binance") != "binance":
        print(f"unsupported protocol {args.protocol!r}; only 'binance' is served", file=sys.stderr)
        return 2
    try:
        sim, settings, faults = load_server_config(args.config, args.seed, args.port)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EX_CONFIG
    try:
        trio.run(_serve_forever, sim, settings, faults)
    except (OSError, BaseExceptionGroup) as failure:
        exc = _first(failure, OSError)
        if exc is None:
            raise
        print(
            f"cannot listen on {settings.host}:{settings.port or DEFAULT_PORT} "
            f"({getattr(exc, 'strerror', None) or exc}); "
            "pick another port with --port",
            file=sys.stderr,
        )
        return 1
    return 0


def _first(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first `kind` error in `exc`, looking inside exception groups (trio's nurseries wrap)."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first(inner, kind)
            if found is not None:
                return found
    return None
