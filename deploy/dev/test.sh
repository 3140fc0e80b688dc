#!/usr/bin/env bash
# Run Trireme's whole test suite on this machine, installing what the tests
# need first (Garage for the S3 tests, redis-server and PostgreSQL for the
# source tests, moto and OpenBao for the KMS key provider tests). Used by the
# README and by .ci/run.
#
#   deploy/dev/test.sh            fmt check, clippy, every test
#   SKIP_LINT=1 deploy/dev/test.sh  tests only
set -euo pipefail
cd "$(dirname "$0")/../.."

# Builds are reused across runs and clones when CARGO_TARGET_DIR points
# outside the checkout (CI sets it to a cache directory).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }

echo "== prerequisites"
deploy/dev/garage.sh install
deploy/dev/prereqs.sh

if [[ -z "${SKIP_LINT:-}" ]]; then
    echo "== cargo fmt --check"
    cargo fmt --all -- --check
    echo "== cargo clippy"
    cargo clippy --workspace --all-targets --locked -- -D warnings
fi

echo "== cargo test"
# Every test and every test binary runs under a deadline
# (deploy/dev/test-runner.sh, checked first), so a hang fails in minutes.
deploy/dev/test-runner-check.sh
host="$(rustc -vV | sed -n 's/^host: //p' | tr 'a-z-' 'A-Z_')"
export "CARGO_TARGET_${host}_RUNNER=$PWD/deploy/dev/test-runner.sh"
cargo test --workspace --locked -- --test-threads=2
