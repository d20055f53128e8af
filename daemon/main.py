"""``tradingd``: the daemon's command line.

    tradingd run [--config FILE] [--log-format logfmt|json] [--socket PATH]
    tradingd check-config FILE
    tradingd venue --protocol binance [--port N]     (the loopback exchange)

Exit codes: 0 after a graceful stop, 1 when the root supervisor gave up,
2 for a usage error, 78 (EX_CONFIG) for a bad configuration.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import trio

from daemon import config as config_mod
from daemon.config import EX_CONFIG, Config, ConfigError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tradingd", description="Execution daemon for crypto venues.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon in the foreground (systemd: Type=notify)")
    run.add_argument("--config", "-c", help="TOML configuration file (default: built-in defaults, no venue)")
    run.add_argument("--log-format", choices=["logfmt", "json"], help="override [log] format")
    run.add_argument("--socket", help="control socket path (default: $RUNTIME_DIRECTORY/control.sock or ./run/control.sock)")

    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("file")

    venue = sub.add_parser("venue", help="serve the simulated venue over a real exchange protocol on loopback")
    venue.add_argument("--protocol", choices=["binance"], default="binance")
    venue.add_argument("--port", type=int, default=None, help="TCP port on 127.0.0.1")
    venue.add_argument("--config", "-c", help="TOML file with a [venues.NAME] table of type 'sim' to serve")
    venue.add_argument("--seed", type=int, default=None)
    return p


def load_config(path: str | None) -> Config:
    if path is None:
        return config_mod.parse(b"", "<defaults>")
    return config_mod.load(path)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        try:
            cfg = config_mod.load(args.file)
        except ConfigError as exc:
            print(str(exc), file=sys.stderr)
            return EX_CONFIG
        print(f"{args.file}: ok ({len(cfg.venues)} venue(s): {', '.join(cfg.venues) or 'none'})")
        return 0
    if args.command == "venue":
        from venues.sim.serve import serve_main  # the loopback exchange lives with the sim venue

        return serve_main(args)
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EX_CONFIG
    from daemon.app import Daemon
    from daemon.components import install

    daemon = Daemon(cfg, config_path=args.config, socket_path=args.socket, log_format=args.log_format)
    try:
        install(daemon)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EX_CONFIG
    return trio.run(daemon.run)


if __name__ == "__main__":
    sys.exit(main())
