"""tradectl venues: connection state, latency, rate-limit usage and reconnects of every venue.

    tradectl venues              one line per venue
    tradectl venues binance      the same, then every detail of that venue
    tradectl venues --json       the daemon's answer as it is
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from daemon import ctl_format as fmt
from daemon.ctl import EXIT_OK, Ctl, emit_json
from daemon.ctl_client import Client

_GOOD = {"live", "up", "connected"}
_BAD = {"stale", "down", "banned", "disconnected"}


def _state(word: str | None) -> str:
    if not word:
        return "-"
    if word in _GOOD:
        return fmt.paint(word, "green")
    if word in _BAD:
        return fmt.paint(word, "red")
    return fmt.paint(word, "yellow")


def _seconds(value: Any) -> str:
    if value is None:
        return "-"
    value = float(value)
    if value < 10:
        return f"{value:.1f}s"
    return fmt.duration(value)


def _usage(rate_limit: dict[str, Any] | None) -> str:
    """The busiest rate window, as used/limit."""
    if not rate_limit:
        return "-"
    worst_key, worst = max(rate_limit.items(), key=lambda kv: kv[1]["used"] / kv[1]["limit"] if kv[1]["limit"] else 0)
    share = worst["used"] / worst["limit"] if worst["limit"] else 0
    text = f"{worst['used']}/{worst['limit']} {worst_key.split('/')[0].lower().replace('_', ' ')}"
    return fmt.paint(text, "red" if share >= 0.9 else "yellow" if share >= 0.5 else "green")


def render(result: dict[str, Any]) -> str:
    venues = result.get("venues", [])
    if not venues:
        return "no venue configured"
    rows = []
    for v in venues:
        feed = v.get("feed") or {}
        gw = v.get("gateway") or {}
        latency = (gw.get("latency_ms") or {}).get("average")
        rows.append(
            [
                v["venue"],
                v.get("type", "-"),
                _state(feed.get("state")) if feed else "-",
                f"{feed.get('live_books', 0)}/{feed.get('books', 0)}" if feed else "-",
                _seconds(feed.get("last_frame_age")) if feed else "-",
                feed.get("reconnects", 0) if feed else "-",
                _state(gw.get("order_entry")),
                _state(gw.get("stream")),
                gw.get("stream_reconnects", 0),
                f"{latency:.1f}ms" if latency is not None else "-",
                _usage(gw.get("rate_limit")),
                gw.get("working", 0),
            ]
        )
    out = fmt.table(
        ["VENUE", "TYPE", "FEED", "BOOKS", "LAST FRAME", "RECONN", "ORDERS", "USER STREAM", "RECONN", "LATENCY", "RATE LIMIT", "WORKING"],
        rows,
        right=(3, 4, 5, 8, 9, 11),
    )
    if len(venues) == 1:
        v = venues[0]
        details: dict[str, Any] = {}
        for part in ("feed", "gateway"):
            for key, value in (v.get(part) or {}).items():
                details[f"{part}.{key}"] = value
        out += "\n\n" + fmt.kv(details)
    return out


def _run(args: argparse.Namespace, client: Client) -> int:
    result = client.call("venues", {"venue": args.venue})
    if args.json:
        emit_json(result)
    else:
        sys.stdout.write(render(result) + "\n")
    return EXIT_OK


def register_venues(ctl: Ctl) -> None:
    p = ctl.command(
        "venues",
        "connection state, latency, rate-limit usage and reconnects of every venue",
        examples="  tradectl venues\n  tradectl venues binance\n  tradectl venues --json | jq '.venues[].gateway.rate_limit'",
    )
    p.add_argument("venue", nargs="?", help="only this venue, with every detail")
    p.set_defaults(runner=_run)


def render_orders(result: dict[str, Any]) -> str:
    orders = result.get("orders", [])
    if not orders:
        return "no working orders (--all also shows finished ones)"
    rows = [
        [
            o["venue"],
            o["symbol"],
            o["side"],
            o["quantity"],
            o["filled"],
            o["price"] if o["price"] is not None else "MARKET",
            o["status"] + ("?" if o.get("inferred") else ""),
            o["exec_id"] or ("-" if o.get("ours") else "(not ours)"),
            o["client_order_id"],
        ]
        for o in orders
    ]
    out = fmt.table(["VENUE", "SYMBOL", "SIDE", "QTY", "FILLED", "PRICE", "STATUS", "EXEC", "CLIENT ORDER ID"], rows, right=(3, 4, 5))
    if result.get("total", len(orders)) > len(orders):
        out += f"\n({result['total'] - len(orders)} older not shown; --limit N)"
    return out


def _run_orders(args: argparse.Namespace, client: Client) -> int:
    result = client.call(
        "orders",
        {"venue": args.venue, "symbol": args.symbol, "exec_id": args.exec_id, "all": args.all, "limit": args.limit},
    )
    if args.json:
        emit_json(result)
    else:
        sys.stdout.write(render_orders(result) + "\n")
    return EXIT_OK


def register_orders(ctl: Ctl) -> None:
    p = ctl.command(
        "orders",
        "orders at the venues: working ones, or with --all the recent finished ones too",
        examples="  tradectl orders\n  tradectl orders --venue sim --symbol BTCUSDT\n  tradectl orders --exec 7f3a9c01 --all --json",
    )
    p.add_argument("--venue")
    p.add_argument("--symbol")
    p.add_argument("--exec", dest="exec_id", metavar="EXEC_ID")
    p.add_argument("--all", action="store_true", help="include finished orders the gateways still remember")
    p.add_argument("--limit", type=int, default=500)
    p.set_defaults(runner=_run_orders)
