"""The systemd deployment: systemd/install.sh stages the unit, its companions and the
config into a temporary root; `systemd-analyze verify` must accept the installed unit,
and `systemd-analyze security --offline=true` must rate it 1.5 or lower (the figure is
printed). The unit's key directives are checked against the daemon's own defaults."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from daemon.config import EX_CONFIG, DaemonSection, load

pytestmark = pytest.mark.slow

SOURCE = Path(__file__).resolve().parents[2]
SYSTEMD_DIR = SOURCE / "systemd"
INSTALL = SYSTEMD_DIR / "install.sh"
UNIT = "/etc/systemd/system/tradingd.service"
DROPIN = "/etc/systemd/system/tradingd.service.d/restart-backoff.conf"
EXEC = "/opt/tradingd/venv/bin/tradingd"
ANALYZE = shutil.which("systemd-analyze")
EXPOSURE_LIMIT = 1.5

needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed")


def analyze_version() -> int:
    """The systemd version whose keys `systemd-analyze` understands (0 without it)."""
    if ANALYZE is None:
        return 0
    first = subprocess.run([ANALYZE, "--version"], capture_output=True, text=True).stdout.split("\n", 1)[0]
    match = re.match(r"systemd (\d+)", first)
    return int(match.group(1)) if match else 0


def run_install(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ, DESTDIR=str(root), SYSTEMD_VERSION=str(analyze_version()))
    environ.pop("PREFIX", None)
    environ.update(env)
    return subprocess.run(["sh", str(INSTALL), "--no-venv", *args], capture_output=True, text=True, env=environ, timeout=60)


def in_root(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def add_stub(root: Path, path: str) -> None:
    """An executable where the unit expects one, as the real install would have it."""
    stub = in_root(root, path)
    stub.parent.mkdir(parents=True, exist_ok=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root as install.sh leaves it, plus the executables the venv step would provide."""
    root = tmp_path_factory.mktemp("root")
    result = run_install(root)
    assert result.returncode == 0, result.stderr
    add_stub(root, EXEC)
    add_stub(root, "/bin/kill")
    return root


def directives(*files: Path) -> dict[str, list[str]]:
    """Every `Key=value` of a unit and its drop-ins, in order; an empty value resets the key."""
    values: dict[str, list[str]] = {}
    for file in files:
        text = re.sub(r"\\\n", " ", file.read_text())
        for line in text.splitlines():
            line = line.strip()
            if not line or line[0] in "#;[":
                continue
            key, _, value = line.partition("=")
            if value.strip():
                values.setdefault(key.strip(), []).append(value.strip())
            else:
                values[key.strip()] = []
    return values


def unit_directives(root: Path) -> dict[str, list[str]]:
    files = [in_root(root, UNIT)]
    if in_root(root, DROPIN).exists():
        files.append(in_root(root, DROPIN))
    return directives(*files)


def one(values: dict[str, list[str]], key: str) -> str:
    assert len(values.get(key, [])) == 1, f"{key}= should be set exactly once, found {values.get(key)}"
    return values[key][0]


