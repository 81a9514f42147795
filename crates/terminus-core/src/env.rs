//! The `TERMINUS_*` environment variables: which ones exist, how each is parsed and
//! range-checked, and the names that nobody reads (typos, most of the time).
//!
//! [`Builder::from_env`](crate::Builder::from_env) reads them, and
//! `build()` applies them over whatever the code set: **the environment overrides the
//! code**, wherever `from_env()` sits in the chain. Code gives a service its defaults;
//! the operator who sets a variable in the pod's manifest is the one who must win, as
//! the twelve-factor convention and most servers (nginx's `-g`, HAProxy's
//! environment, Envoy's runtime) have it.

use std::time::Duration;

use crate::config::Config;
use crate::setting::{ConfigError, Source};
use crate::signal::Signal;
use crate::upgrade::{
    UpgradeEnv, ENV_PID_FILE, ENV_UPGRADE_FROM, ENV_UPGRADE_NOTIFY_SOCKET, ENV_UPGRADE_SIGNAL,
    ENV_UPGRADE_TIMEOUT,
};

pub use crate::setting::{MAX_CONNECTIONS, MAX_DURATION};

/// Environment variable for [`Config::drain_delay`].
pub const ENV_DRAIN_DELAY: &str = "TERMINUS_DRAIN_DELAY";
/// Environment variable for [`Config::drain_timeout`].
pub const ENV_DRAIN_TIMEOUT: &str = "TERMINUS_DRAIN_TIMEOUT";
/// Environment variable for [`Config::cleanup_timeout`].
pub const ENV_CLEANUP_TIMEOUT: &str = "TERMINUS_CLEANUP_TIMEOUT";
/// Environment variable for [`Config::grace_period`]: the pod's
/// `terminationGracePeriodSeconds`, as a duration (`30s`).
pub const ENV_GRACE_PERIOD: &str = "TERMINUS_GRACE_PERIOD";
/// Environment variable for [`Config::signals`]: a comma-separated list, e.g. `SIGTERM,SIGINT,SIGUSR2`.
pub const ENV_SIGNALS: &str = "TERMINUS_SIGNALS";
/// Environment variable for [`Config::header_read_timeout`] (`0` turns it off).
pub const ENV_HEADER_READ_TIMEOUT: &str = "TERMINUS_HEADER_READ_TIMEOUT";
/// Environment variable for [`Config::idle_close_timeout`].
pub const ENV_IDLE_CLOSE_TIMEOUT: &str = "TERMINUS_IDLE_CLOSE_TIMEOUT";
/// Environment variable for [`Config::max_connections`].
pub const ENV_MAX_CONNECTIONS: &str = "TERMINUS_MAX_CONNECTIONS";
/// Environment variable for [`Config::keep_alive_timeout`] (`0` turns it off).
pub const ENV_KEEP_ALIVE_TIMEOUT: &str = "TERMINUS_KEEP_ALIVE_TIMEOUT";
/// Environment variable for [`Config::max_connection_age`].
pub const ENV_MAX_CONNECTION_AGE: &str = "TERMINUS_MAX_CONNECTION_AGE";
/// Environment variable for [`Config::max_connection_age_grace`].
pub const ENV_MAX_CONNECTION_AGE_GRACE: &str = "TERMINUS_MAX_CONNECTION_AGE_GRACE";
/// Environment variable for [`Config::max_requests_per_connection`].
pub const ENV_MAX_REQUESTS_PER_CONNECTION: &str = "TERMINUS_MAX_REQUESTS_PER_CONNECTION";

/// Every variable the library reads. Any other `TERMINUS_*` name in the environment
/// is reported at `build()` (see [`Builder::deny_unknown_env`](crate::Builder::deny_unknown_env)).
pub const VARIABLES: &[&str] = &[
    ENV_DRAIN_DELAY,
    ENV_DRAIN_TIMEOUT,
    ENV_CLEANUP_TIMEOUT,
    ENV_GRACE_PERIOD,
    ENV_SIGNALS,
    ENV_HEADER_READ_TIMEOUT,
    ENV_IDLE_CLOSE_TIMEOUT,
    ENV_MAX_CONNECTIONS,
    ENV_KEEP_ALIVE_TIMEOUT,
    ENV_MAX_CONNECTION_AGE,
    ENV_MAX_CONNECTION_AGE_GRACE,
    ENV_MAX_REQUESTS_PER_CONNECTION,
    ENV_UPGRADE_SIGNAL,
    ENV_UPGRADE_TIMEOUT,
    ENV_PID_FILE,
    ENV_UPGRADE_FROM,
    ENV_UPGRADE_NOTIFY_SOCKET,
];

