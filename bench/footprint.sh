#!/usr/bin/env bash
# What the README's example adds over bare axum: crates in the dependency graph and the
# size of the release binary (stripped). Three crates outside the repository, built
# with the workspace's Cargo.lock:
#   bare      axum + tokio, `axum::serve` of one route (what the README replaces);
#   readme    the README's "Use it" program, axum-terminus with its default features;
#   minimal   the same program, axum-terminus with `default-features = false`.
# Usage: bench/footprint.sh   (release builds: a few minutes on 2 cores)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
target="${CARGO_TARGET_DIR:-$repo/target}/footprint"

readme_rust=$(awk '/^## Use it/{on=1; next} /^## /{on=0} on' "$repo/README.md" | awk '/^```rust/{on=1; next} /^```/{on=0} on')

make_crate() { # name, axum-terminus dependency line (or empty), main.rs
    mkdir -p "$work/$1/src"
    {
        printf '[package]\nname = "%s"\nversion = "0.0.0"\nedition = "2021"\npublish = false\n\n[workspace]\n\n' "$1"
        printf '[profile.release]\nstrip = true\n\n[dependencies]\n'
        [ -n "$2" ] && printf '%s\n' "$2"
        printf 'axum = "0.8"\ntokio = { version = "1", features = ["macros", "rt-multi-thread"] }\n'
    } >"$work/$1/Cargo.toml"
    printf '%s\n' "$3" >"$work/$1/src/main.rs"
    cp "$repo/Cargo.lock" "$work/$1/Cargo.lock"
}

make_crate bare "" 'use axum::{routing::get, Router};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let app = Router::new().route("/", get(|| async { "hello" }));
    let listener = tokio::net::TcpListener::bind("0.0.0.0:3000").await?;
    axum::serve(listener, app).await?;
    Ok(())
}'
make_crate readme "axum-terminus = { path = \"$repo/crates/axum-terminus\" }" "$readme_rust"
make_crate minimal "axum-terminus = { path = \"$repo/crates/axum-terminus\", default-features = false }" "$readme_rust"

printf '%-8s %7s %12s\n' build crates binary_bytes
for name in bare readme minimal; do
    manifest="$work/$name/Cargo.toml"
    crates=$(cargo tree --quiet --manifest-path "$manifest" -e normal --prefix none | sed 's/ (\*)//' | sort -u | wc -l)
    CARGO_TARGET_DIR="$target" cargo build --quiet --release --manifest-path "$manifest"
    bytes=$(stat -c %s "$target/release/$name")
    printf '%-8s %7s %12s\n' "$name" "$crates" "$bytes"
done
