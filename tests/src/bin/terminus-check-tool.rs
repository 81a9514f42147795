//! The `terminus-check` tool, built in this package so that tests/terminus_check.rs can
//! find it (`CARGO_BIN_EXE_terminus-check-tool`: cargo only tells a package's tests
//! where its own binaries are). Same code as crates/terminus-check/src/main.rs.

fn main() -> std::process::ExitCode {
    terminus_check::cli::main()
}
