//! The lifecycle's facts as metrics, through the [`metrics`](https://docs.rs/metrics)
//! facade (feature `metrics`): whatever recorder the application installs (Prometheus,
//! OpenTelemetry, statsd) receives them. Without the feature every function here is
//! empty and compiles away.
//!
//! | metric | kind | labels | what |
//! |---|---|---|---|
//! | `terminus_phase` | gauge | `phase` | 1 for the current phase, 0 for the others |
//! | `terminus_phase_duration_seconds` | gauge | `phase` | how long the last completed phase lasted |
//! | `terminus_requests_in_flight` | gauge | | application requests in flight now (probes and the admin listener's requests, such as `/metrics` scrapes, excluded) |
//! | `terminus_requests_drained_total` | counter | | requests completed after the shutdown began |
//! | `terminus_requests_cut_total` | counter | | requests cut at the drain deadline |
//! | `terminus_tasks_cut_total` | counter | | tracked tasks aborted at the deadline |
//! | `terminus_check_duration_seconds` | histogram | `check` | each run of a health check |
//! | `terminus_check_runs_total` | counter | `check`, `result` | runs by result: `pass`, `fail`, `timeout`, `panic` |
//! | `terminus_check_status` | gauge | `check` | 1 when the last run passed, 0 when it failed |
//! | `terminus_hook_duration_seconds` | histogram | `stage`, `hook` | each hook run |
//! | `terminus_hook_runs_total` | counter | `stage`, `hook`, `result` | hook runs by result: `ok`, `failed`, `panicked`, `timed_out` |
//!
//! `axum-terminus` adds `terminus_connections_open` (gauge) and
//! `terminus_connections_cut_total` (counter). Install the recorder before building the
//! `Terminus`: the request gauge's handle is taken then, once, so that counting a
//! request costs one update and no lookup.

//!
//! This file imports nothing else from the crate: callers pass the labels as the
//! `&'static str` names their types already have (`Phase::as_str`, ...), so that every
//! file can report a fact without this one depending on it.

use std::time::Duration;

/// The handles the request path updates, taken once.
pub(crate) struct RequestMetrics {
    #[cfg(feature = "metrics")]
    in_flight: metrics::Gauge,
}

impl RequestMetrics {
    pub(crate) fn new() -> RequestMetrics {
        RequestMetrics {
            #[cfg(feature = "metrics")]
            in_flight: metrics::gauge!("terminus_requests_in_flight"),
        }
    }

    #[inline]
    pub(crate) fn started(&self) {
        #[cfg(feature = "metrics")]
        self.in_flight.increment(1.0);
    }

    #[inline]
    pub(crate) fn ended(&self) {
        #[cfg(feature = "metrics")]
        self.in_flight.decrement(1.0);
    }
}

impl Default for RequestMetrics {
    fn default() -> Self {
        RequestMetrics::new()
    }
}

impl std::fmt::Debug for RequestMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestMetrics").finish_non_exhaustive()
    }
}

pub(crate) fn request_drained() {
    #[cfg(feature = "metrics")]
    metrics::counter!("terminus_requests_drained_total").increment(1);
}

pub(crate) fn request_cut() {
    #[cfg(feature = "metrics")]
    metrics::counter!("terminus_requests_cut_total").increment(1);
}

#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn tasks_cut(count: usize) {
    #[cfg(feature = "metrics")]
    metrics::counter!("terminus_tasks_cut_total").increment(count as u64);
}

#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn phase_changed(previous: &'static str, next: &'static str, in_previous: Duration) {
    #[cfg(feature = "metrics")]
    {
        metrics::gauge!("terminus_phase", "phase" => previous).set(0.0);
        metrics::gauge!("terminus_phase", "phase" => next).set(1.0);
        metrics::gauge!("terminus_phase_duration_seconds", "phase" => previous)
            .set(in_previous.as_secs_f64());
    }
}

