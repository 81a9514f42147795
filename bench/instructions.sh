#!/usr/bin/env bash
# Instructions per request, counted by callgrind: bench/instructions.sh [REQUESTS]
#
# Unlike requests per second, an instruction count does not depend on what else the
# machine is doing, so it is the figure to compare across commits on a shared machine.
# For each server mode and path it starts the release bench-server under callgrind,
# warms it up with 2,000 keep-alive requests, zeroes the counters, sends REQUESTS more
# (default 20,000) with h2load over 16 HTTP/1.1 connections, and divides the server's
# instruction count by REQUESTS. Needs valgrind and h2load (installed when missing).
#
# The last two lines measure the lifecycle metrics: bench-server built with the bench
# crate's `metrics` feature (axum-terminus/metrics), in `terminus` mode with no recorder
# installed and in `terminus-metrics` mode with a Prometheus recorder, each against the
# `terminus, GET /` figure above, which is built without the feature.
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-20000}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
if ! command -v valgrind >/dev/null || ! command -v h2load >/dev/null; then
    as_root apt-get update -qq
    as_root apt-get install -y -qq valgrind nghttp2-client >/dev/null
fi
# The metrics build first, kept under its own name: the default build replaces it.
cargo build --release -p terminus-bench --features metrics --bin bench-server >&2
cp target/release/bench-server target/release/bench-server-metrics
cargo build --release -p terminus-bench --bin bench-server >&2
server=target/release/bench-server

count() { # mode path [binary]
    local mode=$1 path=$2 binary=${3:-$server} dir pid addr dump instructions
    dir=$(mktemp -d)
    valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" "$binary" "$mode" 1 \
        >"$dir/stdout" 2>"$dir/stderr" &
    pid=$!
    for _ in $(seq 1 600); do grep -q "http://" "$dir/stdout" 2>/dev/null && break; sleep 0.1; done
    addr=$(grep -o 'http://[0-9.:]*' "$dir/stdout" | head -1)
    if [ -z "$addr" ]; then
        echo "bench-server $mode did not start" >&2
        kill -KILL "$pid" 2>/dev/null || true
        return 1
    fi
    h2load --h1 -n 2000 -c 16 -t1 "$addr$path" >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    h2load --h1 -n "$requests" -c 16 -t1 "$addr$path" >/dev/null
    callgrind_control -d "$pid" >/dev/null 2>&1
    sleep 0.5
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    # The dump taken after zeroing is the last numbered part.
    dump=$(ls "$dir"/callgrind.out* | sort -V | tail -1)
    instructions=$(grep -E "^(summary|totals):" "$dump" | head -1 | awk '{print $2}')
    rm -rf "$dir"
    echo $((instructions / requests))
}

bare=$(count bare /)
printf '%-34s %8s %7s\n' "server, path" "instr/req" "ratio"
printf '%-34s %8d %7s\n' "bare axum::serve, GET /" "$bare" "1.000"
for mode in layer terminus; do
    n=$(count "$mode" /)
    printf '%-34s %8d %7.3f\n' "$mode, GET /" "$n" "$(awk -v a="$n" -v b="$bare" 'BEGIN { print a / b }')"
    if [ "$mode" = terminus ]; then terminus=$n; fi
done
plain=$(count plain-probe /readyz)
printf '%-34s %8d %7s\n' "plain-probe, GET /readyz" "$plain" "1.000"
n=$(count terminus /readyz)
printf '%-34s %8d %7.3f\n' "terminus, GET /readyz" "$n" "$(awk -v a="$n" -v b="$plain" 'BEGIN { print a / b }')"
# Against `terminus, GET /` (built without the feature).
n=$(count terminus / target/release/bench-server-metrics)
printf '%-34s %8d %7.3f\n' "metrics feature, no recorder, GET /" "$n" "$(awk -v a="$n" -v b="$terminus" 'BEGIN { print a / b }')"
n=$(count terminus-metrics / target/release/bench-server-metrics)
printf '%-34s %8d %7.3f\n' "metrics + Prometheus, GET /" "$n" "$(awk -v a="$n" -v b="$terminus" 'BEGIN { print a / b }')"
