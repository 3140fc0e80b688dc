#!/usr/bin/env bash
# Cargo's test runner for deploy/dev/test.sh (set through
# CARGO_TARGET_<host>_RUNNER): runs one test binary under a deadline, so a
# test that hangs fails the suite within minutes instead of holding CI until
# its global limit. libtest names a test that runs long ("has been running
# for over 60 seconds") before the deadline kills the binary.
#
#   TRIREME_TEST_BINARY_TIMEOUT=600   seconds per test binary (default 600)
set -uo pipefail
limit="${TRIREME_TEST_BINARY_TIMEOUT:-600}"
timeout --kill-after=20 "$limit" "$@"
rc=$?
if [[ $rc -eq 124 || $rc -eq 137 ]]; then
    echo "test binary $(basename "$1") did not finish within ${limit}s (TRIREME_TEST_BINARY_TIMEOUT): a test hangs; the last test named as running for over 60 seconds above is the one" >&2
fi
exit $rc
