"""Human output for tradectl: aligned tables, colour only on a terminal, UTC times."""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Sequence
from typing import Any

_COLOURS = {"green": "32", "yellow": "33", "red": "31", "bold": "1", "dim": "2"}


def use_colour() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def paint(text: str, colour: str) -> str:
    if not use_colour():
        return text
    return f"\033[{_COLOURS[colour]}m{text}\033[0m"


def level_colour(word: str) -> str:
    return {"HEALTHY": "green", "ACTIVE": "green", "running": "green", "DEGRADED": "yellow",
            "REDUCING": "yellow", "restarting": "yellow", "starting": "yellow"}.get(word, "red" if word else "dim")


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, right: Sequence[int] = ()) -> str:
    """Columns aligned on the widest cell; `right` lists right-aligned (numeric) columns."""
    cells = [[_text(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, v in enumerate(row):
            widths[i] = max(widths[i], len(v))

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(widths[i]) if i in right else v.ljust(widths[i]) for i, v in enumerate(values)]
        return "  ".join(parts).rstrip()

    out = [paint(line(list(headers)), "bold")]
    out += [line(row) for row in cells]
    return "\n".join(out)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def utc(ts_ms: int | float | None) -> str:
    if not ts_ms:
        return "-"
    return dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d{h:02d}h{m:02d}m"
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


def kv(value: Any, indent: str = "") -> str:
    if isinstance(value, dict):
        if not value:
            return indent + "(none)"
        width = max(len(str(k)) for k in value)
        lines = []
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{indent}{k}:")
                lines.append(kv(v, indent + "  "))
            else:
                lines.append(f"{indent}{str(k).ljust(width)}  {_text(v)}")
        return "\n".join(lines)
    if isinstance(value, list):
        return "\n".join(kv(v, indent) if isinstance(v, (dict, list)) else indent + _text(v) for v in value)
    return indent + _text(value)


def status(s: dict[str, Any]) -> str:
    head = (
        f"tradingd {s['version']}  pid {s['pid']}  up {duration(s['uptime'])}  "
        f"trading {paint(s['trading_state'], level_colour(s['trading_state']))}  "
        f"health {paint(s['health'], level_colour(s['health']))}"
    )
    lines = [head]
    for reason in s.get("reasons", []):
        lines.append(f"  - {reason}")
    lines.append("")
    rows = [
        (a["name"], paint(a["state"], level_colour(a["state"])), a["restarts"], a.get("last_error") or "")
        for a in s.get("actors", [])
    ]
    lines.append(table(["ACTOR", "STATE", "RESTARTS", "LAST ERROR"], rows, right=[2]))
    extra = s.get("extra") or {}
    for name, section in extra.items():
        if name == "heartbeat":
            continue
        lines.append("")
        lines.append(paint(name, "bold"))
        lines.append(kv(section, "  "))
    return "\n".join(lines)


def event(e: dict[str, Any]) -> str:
    kind = e.get("type", "?")
    fields = " ".join(f"{k}={_text(v)}" for k, v in e.items() if k != "type" and not isinstance(v, (dict, list)))
    return f"{paint(kind, 'bold')} {fields}"


def log_levels(r: dict[str, Any]) -> str:
    rows = [("(default)", r["default"])] + [(k, v) for k, v in r.get("actors", {}).items()]
    return table(["ACTOR", "LEVEL"], rows)