/// What the environment sets, parsed and checked: applied over the code's settings by
/// `build()`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Env {
    drain_delay: Option<Duration>,
    drain_timeout: Option<Duration>,
    cleanup_timeout: Option<Duration>,
    grace_period: Option<Duration>,
    signals: Option<Vec<Signal>>,
    header_read_timeout: Option<Option<Duration>>,
    idle_close_timeout: Option<Duration>,
    max_connections: Option<usize>,
    keep_alive_timeout: Option<Option<Duration>>,
    max_connection_age: Option<Duration>,
    max_connection_age_grace: Option<Duration>,
    max_requests_per_connection: Option<u64>,
    upgrade: UpgradeEnv,
    /// `TERMINUS_*` names that no setting reads.
    pub(crate) unknown: Vec<String>,
}

impl Env {
    /// Reads every variable `lookup` finds. `names` are the `TERMINUS_*` names present,
    /// to find the unknown ones. A malformed or out-of-range value is an error naming
    /// the variable; nothing is half-read.
    pub(crate) fn read(
        lookup: impl Fn(&str) -> Option<String>,
        names: impl IntoIterator<Item = String>,
    ) -> Result<Env, ConfigError> {
        let duration = |name: &'static str| -> Result<Option<Duration>, ConfigError> {
            lookup(name)
                .map(|value| bounded_duration(name, &value))
                .transpose()
        };
        // A timeout that `0` turns off: `Some(None)`.
        let switchable = |name: &'static str| -> Result<Option<Option<Duration>>, ConfigError> {
            lookup(name)
                .map(|value| match value.trim() {
                    "0" => Ok(None),
                    _ => bounded_duration(name, &value).map(Some),
                })
                .transpose()
        };
        let mut unknown: Vec<String> = names
            .into_iter()
            .filter(|name| name.starts_with("TERMINUS_") && !VARIABLES.contains(&name.as_str()))
            .collect();
        unknown.sort();
        unknown.dedup();
        Ok(Env {
            drain_delay: duration(ENV_DRAIN_DELAY)?,
            drain_timeout: duration(ENV_DRAIN_TIMEOUT)?,
            cleanup_timeout: duration(ENV_CLEANUP_TIMEOUT)?,
            grace_period: duration(ENV_GRACE_PERIOD)?,
            signals: lookup(ENV_SIGNALS).map(|list| parse_signals(&list)).transpose()?,
            header_read_timeout: switchable(ENV_HEADER_READ_TIMEOUT)?,
            idle_close_timeout: duration(ENV_IDLE_CLOSE_TIMEOUT)?,
            max_connections: lookup(ENV_MAX_CONNECTIONS)
                .map(|value| parse_connections(&value))
                .transpose()?,
            keep_alive_timeout: switchable(ENV_KEEP_ALIVE_TIMEOUT)?,
            max_connection_age: duration(ENV_MAX_CONNECTION_AGE)?,
            max_connection_age_grace: duration(ENV_MAX_CONNECTION_AGE_GRACE)?,
            max_requests_per_connection: lookup(ENV_MAX_REQUESTS_PER_CONNECTION)
                .map(|value| parse_requests(&value))
                .transpose()?,
            upgrade: UpgradeEnv::read(&lookup, duration)?,
            unknown,
        })
    }

    /// Sets what the environment names, over the code's values.
    pub(crate) fn apply(&self, config: &mut Config) {
        fn set<T: Clone>(field: &mut T, value: &Option<T>, source: &mut Source) {
            if let Some(value) = value {
                *field = value.clone();
                *source = Source::Environment;
            }
        }
        let sources = &mut config.sources;
        set(
            &mut config.drain_delay,
            &self.drain_delay,
            &mut sources.drain_delay,
        );
        set(
            &mut config.drain_timeout,
            &self.drain_timeout,
            &mut sources.drain_timeout,
        );
        set(
            &mut config.cleanup_timeout,
            &self.cleanup_timeout,
            &mut sources.cleanup_timeout,
        );
        set(
            &mut config.grace_period,
            &self.grace_period.map(Some),
            &mut sources.grace_period,
        );
        set(&mut config.signals, &self.signals, &mut sources.signals);
        set(
            &mut config.header_read_timeout,
            &self.header_read_timeout,
            &mut sources.header_read_timeout,
        );
        set(
            &mut config.idle_close_timeout,
            &self.idle_close_timeout,
            &mut sources.idle_close_timeout,
        );
        set(
            &mut config.max_connections,
            &self.max_connections.map(Some),
            &mut sources.max_connections,
        );
        set(
            &mut config.keep_alive_timeout,
            &self.keep_alive_timeout,
            &mut sources.keep_alive_timeout,
        );
        set(
            &mut config.max_connection_age,
            &self.max_connection_age.map(Some),
            &mut sources.max_connection_age,
        );
        set(
            &mut config.max_connection_age_grace,
            &self.max_connection_age_grace.map(Some),
            &mut sources.max_connection_age_grace,
        );
        set(
            &mut config.max_requests_per_connection,
            &self.max_requests_per_connection.map(Some),
            &mut sources.max_requests_per_connection,
        );
        self.upgrade.apply(&mut config.upgrade);
    }
}

