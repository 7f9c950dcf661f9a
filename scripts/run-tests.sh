#!/bin/sh
# Runs every test suite in each build directory given and ends with one line
# "N passed, N failed" over all of them. Exits non-zero if anything failed.
set -u

total_pass=0
total_fail=0
total_skip=0
status=0
for dir in "$@"; do
    echo "== tests in $dir"
    # Sanitizer builds: fail on the first report, and report leaks too.
    ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}" \
    UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" \
        meson test -C "$dir" --print-errorlogs --num-processes 2 || status=1
    log="$dir/meson-logs/testlog.json"
    if [ -f "$log" ]; then
        p=$(grep -c '"result": "OK"' "$log")
        f=$(grep -Ec '"result": "(FAIL|TIMEOUT|ERROR|UNEXPECTEDPASS)"' "$log")
        s=$(grep -c '"result": "SKIP"' "$log")
        total_pass=$((total_pass + p))
        total_fail=$((total_fail + f))
        total_skip=$((total_skip + s))
    else
        status=1
    fi
done
[ "$total_fail" -gt 0 ] && status=1
echo "$total_pass passed, $total_fail failed, $total_skip skipped"
exit $status
