"""Logs an operator can tail: one line per event, stable event names, no secrets.

    log = get_logger("feed.binance")
    log.info("venue.reconnect", venue="binance", attempt=3)

prints ``ts=2026-11-21T10:00:00.123Z level=info actor=feed.binance event=venue.reconnect
venue=binance attempt=3`` (logfmt, the default) or the same keys as one JSON object.
Under journald (``JOURNAL_STREAM`` set) each line starts with the sd-daemon
``<N>`` priority prefix and carries no ``ts``: journald stamps it.

Levels are set per actor at run time; a setting for ``feed`` covers
``feed.binance``. Secrets are redacted twice: by key name (``api_secret=***``)
and by value (any registered secret that appears anywhere in a line).
Recent lines are kept in a ring buffer so ``tradectl logs`` works without
journald access.
"""

from __future__ import annotations

import collections
import datetime as _dt
import enum
import os
import re
import sys
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TextIO

import msgspec


class Level(enum.IntEnum):
    DEBUG = 10
    INFO = 20
    WARNING = 30
    ERROR = 40
    CRITICAL = 50

    @classmethod
    def parse(cls, name: str) -> Level:
        key = name.strip().upper()
        try:
            return cls[_LEVEL_ALIASES.get(key, key)]
        except KeyError:
            raise ValueError(f"unknown log level {name!r}; use one of debug, info, warning, error, critical") from None


_LEVEL_ALIASES = {"WARN": "WARNING", "FATAL": "CRITICAL"}
# sd-daemon(3) priorities
_JOURNAL_PRIORITY = {Level.DEBUG: 7, Level.INFO: 6, Level.WARNING: 4, Level.ERROR: 3, Level.CRITICAL: 2}
_SECRET_KEY = re.compile(r"(secret|password|passwd|private_key|api_key|apikey|token|signature|credential)", re.I)
_NEEDS_QUOTES = re.compile(r'[\s"=\\]')
REDACTED = "***"


class LogRecord(msgspec.Struct, frozen=True):
    ts_ms: int
    level: str
    actor: str
    event: str
    line: str


class LogSink:
    """Where every logger writes: format, levels, redaction, ring buffer, listeners."""

    def __init__(
        self,
        *,
        stream: TextIO | None = None,
        fmt: str = "logfmt",
        level: Level = Level.INFO,
        journald: bool | None = None,
        ring_size: int = 2000,
    ) -> None:
        self.stream = stream
        self.fmt = fmt
        self.default_level = level
        self.actor_levels: dict[str, Level] = {}
        self.journald = bool(os.environ.get("JOURNAL_STREAM")) if journald is None else journald
        self.ring: collections.deque[LogRecord] = collections.deque(maxlen=ring_size)
        self.listeners: list[Callable[[LogRecord], None]] = []
        self._secrets: set[str] = set()
        self._encoder = msgspec.json.Encoder(enc_hook=_to_text)

    # --- configuration ------------------------------------------------------------------
    def configure(self, *, fmt: str | None = None, level: Level | None = None, actor_levels: dict[str, Level] | None = None) -> None:
        if fmt is not None:
            if fmt not in ("logfmt", "json"):
                raise ValueError(f"unknown log format {fmt!r}; use logfmt or json")
            self.fmt = fmt
        if level is not None:
            self.default_level = level
        if actor_levels is not None:
            self.actor_levels = dict(actor_levels)

    def set_level(self, level: Level, actor: str | None = None) -> None:
        if actor is None:
            self.default_level = level
        else:
            self.actor_levels[actor] = level

    def level_for(self, actor: str) -> Level:
        name = actor
        while True:
            if name in self.actor_levels:
                return self.actor_levels[name]
            if "." not in name:
                return self.default_level
            name = name.rsplit(".", 1)[0]

    def register_secret(self, value: str | None) -> None:
        """Never print this value, whatever key or message carries it."""
        if value and len(value) >= 4:
            self._secrets.add(value)

    # --- writing ------------------------------------------------------------------------
    def emit(self, level: Level, actor: str, event: str, fields: dict[str, Any]) -> None:
        if level < self.level_for(actor):
            return
        now = _dt.datetime.now(_dt.UTC)
        ts_ms = int(now.timestamp() * 1000)
        items: list[tuple[str, Any]] = []
        if not self.journald:
            items.append(("ts", now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"))
        items += [("level", level.name.lower()), ("actor", actor), ("event", event)]
        for key, value in fields.items():
            items.append((key, REDACTED if _SECRET_KEY.search(key) and value is not None else value))
        line = self._format(items)
        for secret in self._secrets:
            if secret in line:
                line = line.replace(secret, REDACTED)
        if self.journald:
            line = f"<{_JOURNAL_PRIORITY[level]}>{line}"
        record = LogRecord(ts_ms, level.name.lower(), actor, event, line)
        self.ring.append(record)
        stream = self.stream if self.stream is not None else sys.stdout
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass  # stdout gone (closed pipe): logs are best effort, the journal is the record
        for listener in list(self.listeners):
            listener(record)

    def _format(self, items: list[tuple[str, Any]]) -> str:
        if self.fmt == "json":
            return self._encoder.encode(dict(items)).decode()
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in items)


def _to_text(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


def _logfmt_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        text = format(value, "f")
    elif isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, enum.Enum):
        text = str(value.value)
    elif isinstance(value, (list, tuple)):
        text = ",".join(_logfmt_value(v) for v in value)
    else:
        text = str(value)
    if text == "" or _NEEDS_QUOTES.search(text):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


sink = LogSink()


class Logger:
    """A named logger: the name is the actor that writes the line."""

    __slots__ = ("actor",)

    def __init__(self, actor: str) -> None:
        self.actor = actor

    def child(self, suffix: str) -> Logger:
        return Logger(f"{self.actor}.{suffix}")

    def debug(self, event: str, **fields: Any) -> None:
        sink.emit(Level.DEBUG, self.actor, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        sink.emit(Level.INFO, self.actor, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        sink.emit(Level.WARNING, self.actor, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        sink.emit(Level.ERROR, self.actor, event, fields)

    def critical(self, event: str, **fields: Any) -> None:
        sink.emit(Level.CRITICAL, self.actor, event, fields)

    def enabled(self, level: Level) -> bool:
        return level >= sink.level_for(self.actor)


def get_logger(actor: str) -> Logger:
    return Logger(actor)


def describe_error(exc: BaseException) -> str:
    """`Type: message` on one line, for `error=` fields and `status`."""
    text = str(exc).replace("\n", " ").strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
