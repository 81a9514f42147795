//! The operating-system signals that start a shutdown, and how they are heard.

use std::fmt;
use std::str::FromStr;

use tokio::sync::mpsc;

/// A signal (Unix) or console event (Windows) that can start a shutdown.
///
/// The default set is [`Signal::Term`] and [`Signal::Int`] (Ctrl-C); on Windows,
/// `Int` is Ctrl-C and the console events are available as their own variants.
/// A signal that does not exist on the platform is ignored with a warning when
/// listening starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Signal {
    /// `SIGTERM`: what Kubernetes sends first.
    Term,
    /// `SIGINT`: Ctrl-C in a terminal (Ctrl-C on Windows too).
    Int,
    /// `SIGHUP`.
    Hup,
    /// `SIGQUIT`.
    Quit,
    /// `SIGUSR1`.
    Usr1,
    /// `SIGUSR2`: nodemon's restart signal.
    Usr2,
    /// Windows Ctrl-Break.
    CtrlBreak,
    /// Windows console close.
    CtrlClose,
    /// Windows system shutdown.
    CtrlShutdown,
}

impl Signal {
    /// The signals listened for unless configured otherwise.
    pub const DEFAULT: [Signal; 2] = [Signal::Term, Signal::Int];

    /// The conventional name, e.g. `SIGTERM`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Term => "SIGTERM",
            Signal::Int => "SIGINT",
            Signal::Hup => "SIGHUP",
            Signal::Quit => "SIGQUIT",
            Signal::Usr1 => "SIGUSR1",
            Signal::Usr2 => "SIGUSR2",
            Signal::CtrlBreak => "CTRL_BREAK",
            Signal::CtrlClose => "CTRL_CLOSE",
            Signal::CtrlShutdown => "CTRL_SHUTDOWN",
        }
    }

    /// The signal's number on this platform, used for the `128 + signal` exit
    /// code. `None` for Windows console events and on non-Unix platforms.
    pub fn number(self) -> Option<i32> {
        #[cfg(unix)]
        {
            self.unix_kind().map(|kind| kind.as_raw_value())
        }
        #[cfg(not(unix))]
        {
            None
        }
    }

    #[cfg(unix)]
    fn unix_kind(self) -> Option<tokio::signal::unix::SignalKind> {
        use tokio::signal::unix::SignalKind;
        match self {
            Signal::Term => Some(SignalKind::terminate()),
            Signal::Int => Some(SignalKind::interrupt()),
            Signal::Hup => Some(SignalKind::hangup()),
            Signal::Quit => Some(SignalKind::quit()),
            Signal::Usr1 => Some(SignalKind::user_defined1()),
            Signal::Usr2 => Some(SignalKind::user_defined2()),
            Signal::CtrlBreak | Signal::CtrlClose | Signal::CtrlShutdown => None,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error of parsing a [`Signal`] from a name it does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownSignal(pub String);

impl fmt::Display for UnknownSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown signal `{}` (expected one of SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, \
             CTRL_BREAK, CTRL_CLOSE, CTRL_SHUTDOWN)",
            self.0
        )
    }
}

impl std::error::Error for UnknownSignal {}

impl FromStr for Signal {
    type Err = UnknownSignal;

    /// Parses `SIGTERM`, `TERM` or `term` alike.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        Ok(match bare {
            "TERM" => Signal::Term,
            "INT" => Signal::Int,
            "HUP" => Signal::Hup,
            "QUIT" => Signal::Quit,
            "USR1" => Signal::Usr1,
            "USR2" => Signal::Usr2,
            "CTRL_BREAK" => Signal::CtrlBreak,
            "CTRL_CLOSE" => Signal::CtrlClose,
            "CTRL_SHUTDOWN" => Signal::CtrlShutdown,
            _ => return Err(UnknownSignal(s.to_owned())),
        })
    }
}

/// Installs a handler for each signal and forwards every delivery to `tx`.
///
/// Installing replaces the platform's default action (terminate), so from here on
/// the process only stops when the lifecycle says so. Must run inside a Tokio runtime.
pub(crate) fn listen(signals: &[Signal], tx: mpsc::UnboundedSender<Signal>) {
    for &signal in signals {
        if let Err(error) = listen_one(signal, tx.clone()) {
            tracing::warn!(
                target: "terminus",
                signal = signal.name(),
                %error,
                "cannot listen for signal; it will not start a shutdown"
            );
        }
    }
}

#[cfg(unix)]
fn listen_one(signal: Signal, tx: mpsc::UnboundedSender<Signal>) -> std::io::Result<()> {
    let Some(kind) = signal.unix_kind() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "not a Unix signal",
        ));
    };
    let mut stream = tokio::signal::unix::signal(kind)?;
    tokio::spawn(async move {
        while stream.recv().await.is_some() {
            if tx.send(signal).is_err() {
                break;
            }
        }
    });
    Ok(())
}

#[cfg(windows)]
fn listen_one(signal: Signal, tx: mpsc::UnboundedSender<Signal>) -> std::io::Result<()> {
    use tokio::signal::windows;
    macro_rules! forward {
        ($make:expr) => {{
            let mut stream = $make?;
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    if tx.send(signal).is_err() {
                        break;
                    }
                }
            });
            Ok(())
        }};
    }
    match signal {
        Signal::Int => forward!(windows::ctrl_c()),
        Signal::CtrlBreak => forward!(windows::ctrl_break()),
        Signal::CtrlClose => forward!(windows::ctrl_close()),
        Signal::CtrlShutdown => forward!(windows::ctrl_shutdown()),
        // Kubernetes on Windows delivers CTRL_SHUTDOWN for a pod stop; SIGTERM has no
        // Windows equivalent of its own, so it listens for that.
        Signal::Term => forward!(windows::ctrl_shutdown()),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "not a Windows console event",
        )),
    }
}

#[cfg(not(any(unix, windows)))]
fn listen_one(_signal: Signal, _tx: mpsc::UnboundedSender<Signal>) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "signals are not supported on this platform",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_parse_with_or_without_prefix() {
        assert_eq!("SIGTERM".parse::<Signal>(), Ok(Signal::Term));
        assert_eq!("usr2".parse::<Signal>(), Ok(Signal::Usr2));
        assert!("SIGFOO".parse::<Signal>().is_err());
    }

    #[cfg(unix)]
    #[test]
    fn unix_signal_numbers_match_the_platform() {
        assert_eq!(Signal::Term.number(), Some(15));
        assert_eq!(Signal::Int.number(), Some(2));
        assert_eq!(Signal::CtrlBreak.number(), None);
    }
}
