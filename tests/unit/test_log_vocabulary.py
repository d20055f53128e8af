"""The `event=` names are a documented, stable vocabulary: README lists exactly the ones the code logs."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LEVELS = {"debug", "info", "warning", "error", "critical"}


def events_in_code() -> set[str]:
    found = set()
    for package in ("daemon", "actors", "venues"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in LEVELS
                    and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                ):
                    name = node.args[0].value
                    if re.fullmatch(r"[a-z_]+(\.[a-z_]+)*", name) and ("." in name or name in ("fill", "heartbeat")):
                        found.add(name)
    return found


def events_in_readme() -> set[str]:
    text = (ROOT / "README.md").read_text()
    table = text.split("<!-- events:begin -->")[1].split("<!-- events:end -->")[0]
    names = set()
    for row in table.splitlines():
        cells = row.split("|")
        if len(cells) >= 3 and cells[1].strip().startswith("`"):
            names |= set(re.findall(r"`([a-z_]+(?:\.[a-z_]+)*)`", cells[2]))  # the events column
    return names


def test_every_logged_event_is_documented_and_nothing_else():
    code, readme = events_in_code(), events_in_readme()
    assert not code - readme, f"log events missing from README's event table: {sorted(code - readme)}"
    assert not readme - code, f"README lists events the code no longer logs: {sorted(readme - code)}"
