"""The configuration file: TOML decoded into Structs that reject unknown keys.

Every error is one line naming the file and the key path, for example

    tradingd.toml: risk.max_order_notional: must be positive, got -5

and the daemon exits with 78 (EX_CONFIG), which the systemd unit lists in
``RestartPreventExitStatus=`` so that a bad file never restart-loops.
Secrets are refused in the file: they come from the environment or systemd
credentials (see `daemon.secrets`).

Sections owned by other parts of the daemon (``[risk]``, ``[venues.NAME]``, ...)
are Structs defined next to the code that uses them; this module only
assembles them. A venue's table carries ``type = "sim"`` or ``"binance"``
and is decoded by that venue type's own Struct (`VENUE_TYPES`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import msgspec

from daemon.supervisor import Backoff, Intensity

EX_CONFIG = 78
_SECRET_KEY = re.compile(r"(secret|password|passwd|private_key|api_key|apikey|token)$", re.I)


class ConfigError(Exception):
    """One line: ``FILE: KEY.PATH: what is wrong``."""

    def __init__(self, source: str, path: str, message: str) -> None:
        self.source = source
        self.path = path
        self.message = message
        where = f"{source}: {path}: " if path else f"{source}: "
        super().__init__(where + message)


def require_positive(key: str, value: Decimal | float | int | None) -> None:
    """For a Struct's __post_init__: a key that must be > 0 when set."""
    if value is not None and value <= 0:
        raise ValueError(f"{key}: must be positive, got {value}")


def require_non_negative(key: str, value: Decimal | float | int | None) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{key}: must not be negative, got {value}")


# ---------------------------------------------------------------------------------------
# Sections owned by the daemon itself
# ---------------------------------------------------------------------------------------


class DaemonSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    control_socket: str | None = None  # default: $RUNTIME_DIRECTORY/control.sock or ./run/control.sock
    socket_group: str | None = None  # members of this group may use the control socket
    graceful_stop_timeout: float = 20.0  # SIGTERM: everything stopped within this
    kill_deadline: float = 10.0  # emergency stop: cancel-all verified within this
    heartbeat_interval: float = 60.0  # seconds between `event=heartbeat` lines
    max_clients: int = 256
    client_idle_timeout: float = 300.0  # a client that sends nothing for this long is dropped
    max_line_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        for key in ("graceful_stop_timeout", "kill_deadline", "heartbeat_interval", "client_idle_timeout"):
            require_positive(key, getattr(self, key))
        require_positive("max_clients", self.max_clients)
        require_positive("max_line_bytes", self.max_line_bytes)


class LogSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    format: Literal["logfmt", "json"] = "logfmt"
    level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    actors: dict[str, Literal["debug", "info", "warning", "error", "critical"]] = {}


