"""tradectl's execution commands, and `watch ID` with a live progress bar.

    tradectl exec ALGO SYMBOL SIDE QUANTITY [options]     estimate, confirm, start
    tradectl exec list [--all]
    tradectl exec show ID
    tradectl exec pause ID | resume ID | cancel ID  [-r WHY]
    tradectl exec amend ID [--limit P|none] [--end T]
    tradectl watch ID                                       progress bar until it ends

`exec` takes either an algorithm (twap, vwap, iceberg, pov) or an action as
its first word; each has its own options (`tradectl exec twap --help`).
Submitting shows the pre-trade estimate and asks before starting, unless
``--yes``; ``--dry-run`` only shows the estimate.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from typing import Any

from daemon import ctl_format as fmt
from daemon.ctl import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, Ctl, confirm, emit_json
from daemon.ctl_client import Client, Refused

ALGOS = {
    "twap": "even slices over the horizon",
    "vwap": "follow the market's volume curve over the horizon",
    "iceberg": "show only a small tip at the limit price",
    "pov": "trade a fixed share of the market's volume",
}
FINAL = ("COMPLETED", "CANCELLED", "FAILED")
BAR_WIDTH = 24

EXAMPLES = """  tradectl exec twap BTCUSDT buy 0.5 --duration 30m --limit 64000
  tradectl exec vwap BTCUSDT sell 1 --duration 2h --max-participation 0.1
  tradectl exec iceberg BTCUSDT buy 2 --display 0.05 --limit 60000
  tradectl exec pov ETHUSDT buy 10 --rate 0.05 --venue sim
  tradectl exec list
  tradectl exec show 7f3a9c21
  tradectl exec pause 7f3a9c21 -r "news at 14:00"
  tradectl exec amend 7f3a9c21 --limit 63500 --end 16:00
  tradectl watch 7f3a9c21"""


# ---------------------------------------------------------------------------------------
# Parsers
# ---------------------------------------------------------------------------------------


def _lower(text: str) -> str:
    return text.strip().lower()


def _sub(sub: Any, name: str, help: str, examples: str = "") -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help=help,
        description=help,
        epilog=("examples:\n" + examples) if examples else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    Ctl._add_globals(p, suppress=True)
    return p


def _submit_parser(sub: Any, algo: str) -> argparse.ArgumentParser:
    examples = "\n".join(line for line in EXAMPLES.splitlines() if f"exec {algo} " in line)
    p = _sub(sub, algo, f"{algo.upper()}: {ALGOS[algo]}", examples)
    p.add_argument("symbol", help="instrument, e.g. BTCUSDT")
    p.add_argument("side", type=_lower, choices=["buy", "sell"])
    p.add_argument("quantity", help="base quantity (or, with --quote, an amount of the quote currency)")
    p.add_argument("--quote", action="store_true", help="QUANTITY is an amount of the quote currency to spend or raise")
    p.add_argument("--venue", help="venue (default: the only configured one)")
    p.add_argument("--dry-run", action="store_true", help="only show the pre-trade estimate")
    when = p.add_argument_group("timing")
    when.add_argument("--duration", help="horizon: 90s, 30m, 2h, 1h30m (TWAP and VWAP need it or --end)")
    when.add_argument("--end", help="end time: +30m, 16:00 (UTC) or 2025-06-01T16:00:00Z")
    when.add_argument("--start", help="start later: +5m, 14:30 (UTC) or an ISO time (default: now)")
    how = p.add_argument_group("children")
    how.add_argument("--limit", help="limit price: never buy above / sell below it")
    how.add_argument("--urgency", type=_lower, choices=["low", "medium", "high"], help="how hard to catch up when behind")
    how.add_argument("--style", type=_lower, choices=["passive", "mid", "cross"], help="where children are priced")
    how.add_argument("--post-only", action=argparse.BooleanOptionalAction, default=None, help="resting children are post-only")
    how.add_argument("--collar-bps", type=float, help="how far past the touch a crossing child may go")
    how.add_argument("--min-child", help="smallest child (base units)")
    how.add_argument("--max-child", help="largest child (base units)")
    how.add_argument("--max-live-children", type=int)
    how.add_argument("--replace-after", help="replace a resting child off the wanted price after this long")
    how.add_argument("--size-jitter", type=float, help="randomise child sizes by up to this share (< 0.5)")
    how.add_argument("--time-jitter", type=float, help="randomise child times by up to this share (< 0.5)")
    how.add_argument("--seed", type=int, help="seed of the randomisation (default: from the execution id)")
    how.add_argument("--finish-at-end", action=argparse.BooleanOptionalAction, default=None, help="cross for the rest at the end time")
    how.add_argument("--max-rejects", type=int, help="fail after this many rejects in a row")
    how.add_argument("--no-volatility-pause", dest="volatility_pause", action="store_false", default=None, help="keep trading when the market is jumpy")
    own = p.add_argument_group(f"{algo} options")
    if algo == "twap":
        own.add_argument("--slices", type=int, help="number of slices (default: one a minute)")
        own.add_argument("--interval", help="time between slices instead of --slices")
    elif algo == "vwap":
        own.add_argument("--max-participation", type=float, help="cap on our share of the market volume (0.1 = 10%%)")
        own.add_argument("--profile", help="volume profile: weights (1,2,1), flat, or intraday")
        own.add_argument("--expected-volume", help="market volume forecast for the horizon: adapt to the volume seen")
        own.add_argument("--interval", help="time between children (default: the horizon / 60)")
    elif algo == "iceberg":
        own.add_argument("--display", required=True, help="the visible tip (base units)")
        own.add_argument("--refill-delay", help="wait this long before the next tip")
        own.add_argument("--native", action="store_true", help="use the venue's own iceberg orders")
        own.add_argument("--max-parts", type=int, help="native: at most this many tips per order")
    elif algo == "pov":
        own.add_argument("--rate", type=float, required=True, help="our share of the market volume (0.05 = 5%%)")
        own.add_argument("--band", type=float, help="tolerated relative deviation from the rate (default 0.2)")
    p.set_defaults(runner=_submit, algo=algo)
    return p


def register_exec(ctl: Ctl) -> None:
    p = ctl.command("exec", "run an execution (twap, vwap, iceberg, pov) or look after one", examples=EXAMPLES)
    sub = p.add_subparsers(dest="exec_action", metavar="ALGO|ACTION", required=True)
    for algo in ALGOS:
        _submit_parser(sub, algo)

    q = _sub(sub, "list", "running executions and the latest finished ones")
    q.add_argument("--all", action="store_true", help="every execution in the journal")
    q.add_argument("-n", "--limit", type=int, default=20, help="finished executions to show (default 20)")
    q.set_defaults(runner=_list)

    q = _sub(sub, "show", "one execution: progress, report, history")
    q.add_argument("id")
    q.set_defaults(runner=_show)

    for action, help in (
        ("pause", "pause: cancel the working children and send nothing until resumed"),
        ("resume", "resume a paused (or interrupted) execution"),
        ("cancel", "cancel the execution and its working children"),
    ):
        q = _sub(sub, action, help)
        q.add_argument("id")
        q.add_argument("-r", "--reason", default="", help="why (journaled)")
        q.set_defaults(runner=_state_call(action))

    q = _sub(sub, "amend", "change a running execution's limit price or end time")
    q.add_argument("id")
    q.add_argument("--limit", help="new limit price, or 'none' to remove it")
    q.add_argument("--end", help="new end time: +30m, 16:00 (UTC) or an ISO time")
    q.set_defaults(runner=_amend)


    watch = ctl.sub.choices.get("watch")
    if watch is not None:
        plain_watch = watch.get_default("runner")
        watch.set_defaults(runner=_watch(plain_watch))


# ---------------------------------------------------------------------------------------
# Submitting
# ---------------------------------------------------------------------------------------

_PASSED = (
    "venue", "duration", "end", "start", "limit", "urgency", "style", "post_only", "collar_bps", "min_child",
    "max_child", "max_live_children", "replace_after", "size_jitter", "time_jitter", "seed", "finish_at_end",
    "max_rejects", "volatility_pause", "slices", "interval", "max_participation", "expected_volume", "display",
    "refill_delay", "max_parts", "rate", "band",
)  # fmt: skip


def submit_payload(args: argparse.Namespace) -> dict[str, Any]:
    """The ``exec-submit`` arguments for a parsed ``tradectl exec ALGO ...`` line."""
    payload: dict[str, Any] = {"algo": args.algo, "symbol": args.symbol.upper(), "side": args.side}
    payload["quote_amount" if args.quote else "quantity"] = args.quantity
    for key in _PASSED:
        value = getattr(args, key, None)
        if value is not None:
            payload[key] = value
    if getattr(args, "native", False):
        payload["native"] = True
    profile = getattr(args, "profile", None)
    if profile is not None:
        try:
            payload["profile"] = [float(x) for x in profile.split(",")] if "," in profile or profile[:1].isdigit() else profile
        except ValueError:
            payload["profile"] = profile  # the daemon names the problem
    return payload


def _submit(args: argparse.Namespace, client: Client) -> int:
    payload = submit_payload(args)
    preview = client.call("exec-submit", {**payload, "confirm": False})
    if args.dry_run:
        if args.json:
            emit_json(preview)
        else:
            sys.stdout.write(render_estimate(preview) + "\n")
        return EXIT_OK
    if not args.json:
        sys.stdout.write(render_estimate(preview) + "\n")
    if not confirm(args, "Start this execution?"):
        sys.stderr.write("tradectl: not started\n")
        return EXIT_REFUSED
    result = client.call("exec-submit", {**payload, "confirm": True})
    if args.json:
        emit_json(result)
    else:
        sys.stdout.write(
            f"execution {fmt.paint(result['id'], 'bold')} submitted ({result['state']}): "
            f"follow it with `tradectl watch {result['id']}`\n"
        )
    return EXIT_OK


def render_estimate(r: dict[str, Any]) -> str:
    e = r["estimate"]
    ccy = e.get("currency", "")
    size = f"{r['quote_amount']} {ccy}" if r.get("quote_amount") else f"{r['quantity']} {r.get('base', '')}".strip()
    head = f"{r['algo'].upper()} {r['side']} {size} {r['symbol']} at {r['venue']}"
    if r.get("duration"):
        head += f" over {fmt.duration(r['duration'])}"
    if r.get("limit_price"):
        head += f", limit {r['limit_price']}"
    head += f"  ({r['style'].lower()} children, {r['urgency'].lower()} urgency)"
    lines = [
        head,
        f"pre-trade estimate ({e['model']}): {e['expected_bps']:.1f} bps = {_money(e['expected_quote'])} {ccy} "
        f"on {_money(e['notional'])} {ccy} at {e['price']:g}",
        f"  spread {e['spread_bps']:.1f} bps   impact {e['impact_bps']:.1f} bps   fees {e['fee_bps']:.1f} bps"
        + (f"   timing risk ±{e['risk_bps']:.1f} bps (1 sd, {_money(e['risk_quote'])} {ccy})" if e.get("risk_bps") else ""),
    ]
    market = (
        f"  volatility {e['daily_volatility'] * 100:.2f}%/day ({e['volatility_source']}), "
        f"volume {e['daily_volume']:,.4g} {r.get('base', '')}/day ({e['volume_source']})"
    )
    if e.get("participation") is not None:
        market += f", participation {e['participation'] * 100:.2f}%"
    lines.append(market)
    return "\n".join(lines)


def _money(x: float | None) -> str:
    return "-" if x is None else f"{x:,.2f}"


# ---------------------------------------------------------------------------------------
# Looking after executions
# ---------------------------------------------------------------------------------------


def _list(args: argparse.Namespace, client: Client) -> int:
    result = client.call("exec-list", {"all": args.all, "limit": args.limit})
    if args.json:
        emit_json(result)
        return EXIT_OK
    rows = [
        (
            r["id"],
            fmt.paint(r["state"], _state_colour(r["state"])),
            r["algo"],
            r["side"],
            r["quantity"] or f"{r['quote_amount']} (quote)",
            r["symbol"],
            r["venue"],
            _pct(r.get("filled_pct")),
            _num(r.get("avg_price")),
            _bps(r.get("slippage_bps")),
            fmt.utc(r.get("created_ms")),
        )
        for r in result["executions"]
    ]
    if not rows:
        sys.stdout.write("no executions\n")
        return EXIT_OK
    sys.stdout.write(
        fmt.table(["ID", "STATE", "ALGO", "SIDE", "QTY", "SYMBOL", "VENUE", "FILLED", "AVG", "SLIP", "CREATED"], rows, right=[7, 8, 9])
        + "\n"
    )
    if result.get("total", 0) > len(rows):
        sys.stdout.write(fmt.paint(f"({result['total'] - len(rows)} older finished executions: --all)", "dim") + "\n")
    return EXIT_OK


def _show(args: argparse.Namespace, client: Client) -> int:
    result = client.call("exec-show", {"id": args.id})
    if args.json:
        emit_json(result)
    else:
        sys.stdout.write(render_show(result) + "\n")
    return EXIT_OK


def render_show(r: dict[str, Any]) -> str:
    size = r.get("quantity") or f"{r.get('quote_amount')} (quote)"
    lines = [
        f"execution {fmt.paint(r['id'], 'bold')}  {r['algo'].upper()} {r['side']} {size} {r['symbol']} at {r['venue']}  "
        f"{fmt.paint(r['state'], _state_colour(r['state']))}",
    ]
    if r.get("reason"):
        lines.append(f"  {r['reason']}")
    lines.append(bar_line(r, width=None))
    facts = {
        "limit": r.get("limit_price") or "none",
        "start": fmt.utc(r.get("start_ms")),
        "end": fmt.utc(r.get("end_ms")),
        "arrival mid": r.get("arrival_mid"),
        "decision price": r.get("decision_price"),
        "submitted by": r.get("by"),
    }
    lines.append(fmt.kv(facts, "  "))
    report = r.get("report")
    if report:
        s = report["shortfall"]
        lines.append("")
        lines.append(fmt.paint("report", "bold"))
        lines.append(
            f"  filled {report['filled']:.10g} of {report['ordered']:.10g} ({report['fill_rate'] * 100:.1f}%)  "
            f"avg {_num(report.get('avg_price'))}  slippage {_bps(report.get('slippage_bps'))} vs arrival  "
            f"duration {fmt.duration(report.get('duration'))}"
        )
        rows = [
            (name, f"{s[name]:,.2f}", f"{s[name + '_bps']:+.2f}")
            for name in ("delay", "trading", "opportunity", "fees", "total")
        ]
        lines.append(fmt.table(["SHORTFALL", "QUOTE", "BPS"], rows, right=[1, 2]))
        c = report.get("children") or {}
        lines.append(
            f"  children: {c.get('sent', 0)} sent, {c.get('filled', 0)} filled, {c.get('cancelled', 0)} cancelled, "
            f"{c.get('rejected', 0)} rejected, {c.get('denied', 0)} denied; maker share {_pct_share(c.get('maker_share'))}"
        )
        if report.get("vwap_slippage_bps") is not None:
            lines.append(f"  vs market VWAP {_num(report.get('market_vwap'))}: {_bps(report['vwap_slippage_bps'])}")
    transitions = r.get("transitions") or []
    if transitions:
        lines.append("")
        rows = [(fmt.utc(t["at_ms"]), t["state"], t["by"], t["reason"]) for t in transitions]
        lines.append(fmt.table(["WHEN", "STATE", "BY", "WHY"], rows))
    return "\n".join(lines)


def _state_call(action: str) -> Callable[[argparse.Namespace, Client], int]:
    def run(args: argparse.Namespace, client: Client) -> int:
        result = client.call(f"exec-{action}", {"id": args.id, "reason": args.reason})
        if args.json:
            emit_json(result)
        else:
            sys.stdout.write(f"execution {result['id']}: {result['state']}\n")
        return EXIT_OK

    return run


def _amend(args: argparse.Namespace, client: Client) -> int:
    if args.limit is None and args.end is None:
        sys.stderr.write("tradectl: give --limit and/or --end\n")
        return EXIT_USAGE
    payload: dict[str, Any] = {"id": args.id}
    if args.limit is not None:
        payload["limit"] = args.limit
    if args.end is not None:
        payload["end"] = args.end
    result = client.call("exec-amend", payload)
    if args.json:
        emit_json(result)
    else:
        sys.stdout.write(
            f"execution {result['id']}: limit {result.get('limit_price') or 'none'}, end {fmt.utc(result.get('end_ms'))}\n"
        )
    return EXIT_OK


# ---------------------------------------------------------------------------------------
# watch ID: a progress bar
# ---------------------------------------------------------------------------------------


def bar_line(p: dict[str, Any], width: int | None = BAR_WIDTH) -> str:
    """One line of progress: a bar (the plan's position marked '|'), filled, price, deviations."""
    width = width or BAR_WIDTH
    pct = max(0.0, min(float(p.get("filled_pct") or 0.0), 100.0))
    cells = ["#" if (i + 0.5) * 100 / width <= pct else "." for i in range(width)]
    schedule = p.get("schedule_pct")
    if schedule is not None:
        at = min(int(float(schedule) / 100 * width), width - 1)
        cells[at] = "|"
    size = p.get("quantity") or p.get("quote_amount") or "?"
    filled = p.get("filled_quote") if p.get("quote_amount") and not p.get("quantity") else p.get("filled")
    parts = [
        f"[{''.join(cells)}] {pct:5.1f}%",
        f"{_short(filled)}/{size}",
        f"avg {_num(p.get('avg_price'))}",
        f"slip {_bps(p.get('slippage_bps'))}",
    ]
    if p.get("schedule_deviation_pct") is not None:
        parts.append(f"vs plan {p['schedule_deviation_pct']:+.1f}%")
    if p.get("participation") is not None:
        parts.append(f"part {p['participation'] * 100:.1f}%")
    working = p.get("children_working", (p.get("children") or {}).get("live"))
    if working is not None:
        parts.append(f"working {working}")
    if p.get("remaining") is not None:
        parts.append(f"left {fmt.duration(p['remaining'])}")
    return "  ".join(parts)


def _watch(plain_watch: Callable[[argparse.Namespace, Client], int] | None) -> Callable[[argparse.Namespace, Client], int]:
    def run(args: argparse.Namespace, client: Client) -> int:
        view = None
        # execution ids are hex: message types, venues and symbols are not, and go straight to watch
        if args.topic and not args.market_data and all(c in "0123456789abcdefABCDEF" for c in args.topic):
            try:
                view = client.call("exec-show", {"id": args.topic})
            except Refused as exc:
                if exc.code not in ("not_found", "unknown_command", "bad_args"):
                    raise
        if view is None:
            assert plain_watch is not None
            return plain_watch(args, client)
        return _watch_execution(args, client, view)

    return run


def _watch_execution(args: argparse.Namespace, client: Client, view: dict[str, Any]) -> int:
    exec_id = view["id"]
    live = sys.stdout.isatty() and not args.json
    head = f"{exec_id} {view['algo'].upper()} {view['side']} {view['symbol']}"
    if view["state"] in FINAL:
        if args.json:
            emit_json(view)
        else:
            sys.stdout.write(render_show(view) + "\n")
        return EXIT_OK
    if not args.json:
        sys.stdout.write(f"{head}: {view['state']}  (Ctrl-C stops watching; the execution goes on)\n")
        if live:
            _redraw(view)
    client.timeout = None
    if client._sock is not None:
        client._sock.settimeout(None)
    for event in client.stream("watch", {"topic": exec_id}):
        kind = event.get("type")
        if args.json:
            emit_json(event)
        elif kind == "ExecutionProgress":
            if live:
                _redraw(event)
            else:
                sys.stdout.write(f"{event['state']:<9} {bar_line(event)}\n")
        elif kind == "ExecutionStateChanged":
            _line(live, f"{fmt.paint(event['state'], _state_colour(event['state']))} by {event['by']}: {event['reason']}")
        elif kind == "Fill":
            _line(live, f"fill {event['qty']} @ {event['price']} ({'maker' if event.get('is_maker') else 'taker'}, {event['client_order_id']})")
        if kind == "ExecutionProgress" and event.get("state") in FINAL:
            if live:
                sys.stdout.write("\n")
            sys.stdout.flush()
            return EXIT_OK
        sys.stdout.flush()
    return EXIT_OK


def _redraw(p: dict[str, Any]) -> None:
    columns = shutil.get_terminal_size((100, 20)).columns
    line = f"{p['state']:<9} {bar_line(p)}"
    sys.stdout.write("\r" + line[: max(columns - 1, 20)] + "\033[K")
    sys.stdout.flush()


def _line(live: bool, text: str) -> None:
    if live:
        sys.stdout.write("\r\033[K" + text + "\n")
    else:
        sys.stdout.write(text + "\n")


# ---------------------------------------------------------------------------------------
# Formatting helpers
# ---------------------------------------------------------------------------------------


def _state_colour(state: str) -> str:
    return {"RUNNING": "green", "COMPLETED": "green", "PENDING": "yellow", "PAUSED": "yellow", "INTERRUPTED": "yellow"}.get(
        state, "red"
    )


def _num(x: Any) -> str:
    if x is None:
        return "-"
    return f"{float(x):,.8g}"


def _short(x: Any) -> str:
    if x is None:
        return "0"
    return f"{float(x):.8g}"


def _pct(x: Any) -> str:
    return "-" if x is None else f"{float(x):.1f}%"


def _pct_share(x: Any) -> str:
    return "-" if x is None else f"{float(x) * 100:.0f}%"


def _bps(x: Any) -> str:
    return "-" if x is None else f"{float(x):+.1f}bps"
