"""``tradectl``: the operator's client for a running tradingd.

    tradectl status                      health, trading state, every actor
    tradectl watch [TOPIC|EXEC-ID]       stream events
    tradectl logs [-f] [--level L] [--actor A]
    tradectl log-level [LEVEL] [--actor A]
    tradectl config show|reload
    tradectl shutdown [--cancel-orders]

Global options (``--socket``, ``--json``, ``--yes``) go before or after the
command. Exit codes: 0 ok, 1 the daemon refused, 2 usage error, 3 the
daemon is not reachable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from daemon import ctl_format as fmt
from daemon.ctl_client import Client, Refused, Unreachable
from daemon.paths import client_socket

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

Runner = Callable[[argparse.Namespace, Client], int]


class Ctl:
    """Subcommands register here: a parser builder and a runner each."""

    def __init__(self) -> None:
        self.parser = argparse.ArgumentParser(
            prog="tradectl",
            description="Steer a running tradingd over its control socket.",
            epilog="Exit codes: 0 ok, 1 refused by the daemon, 2 usage error, 3 daemon not reachable.",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        self._add_globals(self.parser, suppress=False)
        self.sub = self.parser.add_subparsers(dest="command", metavar="COMMAND")

    @staticmethod
    def _add_globals(p: argparse.ArgumentParser, *, suppress: bool) -> None:
        d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
        g = p.add_argument_group("global options")
        g.add_argument("--socket", default=d(None), help="control socket (default: ./run/control.sock or /run/tradingd/control.sock)")
        g.add_argument("--json", action="store_true", default=d(False), help="machine-readable output")
        g.add_argument("--yes", "-y", action="store_true", default=d(False), help="do not ask for confirmation")

    def command(self, name: str, help: str, *, examples: str = "", aliases: Sequence[str] = ()) -> argparse.ArgumentParser:
        p = self.sub.add_parser(
            name,
            help=help,
            description=help,
            epilog=("examples:\n" + examples) if examples else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            aliases=list(aliases),
        )
        self._add_globals(p, suppress=True)
        return p

    def run(self, argv: Sequence[str] | None = None) -> int:
        try:
            args = self.parser.parse_args(argv)
        except SystemExit as exc:
            return EXIT_OK if exc.code in (0, None) else EXIT_USAGE
        runner: Runner | None = getattr(args, "runner", None)
        if runner is None:
            self.parser.print_help()
            return EXIT_USAGE
        path = client_socket(args.socket)
        try:
            with Client(path, timeout=getattr(args, "timeout", 30.0)) as client:
                return runner(args, client)
        except Unreachable as exc:
            _error(args, "unreachable", str(exc))
            return EXIT_UNREACHABLE
        except Refused as exc:
            _error(args, exc.code, exc.message)
            return EXIT_REFUSED
        except KeyboardInterrupt:
            return EXIT_OK
        except BrokenPipeError:
            return EXIT_OK


def _error(args: argparse.Namespace, code: str, message: str) -> None:
    if getattr(args, "json", False):
        sys.stdout.write(msgspec.json.encode({"ok": False, "error": {"code": code, "message": message}}).decode() + "\n")
    else:
        sys.stderr.write(f"tradectl: {message}\n")


def emit_json(value: Any) -> None:
    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")
    sys.stdout.flush()


def confirm(args: argparse.Namespace, question: str) -> bool:
    """Dangerous commands ask on a terminal unless --yes; scripts must pass --yes."""
    if args.yes:
        return True
    if not sys.stdin.isatty():
        sys.stderr.write(f"tradectl: {question} — refusing without --yes when not on a terminal\n")
        return False
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


# ---------------------------------------------------------------------------------------
# Core commands
# ---------------------------------------------------------------------------------------


def _simple(cmd: str, render: Callable[[Any], str] | None = None, build: Callable[[argparse.Namespace], dict] | None = None) -> Runner:
    def run(args: argparse.Namespace, client: Client) -> int:
        result = client.call(cmd, build(args) if build else {})
        if args.json:
            emit_json(result)
        else:
            sys.stdout.write((render(result) if render else fmt.kv(result)) + "\n")
        return EXIT_OK

    return run


def _stream(cmd: str, render: Callable[[Any], str], build: Callable[[argparse.Namespace], dict]) -> Runner:
    def run(args: argparse.Namespace, client: Client) -> int:
        client.timeout = None
        if client._sock is not None:
            client._sock.settimeout(None)
        for event in client.stream(cmd, build(args)):
            if args.json:
                emit_json(event)
            else:
                sys.stdout.write(render(event) + "\n")
                sys.stdout.flush()
        return EXIT_OK

    return run


def _shutdown(args: argparse.Namespace, client: Client) -> int:
    question = "Stop tradingd" + (" and cancel every open order" if args.cancel_orders else "") + "?"
    if not confirm(args, question):
        return EXIT_REFUSED
    return _simple("shutdown", build=lambda a: {"cancel_orders": a.cancel_orders})(args, client)


def register_core(ctl: Ctl) -> None:
    p = ctl.command("ping", "check that the daemon answers")
    p.set_defaults(runner=_simple("ping"))

    p = ctl.command("status", "health, trading state and every actor", examples="  tradectl status\n  tradectl status --json | jq .health")
    p.set_defaults(runner=_simple("status", fmt.status))

    p = ctl.command(
        "watch",
        "stream events (all but market data by default)",
        examples="  tradectl watch\n  tradectl watch Fill\n  tradectl watch 7f3a   # one execution\n  tradectl watch --market-data",
    )
    p.add_argument("topic", nargs="?", help="a message type (Fill, OrderUpdate, ...), a venue, a symbol or an execution id")
    p.add_argument("--market-data", action="store_true", help="include quotes, depth and trades")
    p.set_defaults(runner=_stream("watch", fmt.event, lambda a: {"topic": a.topic, "market_data": a.market_data}))

    p = ctl.command("logs", "recent log lines from the daemon's ring buffer", examples="  tradectl logs -n 50\n  tradectl logs -f --level warning --actor gateway")
    p.add_argument("-n", "--lines", type=int, default=100)
    p.add_argument("-f", "--follow", action="store_true")
    p.add_argument("--level", default="debug")
    p.add_argument("--actor")
    p.set_defaults(
        runner=_stream(
            "logs",
            lambda r: r["line"],
            lambda a: {"lines": a.lines, "follow": a.follow, "level": a.level, "actor": a.actor},
        )
    )

    p = ctl.command("log-level", "show or change log levels at run time", examples="  tradectl log-level\n  tradectl log-level debug --actor feed.binance")
    p.add_argument("level", nargs="?", choices=["debug", "info", "warning", "error", "critical"])
    p.add_argument("--actor", help="only this actor (and its children, e.g. 'feed' covers 'feed.binance')")
    p.set_defaults(runner=_simple("log-level", fmt.log_levels, lambda a: {"level": a.level, "actor": a.actor}))

    p = ctl.command("config", "show the running configuration or reload the file (like SIGHUP)", examples="  tradectl config show\n  tradectl config reload")
    p.add_argument("action", choices=["show", "reload"], nargs="?", default="show")
    p.set_defaults(runner=_simple("config", None, lambda a: {"action": a.action}))

    p = ctl.command("shutdown", "stop the daemon gracefully", examples="  tradectl shutdown --yes\n  tradectl shutdown --cancel-orders")
    p.add_argument("--cancel-orders", action="store_true", help="cancel every open order at every venue first")
    p.set_defaults(runner=_shutdown)


def build() -> Ctl:
    ctl = Ctl()
    register_core(ctl)
    from daemon.ctl_risk import register_risk  # here: it imports this module

    register_risk(ctl)
    from daemon.ctl_positions import register_positions  # here: it imports this module

    register_positions(ctl)
    from daemon.ctl_venues import register_orders, register_venues  # here: it imports this module

    register_orders(ctl)
    register_venues(ctl)
    from daemon.ctl_exec import register_exec  # here: it imports this module; after core (it extends watch)

    register_exec(ctl)
    return ctl


def main(argv: Sequence[str] | None = None) -> int:
    return build().run(argv)


if __name__ == "__main__":
    sys.exit(main())
