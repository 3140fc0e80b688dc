#!/usr/bin/env bash
# Cargo's test runner for deploy/dev/test.sh (set through
# CARGO_TARGET_<host>_RUNNER): runs one test binary with two deadlines, so a
# test that hangs fails the suite within minutes instead of holding CI until
# its global limit.
#
# - Per test: libtest prints "test NAME has been running for over 60
#   seconds" for a slow test. The runner watches the binary's output for
#   those lines; a test named there that has not finished (no "test NAME ...
#   ok|FAILED" line) TRIREME_TEST_TIMEOUT seconds after it started fails the
#   binary, naming the test.
# - Per binary: the whole binary is killed after TRIREME_TEST_BINARY_TIMEOUT.
#
#   TRIREME_TEST_TIMEOUT=300           seconds per test (default 300, at least 61)
#   TRIREME_TEST_BINARY_TIMEOUT=900    seconds per test binary (default 900)
#
# `timeout` runs the binary in its own process group and passes the kill on
# to all of it, so servers a test started go down with it.
set -uo pipefail
per_test="${TRIREME_TEST_TIMEOUT:-300}"
limit="${TRIREME_TEST_BINARY_TIMEOUT:-900}"
(( per_test < 61 )) && per_test=61
bin="$(basename "$1")"

fifo="$(mktemp -u "${TMPDIR:-/tmp}/trireme-test-runner.XXXXXX")"
mkfifo "$fifo"
trap 'rm -f "$fifo"' EXIT
timeout --kill-after=20 "$limit" "$@" >"$fifo" &
pid=$!

declare -A slow=()
overdue=""
while true; do
    if IFS= read -r -t 5 line; then
        printf '%s\n' "$line"
        case "$line" in
        "test "*" has been running for over 60 seconds")
            name="${line#test }"
            name="${name% has been running for over 60 seconds}"
            # It started at least 60 s ago.
            slow["$name"]=$((SECONDS - 60))
            ;;
        "test "*" ... "*)
            name="${line#test }"
            unset 'slow[${name%% ... *}]'
            ;;
        esac
    elif (($? <= 128)); then
        # End of output: the binary exited (print a last unterminated line).
        [[ -n "$line" ]] && printf '%s\n' "$line"
        break
    fi
    for name in "${!slow[@]}"; do
        if ((SECONDS - ${slow[$name]} > per_test)); then
            overdue="$name"
        fi
    done
    if [[ -n "$overdue" ]]; then
        echo "test $overdue in $bin did not finish within ${per_test}s (TRIREME_TEST_TIMEOUT): it hangs or waits on something that never comes; killing the test binary" >&2
        kill -TERM "$pid" 2>/dev/null
        # Drain what is left so the binary never blocks on a full pipe.
        timeout 30 cat "$fifo" >/dev/null 2>&1 &
        break
    fi
done <"$fifo"
wait "$pid"
rc=$?
if [[ -n "$overdue" ]]; then
    exit 124
fi
if [[ $rc -eq 124 || $rc -eq 137 ]]; then
    echo "test binary $bin did not finish within ${limit}s (TRIREME_TEST_BINARY_TIMEOUT): a test hangs; the last test named as running for over 60 seconds above is the one" >&2
fi
exit $rc
