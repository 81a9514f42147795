//! [`CheckError`]: why a check failed, and what the probe may answer instead of the default.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

/// Why a check failed: terminus's `HealthCheckError`.
///
/// It carries a message (logged, and shown only when the probe is configured to expose
/// failure reasons), optional causes (terminus's `causes`: a list of errors or any JSON
/// value), and an optional HTTP status and JSON body that replace the probe's defaults
/// (terminus's `error.statusCode` and `error.statusResponse`).
///
/// Any `std::error::Error` converts into a `CheckError`, so `?` works inside a check.
/// `CheckError` itself does not implement `std::error::Error`, for that reason (as
/// `anyhow::Error` does not).
///
/// ```
/// use terminus_core::health::CheckError;
///
/// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
/// let error = CheckError::new("failed")
///     .with_causes([io])
///     .status(500)
///     .body(serde_json::json!({ "status": "down" }));
/// assert_eq!(error.message(), "failed");
/// assert_eq!(error.status_override(), Some(500));
/// ```
#[derive(Clone)]
pub struct CheckError {
    message: String,
    causes: Option<Causes>,
    status: Option<u16>,
    body: Option<Value>,
    kind: ErrorKind,
}

/// What caused a check to fail, as attached with [`CheckError::with_causes`] or
/// [`CheckError::with_details`]. Probe responses show it only when failure reasons are
/// exposed.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Causes {
    /// Errors: terminus renders each as `{"message": ...}`, plus `"stack"` only with
    /// `unsafe_expose_stack_traces`.
    Errors(Vec<Cause>),
    /// Any JSON value, rendered as given (terminus accepts plain objects as causes).
    Details(Value),
}

/// One error among a failure's [`Causes`].
#[derive(Clone, Debug)]
pub struct Cause {
    message: String,
    /// The error's `Debug` form followed by its `source()` chain: the closest Rust has to
    /// a JavaScript stack, and just as unfit for a public response.
    stack: String,
}

impl Cause {
    /// The error's message (its `Display`).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error's `Debug` form and its `source()` chain. Never put it in a response a
    /// stranger can read.
    pub fn stack(&self) -> &str {
        &self.stack
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ErrorKind {
    Failed,
    TimedOut,
    Panicked,
    Cancelled,
}

impl CheckError {
    /// A failure with `message` and no causes.
    pub fn new(message: impl Into<String>) -> CheckError {
        CheckError {
            message: message.into(),
            causes: None,
            status: None,
            body: None,
            kind: ErrorKind::Failed,
        }
    }

    /// Adds errors as causes (terminus's `new HealthCheckError(message, [errors])`).
    /// Each is rendered as `{"message": "..."}` when failure reasons are exposed.
    pub fn with_causes<E, I>(mut self, causes: I) -> CheckError
    where
        I: IntoIterator<Item = E>,
        E: std::error::Error,
    {
        let causes = causes
            .into_iter()
            .map(|error| Cause {
                message: error.to_string(),
                stack: stack_of(&error),
            })
            .collect();
        self.causes = Some(Causes::Errors(causes));
        self
    }

    /// Sets the causes to a JSON value, rendered as given when failure reasons are
    /// exposed (terminus's `new HealthCheckError(message, { redis: { disk: 100 } })`).
    pub fn with_details(mut self, details: Value) -> CheckError {
        self.causes = Some(Causes::Details(details));
        self
    }

    /// The HTTP status the probe answers with instead of its configured error status
    /// (terminus's `error.statusCode`). A status outside 400..=599 is ignored by
    /// `tower-terminus`: a failing probe never answers 2xx or a redirect.
    pub fn status(mut self, status: u16) -> CheckError {
        self.status = Some(status);
        self
    }

    /// The JSON body the terminus format answers with instead of its configured error
    /// body (terminus's `error.statusResponse`). It is configuration, not a reason, so
    /// it is sent even when failure reasons are withheld.
    pub fn body(mut self, body: Value) -> CheckError {
        self.body = Some(body);
        self
    }

    /// The failure message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The status override, if any.
    pub fn status_override(&self) -> Option<u16> {
        self.status
    }

    /// The body override, if any.
    pub fn body_override(&self) -> Option<&Value> {
        self.body.as_ref()
    }

    /// `true` when the check did not finish within its timeout.
    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::TimedOut
    }

    /// `true` when the check panicked.
    pub fn is_panic(&self) -> bool {
        self.kind == ErrorKind::Panicked
    }

    /// Whether causes were attached.
    pub fn has_causes(&self) -> bool {
        self.causes.is_some()
    }

    /// The causes attached, if any.
    pub fn causes(&self) -> Option<&Causes> {
        self.causes.as_ref()
    }

    pub(crate) fn timed_out(timeout: Duration) -> CheckError {
        CheckError {
            kind: ErrorKind::TimedOut,
            ..CheckError::new(format!("timed out after {}", humantime::format_duration(timeout)))
        }
    }

    pub(crate) fn panicked(message: Option<String>) -> CheckError {
        let text = match message {
            Some(message) => format!("panicked: {message}"),
            None => "panicked".to_owned(),
        };
        CheckError {
            kind: ErrorKind::Panicked,
            ..CheckError::new(text)
        }
    }

    pub(crate) fn cancelled(why: &str) -> CheckError {
        CheckError {
            kind: ErrorKind::Cancelled,
            ..CheckError::new(why)
        }
    }
}

fn stack_of(error: &dyn std::error::Error) -> String {
    let mut stack = format!("{error:?}");
    let mut source = error.source();
    while let Some(cause) = source {
        stack.push_str("\ncaused by: ");
        stack.push_str(&cause.to_string());
        source = cause.source();
    }
    stack
}

impl<E> From<E> for CheckError
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn from(error: E) -> CheckError {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        CheckError::new(message)
    }
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckError")
            .field("message", &self.message)
            .field("causes", &self.causes)
            .field("status", &self.status)
            .field("body", &self.body)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_causes_keep_each_message_and_its_stack() {
        let causes = [
            std::io::Error::other("test error 1"),
            std::io::Error::other("test error 2"),
        ];
        let error = CheckError::new("failed").with_causes(causes);
        let Some(Causes::Errors(causes)) = error.causes() else {
            panic!("error causes expected");
        };
        assert_eq!(causes[1].message(), "test error 2");
        assert!(causes[0].stack().contains("test error 1"));
    }

    #[test]
    fn question_mark_converts_any_error_keeping_its_source_chain() {
        fn check() -> Result<(), CheckError> {
            Err(std::io::Error::other("refused"))?;
            Ok(())
        }
        assert_eq!(check().unwrap_err().message(), "refused");
    }
}