/// Parses `SIGTERM,SIGINT`. An empty list is an error: it would leave the process with
/// no graceful shutdown at all, SIGTERM killing it on the spot.
pub(crate) fn parse_signals(list: &str) -> Result<Vec<Signal>, ConfigError> {
    let signals = list
        .split(',')
        .filter(|name| !name.trim().is_empty())
        .map(|name| name.parse::<Signal>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ConfigError::new(ENV_SIGNALS, error.to_string()))?;
    if signals.is_empty() {
        return Err(ConfigError::new(
            ENV_SIGNALS,
            format!(
                "`{list}` names no signal; without one, SIGTERM would kill the process with no \
                 graceful shutdown. Unset it for the default (SIGTERM,SIGINT)"
            ),
        ));
    }
    Ok(signals)
}

/// Parses `1500ms`, `5s`, `1m 30s` (humantime's format) into a duration; an error
/// names `field` and keeps humantime's as its source.
pub(crate) fn parse_duration(field: &'static str, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value.trim()).map_err(|error| {
        ConfigError::new(
            field,
            format!(
                "invalid duration `{value}` ({error}); expected a number and a unit, like `1500ms` or `5s`"
            ),
        )
        .with_source(error)
    })
}

/// A duration within [`MAX_DURATION`].
fn bounded_duration(name: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let duration = parse_duration(name, value)?;
    if duration > MAX_DURATION {
        return Err(ConfigError::new(
            name,
            format!("`{value}` is longer than the longest accepted duration, 1 day"),
        ));
    }
    Ok(duration)
}

/// A connection cap between 1 and [`MAX_CONNECTIONS`].
fn parse_connections(value: &str) -> Result<usize, ConfigError> {
    let invalid = |why: &str| ConfigError::new(ENV_MAX_CONNECTIONS, format!("`{value}` {why}"));
    let limit: u128 = value
        .trim()
        .parse()
        .map_err(|_| invalid("is not a number of connections"))?;
    match usize::try_from(limit) {
        Ok(0) => Err(invalid("is not above 0; unset the variable for no cap")),
        Ok(limit) if limit <= MAX_CONNECTIONS => Ok(limit),
        _ => Err(invalid(&format!("is above the largest cap, {MAX_CONNECTIONS}"))),
    }
}

/// A number of requests per connection, from 1.
fn parse_requests(value: &str) -> Result<u64, ConfigError> {
    match value.trim().parse::<u64>() {
        Ok(0) => Err(ConfigError::new(
            ENV_MAX_REQUESTS_PER_CONNECTION,
            format!("`{value}` is not above 0; unset the variable for no limit"),
        )),
        Ok(limit) => Ok(limit),
        Err(error) => Err(ConfigError::new(
            ENV_MAX_REQUESTS_PER_CONNECTION,
            format!("`{value}` is not a number of requests"),
        )
        .with_source(error)),
    }
}

/// The known variable closest to `unknown` (a typo's likely meaning), if one is close.
pub(crate) fn closest_known(unknown: &str) -> Option<&'static str> {
    VARIABLES
        .iter()
        .map(|known| (edit_distance(unknown, known), *known))
        .filter(|(distance, _)| *distance <= 4)
        .min()
        .map(|(_, known)| known)
}