class SupervisorSection(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    backoff: Backoff = Backoff()
    intensity: Intensity = Intensity()


# ---------------------------------------------------------------------------------------
# Pluggable sections
# ---------------------------------------------------------------------------------------

VenueFactory = Callable[..., Any]
VENUE_TYPES: dict[str, type[msgspec.Struct]] = {}
SECTIONS: dict[str, type[msgspec.Struct]] = {}


def register_venue_type(name: str, config_type: type[msgspec.Struct]) -> None:
    VENUE_TYPES[name] = config_type


def register_section(name: str, config_type: type[msgspec.Struct]) -> None:
    """A top-level ``[name]`` table decoded by `config_type` (e.g. ``[risk]``)."""
    SECTIONS[name] = config_type


class Config(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    daemon: DaemonSection = DaemonSection()
    log: LogSection = LogSection()
    supervisor: SupervisorSection = SupervisorSection()
    venues: dict[str, Any] = {}  # name -> the venue type's Struct
    sections: dict[str, Any] = {}  # registered sections, decoded
    source: str = "<defaults>"

    def section(self, name: str) -> Any:
        """A registered section's Struct (its defaults when the file has none)."""
        value = self.sections.get(name)
        if value is None:
            value = SECTIONS[name]()
        return value


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------


def _load_plugins() -> None:
    """Import the modules that register sections and venue types."""
    import daemon.plugins  # noqa: F401  (registration side effects)


def load(path: str | Path) -> Config:
    """Read and validate a file; raises ConfigError with the key path."""
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found; pass --config with an existing TOML file") from None
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read: {exc.strerror}") from None
    return parse(data, source)


def parse(data: bytes | str, source: str = "<string>") -> Config:
    _load_plugins()
    if isinstance(data, str):
        data = data.encode()
    try:
        raw = msgspec.toml.decode(data)
    except msgspec.DecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(source, "", "expected a TOML table at the top level")
    _refuse_secrets(raw, source, "")

    known_sections = set(SECTIONS)
    own = {k: v for k, v in raw.items() if k not in known_sections and k != "venues"}
    for key in ("source", "sections"):
        if key in own:
            raise ConfigError(source, key, "unknown key")
    base = _convert(own, Config, source, "")

    sections: dict[str, Any] = {}
    for name, section_type in SECTIONS.items():
        if name in raw:
            sections[name] = _convert(raw[name], section_type, source, name)

    venues: dict[str, Any] = {}
    raw_venues = raw.get("venues", {})
    if not isinstance(raw_venues, dict):
        raise ConfigError(source, "venues", "expected a table of venues, e.g. [venues.sim]")
    for name, table in raw_venues.items():
        path = f"venues.{name}"
        if not isinstance(table, dict):
            raise ConfigError(source, path, "expected a table")
        kind = table.get("type")
        if kind not in VENUE_TYPES:
            choices = ", ".join(sorted(VENUE_TYPES)) or "none registered"
            raise ConfigError(source, f"{path}.type", f"expected one of: {choices}; got {kind!r}")
        venues[name] = _convert(table, VENUE_TYPES[kind], source, path)

    return msgspec.structs.replace(base, venues=venues, sections=sections, source=source)


def _convert(value: Any, type_: Any, source: str, prefix: str) -> Any:
    try:
        return msgspec.convert(value, type_, strict=True)
    except msgspec.ValidationError as exc:
        path, message = _explain(str(exc))
        full = ".".join(p for p in (prefix, path) if p)
        raise ConfigError(source, full, message) from None


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<field>[^`]*)`")
_MISSING = re.compile(r"Object missing required field `(?P<field>[^`]*)`")
_EXPECTED = re.compile(r"Expected `(?P<want>[^`]*)`, got `(?P<got>[^`]*)`")


def _explain(text: str) -> tuple[str, str]:
    """msgspec's message -> (key path, human message)."""
    m = _AT.match(text)
    assert m is not None
    message, path = m.group("msg"), (m.group("path") or "").lstrip(".")
    if um := _UNKNOWN.match(message):
        return _join(path, um.group("field")), "unknown key (check the spelling against config/paper.toml)"
    if mm := _MISSING.match(message):
        return _join(path, mm.group("field")), "required key is missing"
    if em := _EXPECTED.match(message):
        want = {"decimal": "a decimal string", "str": "a string", "int": "an integer", "float": "a number",
                "bool": "true or false", "object": "a table", "array": "a list"}.get(em.group("want"), em.group("want"))
        return path, f"expected {want}, got {em.group('got')}"
    if ":" in message and re.match(r"^[a-z_][a-z0-9_.]*: ", message):
        key, _, rest = message.partition(": ")
        return _join(path, key), rest
    return path, message[0].lower() + message[1:] if message else "invalid value"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _refuse_secrets(table: dict[str, Any], source: str, prefix: str) -> None:
    for key, value in table.items():
        path = _join(prefix, key)
        if isinstance(value, dict):
            _refuse_secrets(value, source, path)
        elif _SECRET_KEY.search(key) and value not in (None, ""):
            raise ConfigError(
                source,
                path,
                "secrets do not belong in the config file; put the value in the environment or a systemd "
                "credential (see the README, 'Credentials')",
            )
