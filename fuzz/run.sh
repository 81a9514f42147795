#!/usr/bin/env bash
# Fuzzes the probe request handling for a bounded time and prints the figures that
# docs/reliability.md records (time, executions, coverage, crashes).
#
#   fuzz/run.sh            # 120 s
#   fuzz/run.sh 600        # 10 min
#
# Not part of CI: fuzzing needs nightly compiler flags (sanitizer, coverage). With no
# nightly toolchain installed it falls back to RUSTC_BOOTSTRAP=1 on stable, which
# cargo-fuzz and libfuzzer-sys accept. A crash leaves its input in
# fuzz/artifacts/probe_request/; `cargo fuzz run probe_request <file>` replays it.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-120}"
target=probe_request

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi

mkdir -p "corpus/$target"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# The writable corpus first, then the committed seeds (read only).
"${fuzz[@]}" run "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 2>&1 | tee "$log"

runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo '?')"
echo "fuzz target=$target seconds=$seconds executions=$runs coverage_edges=$cov crashes=0 corpus=$(ls "corpus/$target" | wc -l)"
