#!/bin/sh
# Install tradingd as a systemd service: a virtualenv under /opt/tradingd, the unit,
# its sysusers.d entry, and a starting config under /etc/tradingd (never overwritten).
# Safe to run again: an upgrade reinstalls the package and the unit, and keeps the config.
#
#   sudo sh systemd/install.sh             install or upgrade on this machine
#   sh systemd/install.sh --no-venv        files only (no Python package)
#   DESTDIR=/tmp/root sh systemd/install.sh --no-venv
#                                          stage into a directory, no root needed
#
# Environment: DESTDIR (staging root, default none), PREFIX (default /opt/tradingd),
# UNITDIR (default /etc/systemd/system), BINDIR for the tradectl link (default
# /usr/local/bin), PYTHON (interpreter for the venv, default python3, 3.11 or newer),
# SYSTEMD_VERSION (default: asked from systemctl; decides the restart back-off drop-in).
# It installs files only: creating the user, reloading systemd and starting the
# service are printed as next steps for you to run.

set -eu

usage() {
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
}

make_venv=yes
for arg in "$@"; do
    case $arg in
        --no-venv) make_venv=no ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
    esac
done

die() {
    echo "install.sh: $*" >&2
    exit 1
}

umask 022  # the service user must be able to read the venv and the unit

here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
[ -f "$src/pyproject.toml" ] && [ -f "$here/tradingd.service" ] \
    || die "run me from a tradingd source tree (expected $src/pyproject.toml)"

DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/tradingd}
UNITDIR=${UNITDIR:-/etc/systemd/system}
BINDIR=${BINDIR:-/usr/local/bin}
PYTHON=${PYTHON:-python3}

for var in PREFIX UNITDIR BINDIR; do
    eval "value=\$$var"
    case $value in
        /*) ;;
        *) die "$var must be an absolute path, got '$value'" ;;
    esac
    case $value in
        *'|'*|*' '*) die "$var must not contain '|' or spaces, got '$value'" ;;
    esac
done
case $PREFIX/ in
    /home/*|/root/*|/run/user/*)
        die "PREFIX=$PREFIX is hidden from the service by ProtectHome=yes; choose a path such as /opt/tradingd" ;;
esac
if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
    die "writing to /etc and $PREFIX needs root: run with sudo, or set DESTDIR to stage the files elsewhere"
fi

changed_unit=no
tmp=
build=
cleanup() { rm -rf "$tmp" "$build"; }
trap cleanup EXIT
trap 'exit 1' HUP INT TERM PIPE

# install_file SOURCE DEST MODE: copy atomically, and note in $changed whether
# anything changed. Errors stop the script explicitly: `set -e` does not apply
# inside a function whose caller tests its status.
install_file() {
    dest=$DESTDIR$2
    changed=no
    mkdir -p "$(dirname "$dest")" || die "cannot create $(dirname "$dest")"
    if [ -f "$dest" ] && cmp -s "$1" "$dest"; then
        echo "unchanged  $2"
        return 0
    fi
    cp "$1" "$dest.tmp.$$" && chmod "$3" "$dest.tmp.$$" && mv -f "$dest.tmp.$$" "$dest" \
        || { rm -f "$dest.tmp.$$"; die "cannot install $2"; }
    changed=yes
    echo "installed  $2"
}

# --- the virtualenv ------------------------------------------------------------------
venv=$PREFIX/venv
if [ "$make_venv" = yes ]; then
    [ -z "$DESTDIR" ] || die "a virtualenv cannot be staged under DESTDIR (its scripts record their own path); use --no-venv with DESTDIR"
    command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found; set PYTHON to a Python 3.11+ interpreter"
    "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
        || die "$PYTHON is older than 3.11; set PYTHON to a newer interpreter"
    base=$("$PYTHON" -c 'import os, sys; print(os.path.realpath(sys.base_prefix))')
    case $base/ in
        /home/*|/root/*|/run/user/*)
            die "$PYTHON lives in $base, which the service cannot see (ProtectHome=yes); use a system interpreter, e.g. PYTHON=/usr/bin/python3.11" ;;
    esac
    if [ ! -x "$venv/bin/python" ]; then
        echo "creating   $venv"
        "$PYTHON" -m venv "$venv"
    fi
    # pip builds inside the directory it is given; build from a scratch copy so that a
    # `sudo` install leaves no root-owned build/ or *.egg-info in the caller's checkout.
    build=$(mktemp -d)
    (cd "$src" && tar -cf - --exclude=./.git --exclude=./.venv --exclude=./build --exclude='*.egg-info' \
        --exclude=./run --exclude=./state --exclude=__pycache__ .) | (cd "$build" && tar -xf -) \
        || die "cannot copy $src to a build directory"
    echo "installing tradingd from $src into $venv (pip)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$build"
    rm -rf "$build"
    "$venv/bin/tradingd" check-config "$here/tradingd.toml" >/dev/null \
        || die "the freshly installed tradingd cannot load the example config; see the error above"
else
    echo "skipped    $venv (--no-venv)"
fi

# --- the unit ------------------------------------------------------------------------
tmp=$(mktemp)
sed "s|/opt/tradingd/|$PREFIX/|g" "$here/tradingd.service" > "$tmp"
install_file "$tmp" "$UNITDIR/tradingd.service" 0644
[ "$changed" = no ] || changed_unit=yes

# RestartSteps=/RestartMaxDelaySec= exist from systemd 254 on; older versions would
# warn about unknown keys on every daemon-reload, so they get no drop-in.
dropin=$UNITDIR/tradingd.service.d/restart-backoff.conf
if [ -z "${SYSTEMD_VERSION:-}" ]; then
    SYSTEMD_VERSION=$(systemctl --version 2>/dev/null | sed -n '1s/^systemd \([0-9][0-9]*\).*/\1/p')
