"""Secrets come from systemd credentials or the environment, never the config file.

A secret named ``binance_api_secret`` is read from
``$CREDENTIALS_DIRECTORY/binance_api_secret`` (systemd ``LoadCredential=``)
or else from the environment variable ``TRADINGD_BINANCE_API_SECRET``.
Every secret read is registered with the log sink so its value can never
appear in a log line, whatever field carries it.
"""

from __future__ import annotations

import os
from pathlib import Path

import daemon.logs as logs  # the module, not its sink: tests swap `logs.sink`


class MissingSecret(LookupError):
    pass


def env_name(name: str) -> str:
    return "TRADINGD_" + name.upper().replace("-", "_").replace(".", "_")


def read_secret(name: str, *, required: bool = False) -> str | None:
    value: str | None = None
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        path = Path(cred_dir) / name
        if path.is_file():
            value = path.read_text().strip()
    if value is None:
        value = os.environ.get(env_name(name)) or None
    if value is None and required:
        raise MissingSecret(
            f"secret {name!r} is not set: put it in $CREDENTIALS_DIRECTORY/{name} "
            f"(systemd LoadCredential=) or the environment variable {env_name(name)}"
        )
    logs.sink.register_secret(value)
    return value
