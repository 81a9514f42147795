//! The gRPC example (`examples/grpc`) for the end-to-end tests (`tests/tests/grpc*.rs`),
//! with one extra switch: `GRPC_COUNT_CHECK=1` adds a readiness check, `counted`, that
//! prints `CHECK readiness` on stdout each time it runs, as `fault-server` does with
//! `FAULT_READINESS=count`. `HOST`, `PORT`, `GRPC_DEPENDS_ON` and the `TERMINUS_*`
//! variables work as in the example.

use std::io::Write;
use std::process::ExitCode;

use axum_terminus::health::{Check, CheckError};
use axum_terminus::Terminus;

#[tokio::main]
async fn main() -> ExitCode {
    terminus_tests::init_tracing();
    let mut builder = Terminus::builder();
    if std::env::var("GRPC_COUNT_CHECK").is_ok_and(|value| value == "1") {
        builder = builder.readiness(Check::new("counted", |_| async {
            // Flushed at once: the test reads stdout while the process is still running.
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "CHECK readiness");
            let _ = stdout.flush();
            Ok::<_, CheckError>(None)
        }));
    }
    match grpc::run(builder).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("grpc-server: {error}");
            ExitCode::FAILURE
        }
    }
}
