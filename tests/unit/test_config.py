"""Config errors name the file and the key path; check-config exits 78."""

import subprocess
import sys

import pytest

from daemon.config import ConfigError, load, parse


@pytest.mark.parametrize(
    "text, message",
    [
        ("[daemon]\ngraceful_stop_timeout = -5\n", "t.toml: daemon.graceful_stop_timeout: must be positive, got -5.0"),
        ("[daemon]\nfoo = 1\n", "t.toml: daemon.foo: unknown key"),
        ("bar = 1\n", "t.toml: bar: unknown key"),
        ("[daemon]\nmax_clients = \"x\"\n", "t.toml: daemon.max_clients: expected an integer, got str"),
        ("[log]\nformat = \"xml\"\n", "t.toml: log.format: invalid enum value 'xml'"),
        ("[supervisor.backoff]\ninitial = \"soon\"\n", "t.toml: supervisor.backoff.initial: expected a number, got str"),
        ("[venues.x]\ntype = \"carrier-pigeon\"\n", "t.toml: venues.x.type: expected one of:"),
        ("[venues.x]\napi_secret = \"hunter2\"\n", "t.toml: venues.x.api_secret: secrets do not belong in the config file"),
        ("[daemon\n", "t.toml: not valid TOML"),
    ],
)
def test_errors_name_the_key(text, message):
    with pytest.raises(ConfigError) as info:
        parse(text, "t.toml")
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_secret_value_not_echoed_in_error():
    with pytest.raises(ConfigError) as info:
        parse('[venues.x]\npassword = "hunter2"\n', "t.toml")
    assert "hunter2" not in str(info.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="nope.toml: file not found"):
        load("nope.toml")


def test_defaults_and_shipped_configs_are_valid():
    cfg = parse("", "empty")
    assert cfg.daemon.graceful_stop_timeout > 0
    for shipped in ("config/paper.toml", "config/binance.toml", "config/loopback.toml", "systemd/tradingd.toml"):
        assert load(shipped).source == shipped


def _tradingd(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "daemon.main", *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_check_config_exit_codes(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text("[daemon]\nheartbeat_interval = 30\n")
    r = _tradingd("check-config", str(good))
    assert r.returncode == 0, r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[risk_typo]\nx = 1\n")
    r = _tradingd("check-config", str(bad))
    assert r.returncode == 78
    assert r.stderr.strip() == f"{bad}: risk_typo: unknown key (check the spelling against config/paper.toml)"
    r = _tradingd("check-config", str(tmp_path / "missing.toml"))
    assert r.returncode == 78 and "file not found" in r.stderr
    r = _tradingd("run", "--config", str(bad))
    assert r.returncode == 78 and "risk_typo" in r.stderr
