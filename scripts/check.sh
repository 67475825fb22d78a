#!/usr/bin/env bash
# The CI sequence, runnable locally: format, lints, then the README's test command (scripts/test).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
scripts/test
