#!/usr/bin/env bash
# Runs the whole test suite: unit, integration and doc tests (release mode,
# so timing-sensitive tests see real speeds), examples compiled, and the loom
# model checks of the completion cell.
#
# The cluster tests start their own redis-server on a free loopback port; when
# none is on PATH this script installs it first (apt-get, with sudo when not
# root), so it passes on a fresh machine with nothing preinstalled.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/ensure-redis.sh

cargo test --release --features progress --lib --tests --examples
cargo test --release --features progress --doc
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release --lib loom
