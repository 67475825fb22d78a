#!/usr/bin/env bash
# The CI sequence, runnable locally: format, lints, then the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/init_db.sh
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test --workspace
