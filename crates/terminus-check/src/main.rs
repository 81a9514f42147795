//! `terminus-check`: see `docs/check.md`, or `terminus-check --help`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    terminus_check::cli::main()
}
