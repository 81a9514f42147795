//! How a signalled test server ended: its exit code, how long it took, and its
//! `shutdown complete` event and log, for the end-to-end tests' assertions.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use crate::logs::{self, field, field_u64};
use crate::TestServer;

/// How a shutdown ended, as the process and its log tell it.
pub struct Exit {
    /// The exit code; `None` if the process did not exit in time (or died by a signal).
    pub code: Option<i32>,
    /// From the signal to the exit (or to giving up).
    pub took: Duration,
    /// The `shutdown complete` event, or an empty string.
    pub complete: String,
    /// The whole log.
    pub log: Vec<String>,
}

impl Exit {
    /// Waits up to `wait` for the exit of a server signalled at `signalled`.
    pub async fn wait(server: &mut TestServer, signalled: Instant, wait: Duration) -> Exit {
        let status = server.wait_exit(wait).await;
        let took = signalled.elapsed();
        if let Some(status) = status {
            assert_eq!(status.signal(), None, "exited by itself, not killed by a signal");
        }
        let log = server.stderr();
        let complete = log
            .iter()
            .find(|line| line.contains("shutdown complete"))
            .cloned()
            .unwrap_or_default();
        Exit {
            code: status.and_then(|status| status.code()),
            took,
            complete,
            log,
        }
    }

    /// Sends SIGTERM and waits up to `wait` for the exit.
    pub async fn terminate(server: &mut TestServer, wait: Duration) -> Exit {
        let signalled = Instant::now();
        server.signal("TERM");
        Exit::wait(server, signalled, wait).await
    }

    /// A field of `shutdown complete`.
    pub fn field(&self, name: &str) -> Option<&str> {
        field(&self.complete, name)
    }

    /// A count of `shutdown complete`.
    pub fn count(&self, name: &str) -> Option<u64> {
        field_u64(&self.complete, name)
    }

    /// `exit=0 took_ms=812 graceful=true requests_drained=1 ...`, `-` for what is missing.
    pub fn summary(&self) -> String {
        let code = self.code.map_or("none".to_owned(), |code| code.to_string());
        let mut summary = format!("exit={code} took_ms={}", self.took.as_millis());
        for name in [
            "graceful",
            "requests_drained",
            "requests_cut",
            "connections_cut",
            "tasks_cut",
            "exit_status",
        ] {
            summary.push_str(&format!(" {name}={}", self.field(name).unwrap_or("-")));
        }
        summary
    }

    /// The summary and the last lines of the log, for an assertion message.
    pub fn context(&self) -> String {
        format!(
            "{}\nlast log lines:\n{}",
            self.summary(),
            logs::tail(&self.log, 25)
        )
    }

    /// Log lines with every one of `needles`.
    pub fn lines_with(&self, needles: &[&str]) -> Vec<&String> {
        self.log
            .iter()
            .filter(|line| needles.iter().all(|needle| line.contains(needle)))
            .collect()
    }

    /// `shutdown complete` is an INFO event of target `terminus`, and the last one.
    pub fn assert_complete_is_final(&self) {
        assert!(
            self.complete.contains(" INFO terminus: shutdown complete"),
            "{}",
            self.context()
        );
        assert_eq!(
            self.log.last(),
            Some(&self.complete),
            "`shutdown complete` is the final event\n{}",
            self.context()
        );
    }
}
