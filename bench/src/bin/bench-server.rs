//! `bench-server MODE [WORKERS]`: one of the servers under test (see `terminus_bench::server`).
//!
//! MODE is `bare`, `terminus`, `layer`, `serve`, `plain-probe` or `terminus-metrics` (built
//! with `--features metrics`); WORKERS is the number of Tokio
//! worker threads (default 1). The server listens on a free port of 127.0.0.1, prints
//! `listening on http://ADDR`, and exits after SIGTERM once its shutdown is complete.

use std::process::ExitCode;

use terminus_bench::server::{self, Mode};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bench-server bare|terminus|layer|serve|plain-probe|terminus-metrics [WORKERS]";
    let Some(mode) = args.next().and_then(|name| name.parse::<Mode>().ok()) else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let workers = match args.next().map(|n| n.parse::<usize>()) {
        None => 1,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("bench-server: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server::run(mode)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench-server: {error}");
            ExitCode::FAILURE
        }
    }
}
