#!/usr/bin/env bash
# Makes sure `redis-server` is on PATH, installing it with apt-get when it is
# missing (sudo when not root). The tests run their own servers on free
# loopback ports, so if installing the package started the distribution's
# service, that service (and only a service this script caused) is stopped.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
# A redis service already running before the install is not ours to stop.
service_running() {
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
        return 0
    fi
    command -v service >/dev/null 2>&1 && service redis-server status >/dev/null 2>&1
}
was_active=0
if service_running; then
    was_active=1
fi
# (By path and with this very bash: the tests run this script with a PATH
# of stand-ins only.)
"$BASH" "${0%/*}/apt-install.sh" redis-server redis-server || {
    echo "ensure-redis: install redis-server (6.2+) or valkey-server yourself" >&2
    exit 1
}
# The distribution's service is not needed; stop it if the install started it
# (with systemd, or with the init script where there is no systemd).
if [ "$was_active" = 0 ] && service_running; then
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
        $SUDO systemctl stop redis-server || true
    else
        $SUDO service redis-server stop >/dev/null 2>&1 || true
    fi
fi
