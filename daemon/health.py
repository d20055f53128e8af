"""The daemon's health: HEALTHY, DEGRADED or CRITICAL, with the reasons.

Actors report conditions under a source name (``feed.binance``,
``gateway.sim``, ``risk``) and clear them when they pass; the summary is
the worst level reported plus every actor that is not running. The same
one-line summary goes to ``tradectl status``, the heartbeat log line and
systemd's ``STATUS=``.
"""

from __future__ import annotations

import enum

from daemon.supervisor import Registry


class Level(enum.IntEnum):
    HEALTHY = 0
    DEGRADED = 1
    CRITICAL = 2


class Health:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._conditions: dict[str, tuple[Level, str]] = {}

    def report(self, source: str, level: Level, reason: str) -> None:
        if level is Level.HEALTHY:
            self._conditions.pop(source, None)
        else:
            self._conditions[source] = (level, reason)

    def clear(self, source: str) -> None:
        self._conditions.pop(source, None)

    def summary(self) -> tuple[Level, list[str]]:
        level = Level.HEALTHY
        reasons: list[str] = []
        for record in self.registry.actors.values():
            if record.state in ("running", "stopped"):
                continue
            actor_level = Level.CRITICAL if record.core else Level.DEGRADED
            level = max(level, actor_level)
            reasons.append(f"{record.name} {record.state}")
        for source, (cond_level, reason) in sorted(self._conditions.items()):
            level = max(level, cond_level)
            reasons.append(f"{source}: {reason}")
        return level, reasons

    def line(self) -> str:
        level, reasons = self.summary()
        return level.name if not reasons else f"{level.name}: " + "; ".join(reasons)