/// `result` is `pass`, `fail`, `timeout` or `panic`.
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn check_ran(check: &str, duration: Duration, result: &'static str) {
    #[cfg(feature = "metrics")]
    {
        let check = check.to_owned();
        let passed = result == "pass";
        metrics::histogram!("terminus_check_duration_seconds", "check" => check.clone())
            .record(duration.as_secs_f64());
        metrics::counter!("terminus_check_runs_total", "check" => check.clone(), "result" => result)
            .increment(1);
        metrics::gauge!("terminus_check_status", "check" => check).set(if passed { 1.0 } else { 0.0 });
    }
}

#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
/// `stage` is the hook stage's name; `result` is `ok`, `failed`, `panicked` or `timed_out`.
pub(crate) fn hook_ran(stage: &'static str, hook: &str, duration: Duration, result: &'static str) {
    #[cfg(feature = "metrics")]
    {
        let hook = hook.to_owned();
        metrics::histogram!("terminus_hook_duration_seconds", "stage" => stage, "hook" => hook.clone())
            .record(duration.as_secs_f64());
        metrics::counter!("terminus_hook_runs_total", "stage" => stage, "hook" => hook, "result" => result)
            .increment(1);
    }
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use std::collections::HashMap;

    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use crate::health::{Check, CheckError};
    use crate::{NoConnections, Terminus};

    /// Every metric recorded so far, by name and labels (`name{label=value,...}`).
    fn snapshot(recorder: &DebuggingRecorder) -> HashMap<String, DebugValue> {
        recorder
            .snapshotter()
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                let key = key.key();
                let labels: Vec<String> = key
                    .labels()
                    .map(|l| format!("{}={}", l.key(), l.value()))
                    .collect();
                let name = if labels.is_empty() {
                    key.name().to_owned()
                } else {
                    format!("{}{{{}}}", key.name(), labels.join(","))
                };
                (name, value)
            })
            .collect()
    }

    #[test]
    fn the_lifecycle_reports_its_phase_requests_checks_and_hooks() {
        let recorder = DebuggingRecorder::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        metrics::with_local_recorder(&recorder, || {
            runtime.block_on(async {
                let terminus = Terminus::builder()
                    .drain_delay(std::time::Duration::ZERO)
                    .readiness(Check::new("db", |_| async { Err(CheckError::new("down")) }))
                    .on_shutdown("flush", || async { Ok(()) })
                    .build()
                    .unwrap();
                terminus.mark_listeners_bound();
                let request = terminus.track_request(());
                // The debugging recorder reports what changed since the last snapshot.
                let during = snapshot(&recorder);
                assert_eq!(
                    during["terminus_requests_in_flight"],
                    DebugValue::Gauge(1.0.into())
                );
                let _ = terminus.probe(crate::health::CheckKind::Readiness).await;
                terminus.shutdown("test");
                drop(request);
                terminus.run(NoConnections).await;
            })
        });
        let metrics = snapshot(&recorder);
        // The request seen in flight above has ended since.
        assert_eq!(
            metrics["terminus_requests_in_flight"],
            DebugValue::Gauge((-1.0).into())
        );
        assert_eq!(metrics["terminus_requests_drained_total"], DebugValue::Counter(1));
        assert_eq!(
            metrics["terminus_phase{phase=stopped}"],
            DebugValue::Gauge(1.0.into())
        );
        assert_eq!(
            metrics["terminus_phase{phase=draining}"],
            DebugValue::Gauge(0.0.into())
        );
        assert_eq!(
            metrics["terminus_check_runs_total{check=db,result=fail}"],
            DebugValue::Counter(1)
        );
        assert_eq!(
            metrics["terminus_check_status{check=db}"],
            DebugValue::Gauge(0.0.into())
        );
        assert_eq!(
            metrics["terminus_hook_runs_total{stage=on_shutdown,hook=flush,result=ok}"],
            DebugValue::Counter(1)
        );
        assert!(metrics.contains_key("terminus_phase_duration_seconds{phase=closing}"));
    }
}
