#!/usr/bin/env bash
# The benchmark, in one command: bench/run.sh [--rounds N] [--duration SECONDS] [--quick]
#
# Installs what is missing (wrk and h2load from Debian, @godaddy/terminus 4.12.1 from npm
# into target/bench-node), builds the workspace's bench crate in release mode, and runs
# the driver, which writes docs/benchmarks.json and docs/benchmarks.svg and prints the
# summary table. See docs/benchmarks.md. Takes about 7 minutes with the defaults.
set -euo pipefail

cd "$(dirname "$0")/.."
NODE_TERMINUS_VERSION=4.12.1
NODE_DIR=target/bench-node

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v wrk >/dev/null || ! command -v h2load >/dev/null; then
    echo "installing wrk and h2load (nghttp2-client)" >&2
    as_root apt-get update -qq
    as_root apt-get install -y -qq wrk nghttp2-client >/dev/null
fi

if command -v node >/dev/null && command -v npm >/dev/null; then
    installed=$(node -p "require('./$NODE_DIR/node_modules/@godaddy/terminus/package.json').version" 2>/dev/null || true)
    if [ "$installed" != "$NODE_TERMINUS_VERSION" ]; then
        echo "installing @godaddy/terminus@$NODE_TERMINUS_VERSION into $NODE_DIR" >&2
        mkdir -p "$NODE_DIR"
        npm install --silent --no-audit --no-fund --prefix "$NODE_DIR" "@godaddy/terminus@$NODE_TERMINUS_VERSION" >&2
    fi
    export NODE_PATH="$PWD/$NODE_DIR/node_modules"
else
    echo "node/npm not found: the Node terminus comparison will be skipped" >&2
fi

cargo build --release -p terminus-bench --bins >&2

# 10,000 connections need as many sockets on each side; children inherit the limit.
ulimit -n "$(ulimit -Hn)"

export BENCH_COMMAND="bench/run.sh${*:+ $*}"
# What was measured: the commit, and whether the code differed from it.
if commit=$(git rev-parse --short HEAD 2>/dev/null); then
    if [ -n "$(git status --porcelain -- Cargo.toml Cargo.lock crates examples bench 2>/dev/null)" ]; then
        commit="$commit+uncommitted changes"
    fi
    export BENCH_COMMIT="$commit"
fi
if [ "$(nproc)" -ge 2 ]; then
    # The driver and the load generators share core 0; the servers get core 1.
    exec taskset -c 0 target/release/bench "$@"
else
    exec target/release/bench "$@"
fi