def seconds(span: str) -> float:
    """A systemd time span ("45s", "1min 30s") in seconds, as systemd reads it."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "hr": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span):
        total += float(number) * units[unit or "s"]
    return total


# --- install.sh ---------------------------------------------------------------------------


def test_install_stages_the_unit_its_companions_and_the_config(root):
    for path in (UNIT, "/etc/sysusers.d/tradingd.conf", "/etc/tradingd/tradingd.toml",
                 "/opt/tradingd/share/tradingd/tradingd.toml.example", "/opt/tradingd/share/tradingd/README.md"):
        assert stat.S_IMODE(in_root(root, path).stat().st_mode) == 0o644, path
    assert stat.S_IMODE(in_root(root, "/etc/credstore").stat().st_mode) == 0o700
    assert os.readlink(in_root(root, "/usr/local/bin/tradectl")) == "/opt/tradingd/venv/bin/tradectl"
    assert in_root(root, UNIT).read_text() == (SYSTEMD_DIR / "tradingd.service").read_text()
    assert in_root(root, DROPIN).exists() == (analyze_version() >= 254)


def test_installed_config_loads_and_lets_the_units_group_use_the_socket(root):
    cfg = load(in_root(root, "/etc/tradingd/tradingd.toml"))
    unit = unit_directives(root)
    assert cfg.daemon.socket_group == one(unit, "Group")
    assert cfg.daemon.graceful_stop_timeout + cfg.daemon.kill_deadline < seconds(one(unit, "TimeoutStopSec"))


def test_sysusers_declares_the_units_user(root):
    entries = [line.split() for line in in_root(root, "/etc/sysusers.d/tradingd.conf").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    unit = unit_directives(root)
    assert [e[:2] for e in entries] == [["u", one(unit, "User")]]  # "u" also creates the same-named group
    assert one(unit, "Group") == one(unit, "User")


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="systemd-sysusers is not installed")
def test_systemd_sysusers_creates_the_user_and_group_in_the_root(tmp_path):
    assert run_install(tmp_path).returncode == 0
    result = subprocess.run(["systemd-sysusers", f"--root={tmp_path}", str(in_root(tmp_path, "/etc/sysusers.d/tradingd.conf"))],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    passwd = {line.split(":")[0]: line.split(":") for line in in_root(tmp_path, "/etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[0]: line.split(":") for line in in_root(tmp_path, "/etc/group").read_text().splitlines()}
    user = passwd["tradingd"]
    assert user[3] == groups["tradingd"][2]  # its primary group is the unit's Group=
    assert int(user[2]) < 1000 and user[6] in ("/usr/sbin/nologin", "/sbin/nologin")


def test_running_install_again_keeps_the_operators_config(tmp_path):
    assert run_install(tmp_path).returncode == 0
    config = in_root(tmp_path, "/etc/tradingd/tradingd.toml")
    config.write_text('[daemon]\nsocket_group = "ops"\n')
    again = run_install(tmp_path)
    assert again.returncode == 0, again.stderr
    assert config.read_text() == '[daemon]\nsocket_group = "ops"\n'
    assert "kept       /etc/tradingd/tradingd.toml" in again.stdout
    assert "unchanged  /etc/systemd/system/tradingd.service" in again.stdout
    assert "systemctl enable --now tradingd" in again.stdout


def test_the_backoff_dropin_is_installed_only_where_systemd_knows_its_keys(tmp_path):
    assert run_install(tmp_path, SYSTEMD_VERSION="254").returncode == 0
    assert directives(in_root(tmp_path, DROPIN)) == {"RestartSteps": ["6"], "RestartMaxDelaySec": ["5min"]}
    older = run_install(tmp_path, SYSTEMD_VERSION="252")
    assert older.returncode == 0, older.stderr
    assert not in_root(tmp_path, DROPIN).exists()
    assert "removed    " + DROPIN in older.stdout


def test_prefix_moves_the_venv_and_a_home_prefix_is_refused(tmp_path):
    assert run_install(tmp_path, PREFIX="/srv/tradingd").returncode == 0
    unit = directives(in_root(tmp_path, UNIT))
    assert one(unit, "ExecStart") == "/srv/tradingd/venv/bin/tradingd run --config /etc/tradingd/tradingd.toml"
    assert "/opt/tradingd" not in in_root(tmp_path, UNIT).read_text()
    refused = run_install(tmp_path / "other", PREFIX="/home/alice/tradingd")
    assert refused.returncode == 1 and "ProtectHome" in refused.stderr


def test_a_venv_cannot_be_staged_under_destdir(tmp_path):
    environ = dict(os.environ, DESTDIR=str(tmp_path))
    result = subprocess.run(["sh", str(INSTALL)], capture_output=True, text=True, env=environ, timeout=60)
    assert result.returncode == 1 and "--no-venv" in result.stderr
    assert not (tmp_path / "opt").exists()


# --- the unit's directives -----------------------------------------------------------------


def test_unit_is_a_notify_service_with_watchdog_and_bounded_stop(root):
    unit = unit_directives(root)
    assert one(unit, "Type") == "notify"
    assert one(unit, "NotifyAccess") == "main"
    assert seconds(one(unit, "WatchdogSec")) > 0
    assert one(unit, "KillMode") == "mixed"
    defaults = DaemonSection()
    assert seconds(one(unit, "TimeoutStopSec")) > defaults.graceful_stop_timeout + defaults.kill_deadline
    assert one(unit, "ExecStart") == f"{EXEC} run --config /etc/tradingd/tradingd.toml"
    assert unit["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
    assert "PYTHONUNBUFFERED=1" in " ".join(unit["Environment"]).split()


def test_a_bad_config_does_not_restart_loop_but_a_crash_restarts(root):
    unit = unit_directives(root)
    assert one(unit, "Restart") == "on-failure"
    assert seconds(one(unit, "RestartSec")) > 0
    assert str(EX_CONFIG) in one(unit, "RestartPreventExitStatus").split()
    assert "1" not in one(unit, "RestartPreventExitStatus").split()  # a gave-up supervisor is restarted


def test_unit_owns_its_directories_and_loads_the_venue_credentials(root):
    from venues.binance.config import BinanceConfig

    unit = unit_directives(root)
    assert one(unit, "StateDirectory") == one(unit, "RuntimeDirectory") == one(unit, "ConfigurationDirectory") == "tradingd"
    assert one(unit, "RuntimeDirectoryMode") == "0750"  # group members reach the 0660 socket inside
    loaded = {value.split(":", 1)[0] for value in unit["LoadCredential"]}
    venue = BinanceConfig()
    assert {venue.api_key_name, venue.api_secret_name} <= loaded


def test_hardening_leaves_the_network_and_numpy_working(root):
    unit = unit_directives(root)
    families = set(" ".join(unit["RestrictAddressFamilies"]).split())
    assert {"AF_INET", "AF_INET6", "AF_UNIX"} <= families and not any(f.startswith("~") for f in families)
    assert unit.get("PrivateNetwork", ["no"])[-1] == "no"
    assert "any" not in " ".join(unit.get("IPAddressDeny", []))
    assert unit.get("PrivateUsers", ["no"])[-1] == "no"  # SO_PEERCRED must see the operators' real uids
    # numpy's OpenBLAS calls mbind(), which ~@resources refuses: it must get EPERM, not SIGSYS
    assert one(unit, "SystemCallErrorNumber") == "EPERM"


def test_tradectl_outside_the_group_is_pointed_at_the_socket_not_given_a_traceback(tmp_path, monkeypatch):
    """/run/tradingd is 0750: for a non-member even looking for the socket fails with EACCES."""
    from daemon import paths

    runtime = tmp_path / "run-tradingd"
    monkeypatch.setattr(paths, "SYSTEM_RUNTIME_DIR", runtime)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRADINGD_SOCKET", raising=False)
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    real_exists = Path.exists

    def exists(self: Path) -> bool:
        if runtime in self.parents:
            raise PermissionError(13, "Permission denied", str(self))
        return real_exists(self)

    monkeypatch.setattr(Path, "exists", exists)
    assert paths.client_socket() == runtime / "control.sock"


# --- systemd-analyze -------------------------------------------------------------------------


def verify(root: Path) -> subprocess.CompletedProcess[str]:
    # --root resolves the unit and every command path inside the staged root, so the check
    # covers the installed layout instead of this machine's /opt; --recursive-errors=no
    # turns warnings about the unit itself into a failing exit status.
    return subprocess.run(
        [ANALYZE, "verify", f"--root={root}", "--recursive-errors=no", "--man=no", "tradingd.service"],
        capture_output=True, text=True, timeout=60,
    )


@needs_analyze
def test_systemd_analyze_verify_accepts_the_installed_unit(root):
    result = verify(root)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "tradingd" not in output, output


@needs_analyze
def test_verify_would_catch_a_missing_executable(tmp_path):
    assert run_install(tmp_path).returncode == 0
    add_stub(tmp_path, "/bin/kill")
    result = verify(tmp_path)
    assert result.returncode != 0
    assert EXEC in result.stdout + result.stderr


@needs_analyze
def test_exposure_is_at_most_one_and_a_half(root, capsys):
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", f"--root={root}", "--no-pager", "tradingd.service"],
        capture_output=True, text=True, timeout=60,
    )
    match = re.search(r"Overall exposure level for tradingd\.service: (\d+\.\d)", result.stdout)
    assert match, result.stdout + result.stderr
    figure = float(match.group(1))
    with capsys.disabled():
        print(f"\nsystemd-analyze security --offline=true tradingd.service: exposure {figure} (limit {EXPOSURE_LIMIT})")
    assert figure <= EXPOSURE_LIMIT, result.stdout

    script = subprocess.run(["sh", str(SYSTEMD_DIR / "exposure.sh"), str(in_root(root, UNIT))],
                            capture_output=True, text=True, timeout=60)
    assert script.returncode == 0, script.stderr
    assert f"exposure {figure} (limit 1.5)" in script.stdout
