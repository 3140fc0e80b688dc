#!/usr/bin/env bash
# Checks deploy/dev/test-runner.sh against stand-in test binaries (run by
# deploy/dev/test.sh before the suite): a test that hangs past its deadline
# fails the binary with exit 124 and its name; a slow test that finishes, and
# the binary's own exit code and last unterminated line, pass through.
set -uo pipefail
cd "$(dirname "$0")"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
fail() { echo "test-runner check: $*" >&2; exit 1; }

cat >"$dir/hangs" <<'SH'
#!/usr/bin/env bash
echo "test quick ... ok"
echo "test stuck has been running for over 60 seconds"
exec sleep 600
SH
cat >"$dir/slow" <<'SH'
#!/usr/bin/env bash
echo "test slow has been running for over 60 seconds"
sleep 3
echo "test slow ... ok"
printf 'last line'
exit 3
SH
chmod +x "$dir/hangs" "$dir/slow"

start=$SECONDS
out="$(TRIREME_TEST_TIMEOUT=61 ./test-runner.sh "$dir/hangs" 2>&1)"
rc=$?
[[ $rc -eq 124 ]] || fail "a hanging test gave exit $rc, not 124: $out"
[[ "$out" == *"test stuck in hangs did not finish within 61s"* ]] || fail "the hanging test is not named: $out"
((SECONDS - start < 30)) || fail "the hanging test was killed only after $((SECONDS - start))s"
pgrep -f "$dir/hangs" >/dev/null && fail "the hanging binary outlived the runner"

out="$(TRIREME_TEST_TIMEOUT=61 ./test-runner.sh "$dir/slow" 2>&1)"
rc=$?
[[ $rc -eq 3 ]] || fail "the binary's exit code 3 became $rc: $out"
[[ "$out" == *"test slow ... ok"*"last line" ]] || fail "output lost: $out"
echo "test-runner check: ok"
