"""Where tradingd keeps its files, under systemd and in development.

systemd hands us `$RUNTIME_DIRECTORY` (control socket), `$STATE_DIRECTORY`
(journal) and `$CREDENTIALS_DIRECTORY` (secrets); a development checkout
uses `./run` and `./state` next to where the daemon was started.
"""

from __future__ import annotations

import os
from pathlib import Path

SOCKET_NAME = "control.sock"
SYSTEM_RUNTIME_DIR = Path("/run/tradingd")


def _first(var: str) -> Path | None:
    value = os.environ.get(var)
    if not value:
        return None
    # systemd passes a colon-separated list when several directories are configured
    return Path(value.split(":")[0])


def runtime_dir() -> Path:
    return _first("RUNTIME_DIRECTORY") or Path("run")


def state_dir() -> Path:
    return _first("STATE_DIRECTORY") or Path("state")


def control_socket(configured: str | None = None) -> Path:
    """The daemon's socket path: the config's choice, else the runtime directory."""
    if configured:
        return Path(configured)
    return runtime_dir() / SOCKET_NAME


def client_socket(explicit: str | None = None) -> Path:
    """Where tradectl looks: --socket, $TRADINGD_SOCKET, ./run, then /run/tradingd."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("TRADINGD_SOCKET")
    if env:
        return Path(env)
    local = runtime_dir() / SOCKET_NAME
    if _present(local):
        return local
    system = SYSTEM_RUNTIME_DIR / SOCKET_NAME
    if _present(system):
        return system
    return local


def _present(path: Path) -> bool:
    """Something is there, or we may not look (a caller outside the operators' group
    facing /run/tradingd, mode 0750): connecting then says why, instead of a traceback."""
    try:
        return path.exists()
    except PermissionError:
        return True
