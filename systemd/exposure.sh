#!/bin/sh
# Print the unit's exposure figure as `systemd-analyze security` computes it, with the
# settings that still count against it. Exits 1 when the figure is above 1.5.
#
#   sh systemd/exposure.sh                     the unit in this source tree
#   sh systemd/exposure.sh /etc/systemd/system/tradingd.service
#
# --offline=true reads the unit file itself, so no running systemd is needed
# (systemd-analyze 252 and newer).

set -eu
unit=${1:-$(dirname "$0")/tradingd.service}
command -v systemd-analyze >/dev/null 2>&1 || { echo "exposure.sh: systemd-analyze is not installed" >&2; exit 2; }

# The table's last line is "→ Overall exposure level for tradingd.service: 1.2 OK"; the
# threshold is in tenths.
status=0
report=$(systemd-analyze security --offline=true --threshold=15 --no-pager "$unit" 2>&1) || status=$?
printf '%s\n' "$report" | grep -E '^(✗|-) ' || true
figure=$(printf '%s\n' "$report" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9][0-9.]*\).*/\1/p')
if [ -z "$figure" ]; then
    printf '%s\n' "$report" >&2
    echo "exposure.sh: systemd-analyze did not report an exposure level" >&2
    exit 2
fi
echo "exposure $figure (limit 1.5) for $unit"
[ "$status" -eq 0 ] || { echo "exposure.sh: above the limit" >&2; exit 1; }
