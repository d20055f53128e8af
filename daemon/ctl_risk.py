"""tradectl's risk commands: look at the limits, change one, halt, reduce, resume, kill.

    tradectl risk                          limits with usage, breakers, positions, state
    tradectl risk set KEY VALUE [-r WHY]   change one limit (journaled, asks first)
    tradectl halt -r WHY                   refuse every new order; cancels still pass
    tradectl reduce -r WHY [--venue V]     only orders that reduce a position
    tradectl resume -r WHY [--venue V]     trade again, clearing latched breakers
    tradectl kill [--flatten] [--reason WHY] [--exit]

`kill` exits 0 only when every venue confirmed that no order of ours is open;
otherwise 1, with the ids that are still open.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from actors.risk_limits import limit_keys
from daemon import ctl_format as fmt
from daemon.ctl import EXIT_OK, EXIT_REFUSED, Ctl, confirm, emit_json
from daemon.ctl_client import Client

KILL_CLIENT_TIMEOUT = 300.0  # the kill is bounded by the daemon's deadline; this only guards a dead socket


def _show(args: argparse.Namespace, client: Client) -> int:
    result = client.call("risk", {})
    if args.json:
        emit_json(result)
    else:
        sys.stdout.write(render_risk(result) + "\n")
    return EXIT_OK


def _set(args: argparse.Namespace, client: Client) -> int:
    if not confirm(args, f"Set risk limit {args.key} to {args.value}?"):
        return EXIT_REFUSED
    result = client.call("risk-set", {"key": args.key, "value": args.value, "reason": args.reason})
    if args.json:
        emit_json(result)
    else:
        sys.stdout.write(f"{result['key']}: {_none(result['previous'])} -> {_none(result['value'])} (journaled)\n")
    return EXIT_OK


def _state_command(cmd: str) -> Any:
    def run(args: argparse.Namespace, client: Client) -> int:
        payload: dict[str, Any] = {"reason": args.reason}
        if getattr(args, "venue", None):
            payload["venue"] = args.venue
        result = client.call(cmd, payload)
        if args.json:
            emit_json(result)
        else:
            sys.stdout.write(render_state(result) + "\n")
        return EXIT_OK

    return run


def _kill(args: argparse.Namespace, client: Client) -> int:
    what = "Kill: halt trading and cancel every open order at every venue"
    if args.flatten:
        what += ", then close every position with market orders"
    if args.exit:
        what += ", then stop the daemon"
    if not confirm(args, what + "?"):
        return EXIT_REFUSED
    result = client.call("kill", {"flatten": args.flatten, "reason": args.reason or "", "exit": args.exit})
    if args.json:
        emit_json(result)
    else:
        sys.stdout.write(render_kill(result, exiting=args.exit) + "\n")
    return EXIT_OK if result.get("complete") else EXIT_REFUSED


# ---------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------


def _none(value: Any) -> str:
    return "none" if value is None else str(value)


def _state_word(state: str) -> str:
    return fmt.paint(state, fmt.level_colour(state))


def _used(limit: Any, usage: Any) -> str:
    try:
        lim, use = float(limit), float(usage)
    except (TypeError, ValueError):
        return ""
    if lim <= 0:
        return "100%" if use > 0 else ""
    share = use / lim * 100
    text = f"{share:.0f}%"
    return fmt.paint(text, "red" if share >= 100 else "yellow" if share >= 80 else "green")


def render_risk(r: dict[str, Any]) -> str:
    lines = [f"trading {_state_word(r['state'])}"]
    change = r.get("last_change")
    if change:
        lines[0] += f"  since {fmt.utc(change.get('utc_ms'))} by {change['by']}: {change['reason']}"
    if r.get("emergency"):
        lines.append(fmt.paint(f"emergency stop: {r['emergency']} (resume with `tradectl resume -r WHY`)", "red"))
    for venue, detail in (r.get("balance_mismatches") or {}).items():
        lines.append(fmt.paint(f"balance mismatch at {venue}: {detail} (see `tradectl ack-balances`)", "red"))
    if not r.get("actor_running", True):
        lines.append(fmt.paint("the risk actor is not running: every order is refused", "red"))
    denials = r.get("denials") or {}
    lines.append(
        f"open orders {r['open_orders']}  gross exposure {r['gross_exposure']}  approvals {r['approvals']}  "
        f"denials {sum(denials.values())}" + (f" ({', '.join(f'{k} {v}' for k, v in sorted(denials.items()))})" if denials else "")
    )
    if r.get("unpriced"):
        lines.append(f"no price for {', '.join(r['unpriced'])}: left out of the gross exposure")

    if r.get("venues"):
        lines += ["", fmt.table(
            ["VENUE", "STATE", "ORDER ENTRY", "FEED", "LAST QUOTE"],
            [(v["venue"], _state_word(v["state"]), v["order_entry"], v["feed"],
              None if v.get("last_quote_age") is None else f"{v['last_quote_age']:.1f}s ago") for v in r["venues"]],
        )]  # fmt: skip
    if r.get("trips"):
        lines += ["", fmt.paint("latched breakers (cleared by resume)", "red"), fmt.table(
            ["BREAKER", "VENUE", "ACTION", "AGO", "DETAIL"],
            [(t["breaker"], t.get("venue"), t["action"] + (" + kill" if t.get("kill") else ""),
              fmt.duration(t["age_seconds"]), t["detail"]) for t in r["trips"]],
        )]  # fmt: skip
    lines += ["", fmt.table(
        ["LIMIT", "SCOPE", "VALUE", "USAGE", "USED"],
        [(l["key"], l.get("scope") or "all", _none(l["limit"]) if l["limit"] is not None else "none",
          l.get("usage"), _used(l["limit"], l.get("usage"))) for l in r["limits"]],
        right=[2, 3, 4],
    )]  # fmt: skip
    lines += ["", fmt.table(
        ["BREAKER", "ON", "LIMIT", "NOW", "ACTION", "LATCHED", "DETAIL"],
        [(b["name"], b["enabled"], b.get("limit"), b.get("value"), b.get("action"),
          (", ".join(b["latched_venues"]) if b.get("latched_venues") else b["latched"]), b.get("detail"))
         for b in r["breakers"]],
    )]  # fmt: skip
    if r.get("positions"):
        lines += ["", fmt.table(
            ["INSTRUMENT", "POSITION", "WORKING BUY", "WORKING SELL", "WORST CASE", "MARK", "EXPOSURE", "ORDERS"],
            [(p["instrument"], p["position"], p["working_buy"], p["working_sell"], p["worst_case"], p.get("mark"),
              p.get("exposure"), p["open_orders"]) for p in r["positions"]],
            right=[1, 2, 3, 4, 5, 6, 7],
        )]  # fmt: skip
    if r.get("recent_denials"):
        lines += ["", "recent denials", fmt.table(
            ["AGO", "CODE", "EXEC", "ORDER", "INSTRUMENT", "REASON"],
            [(fmt.duration(d["age_seconds"]), d["code"], d["exec"], d["cid"], d["instrument"], d["reason"])
             for d in reversed(r["recent_denials"])],
        )]  # fmt: skip
    return "\n".join(lines)


def render_state(r: dict[str, Any]) -> str:
    head = f"trading {_state_word(r['state'])}"
    if r.get("venues_reducing"):
        head += f"; REDUCING at {', '.join(r['venues_reducing'])}"
    if not r.get("changed"):
        return head + " (no change)"
    return head + "\n" + "\n".join(
        f"  {c.get('venue') or 'all venues'}: {c['previous']} -> {c['state']}" for c in r["changed"] if "previous" in c
    )


def _open_count(v: dict[str, Any]) -> Any:
    if v.get("still_open"):
        return len(v["still_open"])
    return 0 if v.get("verified") else "unknown"


def render_kill(r: dict[str, Any], *, exiting: bool = False) -> str:
    verdict = fmt.paint("COMPLETE", "green") if r.get("complete") else fmt.paint("INCOMPLETE", "red")
    lines = [f"kill {verdict} in {r['elapsed']:.3f}s  (reason: {r['reason']}; by {r['by']})"]
    if r.get("executions_stopped"):
        lines.append(f"executions stopped: {r['executions_stopped']}")
    venues = r.get("venues") or []
    if venues:
        lines += ["", fmt.table(
            ["VENUE", "CANCELLED", "STILL OPEN", "ATTEMPTS", "VERIFIED", "TIME", "ERROR"],
            [(v["venue"], v["cancelled"], _open_count(v),
              v.get("attempts"), v.get("verified"), f"{v.get('elapsed', 0):.3f}s", v.get("error") or "")
             for v in venues],
            right=[1, 2, 3, 5],
        )]  # fmt: skip
        for v in venues:
            if v.get("still_open"):
                lines.append(fmt.paint(f"still open at {v['venue']}: {', '.join(v['still_open'])}", "red"))
    else:
        lines.append("no venue configured: nothing to cancel")
    if r.get("flattened"):
        lines += ["", fmt.table(
            ["VENUE", "SYMBOL", "POSITION", "ORDER", "OUTCOME"],
            [(f["venue"], f["symbol"], f["quantity"], f.get("client_order_id"), f.get("outcome")) for f in r["flattened"]],
            right=[2],
        )]  # fmt: skip
    lines.append("")
    if exiting:
        lines.append("the daemon is stopping (kill --exit); it will start HALTED")
    else:
        lines.append("trading is HALTED until `tradectl resume -r WHY`")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------


def register_risk(ctl: Ctl) -> None:
    p = ctl.command(
        "risk",
        "risk limits with their usage, breakers, positions and the trading state; `risk set` changes a limit",
        examples="  tradectl risk\n  tradectl risk --json | jq '.limits[] | select(.key == \"max_position\")'\n"
        "  tradectl risk set max_order_notional 25000 -r 'new account size'",
    )
    p.set_defaults(runner=_show)
    actions = p.add_subparsers(dest="risk_action", metavar="ACTION")
    s = actions.add_parser(
        "set",
        help="change one limit at run time (validated like the config file, journaled with who and when)",
        description="Change one risk limit at run time. The value is checked exactly as the config file would "
        "be; 'none' removes a limit. The change is journaled with who made it and lasts until the next "
        "restart or a reload that changes [risk].",
        epilog="examples:\n  tradectl risk set max_order_qty 2\n  tradectl risk set daily_loss.limit 5000 -r 'tighter today'\n"
        "  tradectl risk set instruments.binance:BTCUSDT.max_position 0.5\n  tradectl risk set max_gross_exposure none --yes\n\n"
        "keys:\n  " + "\n  ".join(limit_keys()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    Ctl._add_globals(s, suppress=True)
    s.add_argument("key", help="dotted limit key, e.g. max_order_notional or daily_loss.limit")
    s.add_argument("value", help="the new value, or 'none' to remove the limit")
    s.add_argument("-r", "--reason", default="", help="why (kept in the journal)")
    s.set_defaults(runner=_set)

    p = ctl.command(
        "halt",
        "refuse every new order until `resume` (cancels still pass)",
        examples="  tradectl halt -r 'exchange maintenance at 14:00'",
    )
    p.add_argument("-r", "--reason", required=True, help="why (journaled, shown in status)")
    p.set_defaults(runner=_state_command("halt"))

    p = ctl.command(
        "reduce",
        "let only orders that reduce a position through, everywhere or at one venue",
        examples="  tradectl reduce -r 'closing out before the weekend'\n  tradectl reduce --venue binance -r 'binance flaky'",
    )
    p.add_argument("-r", "--reason", required=True, help="why (journaled, shown in status)")
    p.add_argument("--venue", help="only this venue")
    p.set_defaults(runner=_state_command("reduce"))

    p = ctl.command(
        "resume",
        "trade again, clearing latched breakers (everywhere, or at one venue)",
        examples="  tradectl resume -r 'checked the fills, all good'\n  tradectl resume --venue binance -r 'feed back'",
    )
    p.add_argument("-r", "--reason", required=True, help="why (journaled)")
    p.add_argument("--venue", help="only this venue's REDUCING state and breakers")
    p.set_defaults(runner=_state_command("resume"))

    p = ctl.command(
        "kill",
        "emergency stop: halt, stop executions, cancel every open order at every venue and verify; "
        "exits 1 if any venue could not confirm",
        examples="  tradectl kill --reason 'runaway algo'\n  tradectl kill --flatten --yes\n"
        "  tradectl kill --exit --reason 'moving the box'",
    )
    p.add_argument("--flatten", action="store_true", help="then close every position with reduce-only market orders")
    p.add_argument("-r", "--reason", help="why (journaled, logged, shown in status)")
    p.add_argument("--exit", action="store_true", help="then stop the daemon (it starts HALTED next time)")
    p.set_defaults(runner=_kill, timeout=KILL_CLIENT_TIMEOUT)
