//! The quickstart server with extra hooks for the end-to-end tests, switched on by
//! environment variables:
//!
//! - `TEST_HOOKS=1`: one hook per stage, each printing `HOOK <stage> <name>` on stdout;
//! - `TEST_HANGING_HOOK=1`: an `on_signal` hook that never returns (registered
//!   between the two others, so the test sees the next one still run);
//! - `TEST_EXIT_POLICY=signal`: exit with `128 + signal` like terminus's default.

use std::io::Write;
use std::process::ExitCode;

use axum_terminus::{ExitCodePolicy, Terminus};

fn hook_line(stage: &'static str, name: &'static str) {
    // Flushed at once: the test reads stdout while the process is still running.
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "HOOK {stage} {name}");
    let _ = stdout.flush();
}

#[tokio::main]
async fn main() -> ExitCode {
    terminus_tests::init_tracing();
    let flag = |name: &str| std::env::var(name).is_ok_and(|value| value == "1");

    let mut builder = Terminus::builder();
    if flag("TEST_HOOKS") {
        builder = builder
            .before_shutdown("announce", || async {
                hook_line("before_shutdown", "announce");
                Ok(())
            })
            .on_signal("stop-consumers", || async {
                hook_line("on_signal", "stop-consumers");
                Ok(())
            });
    }
    if flag("TEST_HANGING_HOOK") {
        builder = builder.on_signal("hang", || async {
            hook_line("on_signal", "hang");
            std::future::pending::<()>().await;
            Ok(())
        });
    }
    if flag("TEST_HOOKS") {
        builder = builder.on_shutdown("close-pool", || async {
            hook_line("on_shutdown", "close-pool");
            Ok(())
        });
    }
    if std::env::var("TEST_EXIT_POLICY").is_ok_and(|policy| policy == "signal") {
        builder = builder.exit_code_policy(ExitCodePolicy::SignalNumber);
    }
    match quickstart::run(builder).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("test-server: {error}");
            ExitCode::FAILURE
        }
    }
}