/// Levenshtein distance, over bytes (the names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = Env::read(
            |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
            Vec::new(),
        )?;
        let mut config = Config::default();
        env.apply(&mut config);
        Ok(config)
    }

    #[test]
    fn environment_durations_accept_milliseconds_and_seconds() {
        let config = from_env(&[
            (ENV_DRAIN_DELAY, "1500ms"),
            (ENV_DRAIN_TIMEOUT, "5s"),
            (ENV_CLEANUP_TIMEOUT, "1m 30s"),
            (ENV_SIGNALS, "SIGTERM, usr2"),
        ])
        .unwrap();
        assert_eq!(config.drain_delay, Duration::from_millis(1500));
        assert_eq!(config.drain_timeout, Duration::from_secs(5));
        assert_eq!(config.cleanup_timeout, Duration::from_secs(90));
        assert_eq!(config.signals, vec![Signal::Term, Signal::Usr2]);
        assert_eq!(config.sources.drain_delay, Source::Environment);
        assert_eq!(config.sources.grace_period, Source::Default);
    }

    #[test]
    fn malformed_environment_value_names_the_variable_and_keeps_its_cause() {
        let error = from_env(&[(ENV_DRAIN_DELAY, "5")]).unwrap_err();
        assert_eq!(error.field(), ENV_DRAIN_DELAY);
        assert!(error.to_string().contains("TERMINUS_DRAIN_DELAY"), "{error}");
        assert!(
            std::error::Error::source(&error).is_some(),
            "humantime's error is the source"
        );

        let error = from_env(&[(ENV_SIGNALS, "SIGTERM,SIGNOPE")]).unwrap_err();
        assert_eq!(error.field(), ENV_SIGNALS);
        assert!(error.message().contains("SIGNOPE"));
    }

    #[test]
    fn an_empty_signal_list_is_an_error_naming_the_variable() {
        for value in ["", " ", ",", " , ,"] {
            let error = from_env(&[(ENV_SIGNALS, value)]).unwrap_err();
            assert_eq!(error.field(), ENV_SIGNALS, "for `{value}`");
            assert!(error.message().contains("names no signal"), "{error}");
        }
    }

    fn read(pairs: &[(&str, &str)]) -> Result<Env, ConfigError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let names: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
        Env::read(
            move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
            names,
        )
    }

    #[test]
    fn a_connection_cap_out_of_range_is_an_error_naming_the_variable() {
        for value in [
            "2305843009213693952",
            "99999999999999999999999999",
            "0",
            "-1",
            "many",
        ] {
            let error = read(&[(ENV_MAX_CONNECTIONS, value)]).unwrap_err();
            assert_eq!(error.field(), ENV_MAX_CONNECTIONS, "for `{value}`");
        }
        assert_eq!(
            read(&[(ENV_MAX_CONNECTIONS, " 20 ")]).unwrap().max_connections,
            Some(20)
        );
    }

    #[test]
    fn a_duration_longer_than_a_day_is_an_error_naming_the_variable() {
        for name in VARIABLES
            .iter()
            .filter(|name| name.ends_with("_DELAY") || name.contains("TIMEOUT"))
        {
            let error = read(&[(name, "100000000years")]).unwrap_err();
            assert_eq!(error.field(), *name);
            assert!(error.message().contains("1 day"), "{error}");
        }
        assert!(read(&[(ENV_DRAIN_TIMEOUT, "24h")]).is_ok());
    }

    #[test]
    fn a_header_read_timeout_of_zero_turns_it_off() {
        let env = read(&[(ENV_HEADER_READ_TIMEOUT, "0")]).unwrap();
        assert_eq!(env.header_read_timeout, Some(None));
    }

    #[test]
    fn unknown_names_are_found_and_matched_to_the_closest_known_one() {
        let env = read(&[
            ("TERMINUS_DRAIN_DEALY", "5s"),
            ("TERMINUS_DRAIN_DELAY", "1s"),
            ("OTHER", "x"),
        ])
        .unwrap();
        assert_eq!(env.unknown, vec!["TERMINUS_DRAIN_DEALY".to_owned()]);
        assert_eq!(closest_known("TERMINUS_DRAIN_DEALY"), Some(ENV_DRAIN_DELAY));
        assert_eq!(
            closest_known("TERMINUS_MAX_CONNECTION"),
            Some(ENV_MAX_CONNECTIONS)
        );
        assert_eq!(closest_known("TERMINUS_SOMETHING_ELSE_ENTIRELY"), None);
    }
}