fi
case ${SYSTEMD_VERSION:-} in
    ''|*[!0-9]*) SYSTEMD_VERSION=0 ;;
esac
if [ "$SYSTEMD_VERSION" -ge 254 ]; then
    install_file "$here/tradingd-restart-backoff.conf" "$dropin" 0644
    [ "$changed" = no ] || changed_unit=yes
else
    if [ -f "$DESTDIR$dropin" ] && cmp -s "$here/tradingd-restart-backoff.conf" "$DESTDIR$dropin"; then
        rm -f "$DESTDIR$dropin"
        rmdir "$(dirname "$DESTDIR$dropin")" 2>/dev/null || true
        echo "removed    $dropin (systemd $SYSTEMD_VERSION does not know its keys)"
        changed_unit=yes
    else
        echo "skipped    $dropin (growing restart delays need systemd 254, found ${SYSTEMD_VERSION})"
    fi
fi

install_file "$here/tradingd.sysusers" /etc/sysusers.d/tradingd.conf 0644

# --- config, credentials, documentation -----------------------------------------------
# The config holds no secrets (the loader refuses them), so it may be world-readable.
if [ -e "$DESTDIR/etc/tradingd/tradingd.toml" ]; then
    echo "kept       /etc/tradingd/tradingd.toml (compare with $PREFIX/share/tradingd/tradingd.toml.example)"
else
    install_file "$here/tradingd.toml" /etc/tradingd/tradingd.toml 0644
fi
if [ ! -d "$DESTDIR/etc/credstore" ]; then
    mkdir -p "$DESTDIR/etc"
    mkdir -m 0700 "$DESTDIR/etc/credstore"
    echo "created    /etc/credstore (mode 0700)"
fi
install_file "$here/tradingd.toml" "$PREFIX/share/tradingd/tradingd.toml.example" 0644
install_file "$src/README.md" "$PREFIX/share/tradingd/README.md" 0644

link=$DESTDIR$BINDIR/tradectl
if [ -L "$link" ] || [ ! -e "$link" ]; then
    mkdir -p "$DESTDIR$BINDIR"
    ln -sfn "$venv/bin/tradectl" "$link"
    echo "linked     $BINDIR/tradectl -> $venv/bin/tradectl"
else
    echo "kept       $BINDIR/tradectl (not a symlink; not touching it)"
fi

# --- next steps ------------------------------------------------------------------------
reload_hint=""
[ "$changed_unit" = yes ] && reload_hint="   (the unit changed: needed before the next start)"
cat <<EOF

Next steps (as root):
  systemd-sysusers                              # create the tradingd user and group
  usermod -aG tradingd YOUR_LOGIN               # operators may then use tradectl (log in again)
  systemctl daemon-reload$reload_hint
  systemctl enable --now tradingd
  journalctl -u tradingd -f                     # follow the logs
  tradectl status

Venue credentials (only for real venues; paper trading needs none), read at start:
  (umask 077; systemd-ask-password -n "Binance API key:" > /etc/credstore/binance_api_key)
  (umask 077; systemd-ask-password -n "Binance API secret:" > /etc/credstore/binance_api_secret)
  systemctl restart tradingd
Edit /etc/tradingd/tradingd.toml, then: systemctl reload tradingd
EOF
