#!/usr/bin/env bash
# Usage: apt-install.sh PACKAGE COMMAND
# Installs PACKAGE with apt-get (sudo when not root) unless COMMAND is on
# PATH already; fails, saying why, when it cannot.
set -euo pipefail
package=$1
command=$2

if command -v "$command" >/dev/null 2>&1; then
    exit 0
fi
echo "apt-install: $command is missing; installing $package with apt-get" >&2
if ! command -v apt-get >/dev/null 2>&1; then
    echo "apt-install: no apt-get here; install $package yourself" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
        echo "apt-install: not root and no sudo; install $package yourself" >&2
        exit 1
    fi
    SUDO="sudo"
fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$package" >/dev/null
if ! command -v "$command" >/dev/null 2>&1; then
    echo "apt-install: installed $package but $command is still not on PATH" >&2
    exit 1
fi
