#!/usr/bin/env bash
# Runs the whole test suite: unit, integration and doc tests (release mode,
# so timing-sensitive tests see real speeds), examples compiled, and the loom
# model checks of the completion cell.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --release --features progress --lib --tests --examples
cargo test --release --features progress --doc
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release --lib loom
