//! What a rolling restart lost, and when: every request placed on its restart's
//! timeline, the tables, the diagnosis in plain words, and the JSON report.
//!
//! A request is placed by the moment its outcome was known (a refused connect, a 503,
//! a reset, the end of its timeout) on the timeline of the restart in progress then.
//! Restart *k*'s window runs from the moment restart *k − 1*'s replacement was ready to
//! the moment its own replacement is ready (the first from the start of the load, the
//! last to its end), cut into four phases:
//!
//! - `before_signal`: the instance to be stopped still serves normally;
//! - `drain_delay`: after the signal, while the process still listens (the drain delay);
//! - `listener_closed`: the listener is closed, the process still runs (in-flight work);
//! - `after_exit`: the process is gone, until its replacement is ready.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::instance::Exit;
use crate::loadgen::{Outcome, Record};

/// The most lost requests listed one by one in the JSON report.
const LISTED_LOSSES: usize = 1_000;

/// A phase of a restart (see the module's documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Before the signal.
    BeforeSignal,
    /// After the signal, while the process still listens.
    DrainDelay,
    /// After the listener closed, before the exit.
    ListenerClosed,
    /// After the exit, until the replacement is ready.
    AfterExit,
}

impl Phase {
    const ALL: [Phase; 4] = [
        Phase::BeforeSignal,
        Phase::DrainDelay,
        Phase::ListenerClosed,
        Phase::AfterExit,
    ];

    fn name(self) -> &'static str {
        match self {
            Phase::BeforeSignal => "before_signal",
            Phase::DrainDelay => "drain_delay",
            Phase::ListenerClosed => "listener_closed",
            Phase::AfterExit => "after_exit",
        }
    }
}

/// The moments of one restart, in seconds from the start of the load.
#[derive(Clone, Debug)]
pub struct RestartTimes {
    /// Which replica (0-based).
    pub replica: usize,
    /// The stopped process.
    pub pid: u32,
    /// When the stop signal was sent.
    pub signal_at: Duration,
    /// When the listener was seen closed while the process still ran.
    pub listener_closed_at: Option<Duration>,
    /// When the process was seen gone.
    pub exited_at: Duration,
    /// How it ended.
    pub exit: Exit,
    /// When its replacement was ready and routed to.
    pub ready_at: Duration,
}

/// One restart in the report.
#[derive(Clone, Debug, Serialize)]
pub struct RestartReport {
    /// 1-based, in the order they ran.
    pub restart: usize,
    /// Which replica (0-based).
    pub replica: usize,
    /// The stopped process.
    pub pid: u32,
    /// Seconds from the start of the load to the signal.
    pub signal_at: f64,
    /// Seconds from the start of the load until the listener was seen closed (`null`:
    /// it closed with the exit).
    pub listener_closed_at: Option<f64>,
    /// Seconds from the start of the load to the exit.
    pub exited_at: f64,
    /// From the signal to the exit, in seconds.
    pub stop_seconds: f64,
    /// From the signal to the listener's close (or the exit), in seconds: the drain
    /// delay the balancer saw.
    pub drain_delay_seconds: f64,
    /// The exit code, when the process exited by itself.
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    pub exit_signal: Option<i32>,
    /// Whether it was killed after the grace.
    pub killed: bool,
    /// Seconds from the start of the load until the replacement was ready.
    pub ready_at: f64,
    /// Requests lost in this restart's window.
    pub lost: u64,
    /// The same, by phase (every phase present).
    pub lost_by_phase: BTreeMap<&'static str, u64>,
    /// The same, by outcome.
    pub lost_by_outcome: BTreeMap<String, u64>,
}

/// One lost request in the JSON report.
#[derive(Clone, Debug, Serialize)]
pub struct LostRequest {
    /// Seconds from the start of the load to the request.
    pub sent_at: f64,
    /// Seconds from the start of the load to its outcome.
    pub at: f64,
    /// `HTTP/1.1` or `HTTP/2`.
    pub protocol: &'static str,
    /// `GET`, `POST` or `GET slow`.
    pub request: &'static str,
    /// How it ended (`status_503`, `no_answer`, ...).
    pub outcome: String,
    /// The restart whose window it fell in (1-based).
    pub restart: usize,
    /// The phase of that restart.
    pub phase: &'static str,
    /// The client's error or the answer, when there is one.
    pub detail: Option<String>,
}

/// The whole report of `terminus-check roll` (the JSON of `--json`).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The server command.
    pub command: Vec<String>,
    /// `haproxy` or `nginx`.
    pub lb: &'static str,
    /// Instances behind the balancer.
    pub replicas: usize,
    /// The requested load, requests per second.
    pub rps: u32,
    /// The stop signal.
    pub signal: String,
    /// How long the load ran, in seconds.
    pub duration_seconds: f64,
    /// Requests sent.
    pub requests: u64,
    /// Requests with a good answer.
    pub ok: u64,
    /// Every request that did not end ok.
    pub lost: u64,
    /// The losses tolerated (`--max-lost`).
    pub max_lost: u64,
    /// Whether `lost <= max_lost`.
    pub passed: bool,
    /// Requests by outcome (`ok`, `status_503`, `refused`, `no_answer`, `truncated`,
    /// `timeout`).
    pub by_outcome: BTreeMap<String, u64>,
    /// HTTP/2 requests the server refused unprocessed (GOAWAY, REFUSED_STREAM) and the
    /// client sent again, as RFC 9113 allows: not losses.
    pub h2_retried: u64,
    /// Each restart.
    pub restarts: Vec<RestartReport>,
    /// The diagnosis, in plain words.
    pub diagnosis: Vec<String>,
    /// The lost requests, one by one (the first 1,000).
    pub lost_requests: Vec<LostRequest>,
}

/// What the report needs to know besides the requests and the restarts.
#[derive(Clone, Debug)]
pub struct Setting {
    /// The server command.
    pub command: Vec<String>,
    /// The balancer.
    pub lb: &'static str,
    /// How long the balancer takes to stop routing to an instance whose readiness fails.
    pub detection: Duration,
    /// Instances.
    pub replicas: usize,
    /// Requests per second.
    pub rps: u32,
    /// The stop signal.
    pub signal: String,
    /// The grace before SIGKILL.
    pub grace: Duration,
    /// `--max-lost`.
    pub max_lost: u64,
}

/// Places every request and builds the report.
pub fn build(
    setting: &Setting,
    records: &[Record],
    restarts: &[RestartTimes],
    duration: Duration,
    h2_retried: u64,
) -> Report {
    let mut by_outcome = BTreeMap::new();
    let mut restart_reports: Vec<RestartReport> = restarts
        .iter()
        .enumerate()
        .map(|(index, times)| restart_report(index, times))
        .collect();
    let mut lost_requests = Vec::new();
    let mut lost = 0;
    for record in records {
        *by_outcome.entry(record.outcome.name()).or_insert(0) += 1;
        if record.outcome == Outcome::Ok {
            continue;
        }
        lost += 1;
        let (restart, phase) = place(record.ended, restarts);
        if let Some(report) = restart.and_then(|index| restart_reports.get_mut(index)) {
            report.lost += 1;
            *report.lost_by_phase.entry(phase.name()).or_insert(0) += 1;
            *report.lost_by_outcome.entry(record.outcome.name()).or_insert(0) += 1;
        }
        if lost_requests.len() < LISTED_LOSSES {
            lost_requests.push(LostRequest {
                sent_at: record.sent.as_secs_f64(),
                at: record.ended.as_secs_f64(),
                protocol: record.protocol,
                request: record.kind,
                outcome: record.outcome.name(),
                restart: restart.map_or(0, |index| index + 1),
                phase: phase.name(),
                detail: record.detail.clone(),
            });
        }
    }
    let requests = records.len() as u64;
    let diagnosis = diagnose(setting, records, restarts, &restart_reports);
    Report {
        command: setting.command.clone(),
        lb: setting.lb,
        replicas: setting.replicas,
        rps: setting.rps,
        signal: setting.signal.clone(),
        duration_seconds: duration.as_secs_f64(),
        requests,
        ok: requests - lost,
        lost,
        max_lost: setting.max_lost,
        passed: lost <= setting.max_lost,
        by_outcome,
        h2_retried,
        restarts: restart_reports,
        diagnosis,
        lost_requests,
    }
}

fn restart_report(index: usize, times: &RestartTimes) -> RestartReport {
    let closed_or_exit = times.listener_closed_at.unwrap_or(times.exited_at);
    RestartReport {
        restart: index + 1,
        replica: times.replica,
        pid: times.pid,
        signal_at: times.signal_at.as_secs_f64(),
        listener_closed_at: times.listener_closed_at.map(|at| at.as_secs_f64()),
        exited_at: times.exited_at.as_secs_f64(),
        stop_seconds: times.exited_at.saturating_sub(times.signal_at).as_secs_f64(),
        drain_delay_seconds: closed_or_exit.saturating_sub(times.signal_at).as_secs_f64(),
        exit_code: times.exit.code,
        exit_signal: times.exit.signal,
        killed: times.exit.killed,
        ready_at: times.ready_at.as_secs_f64(),
        lost: 0,
        lost_by_phase: Phase::ALL.iter().map(|phase| (phase.name(), 0)).collect(),
        lost_by_outcome: BTreeMap::new(),
    }
}

/// The restart whose window holds `at`, and the phase.
pub fn place(at: Duration, restarts: &[RestartTimes]) -> (Option<usize>, Phase) {
    let Some(last) = restarts.len().checked_sub(1) else {
        return (None, Phase::BeforeSignal);
    };
    let index = restarts
        .iter()
        .position(|times| at < times.ready_at)
        .unwrap_or(last);
    let times = &restarts[index];
    let phase = if at < times.signal_at {
        Phase::BeforeSignal
    } else if at < times.listener_closed_at.unwrap_or(times.exited_at) {
        Phase::DrainDelay
    } else if at < times.exited_at {
        Phase::ListenerClosed
    } else {
        Phase::AfterExit
    };
    (Some(index), phase)
}

/// "12 × status_503, 3 × no_answer".
fn outcomes(counts: &BTreeMap<String, u64>) -> String {
    let mut sorted: Vec<_> = counts.iter().collect();
    sorted.sort_by(|a, b| b.1.cmp(a.1));
    sorted
        .iter()
        .map(|(outcome, count)| format!("{count} × {}", describe(outcome)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe(outcome: &str) -> String {
    match outcome {
        "refused" => "connection refused".to_owned(),
        "no_answer" => "reset or closed without an answer".to_owned(),
        "truncated" => "answer cut mid-body".to_owned(),
        "timeout" => "timed out".to_owned(),
        status => status.replace("status_", "status "),
    }
}

fn seconds(duration: Duration) -> String {
    format!("{:.2} s", duration.as_secs_f64())
}

/// The diagnosis: what was lost, when, and the likely cause, in plain words.
fn diagnose(
    setting: &Setting,
    records: &[Record],
    restarts: &[RestartTimes],
    reports: &[RestartReport],
) -> Vec<String> {
    let mut lines = Vec::new();
    let lost: Vec<(&Record, Option<usize>, Phase)> = records
        .iter()
        .filter(|record| record.outcome != Outcome::Ok)
        .map(|record| {
            let (restart, phase) = place(record.ended, restarts);
            (record, restart, phase)
        })
        .collect();
    let signal = format!("SIG{}", setting.signal.trim_start_matches("SIG"));
    if lost.is_empty() {
        lines.push(format!(
            "Nothing was lost: {} requests through {} over {} restarts.",
            records.len(),
            setting.lb,
            restarts.len()
        ));
    }
    let tally = |filter: &dyn Fn(&Record, Phase) -> bool| -> (u64, BTreeMap<String, u64>, Duration) {
        let mut counts = BTreeMap::new();
        let (mut total, mut latest) = (0, Duration::ZERO);
        for (record, restart, phase) in &lost {
            if filter(record, *phase) {
                total += 1;
                *counts.entry(record.outcome.name()).or_insert(0) += 1;
                if let Some(times) = restart.map(|index| &restarts[index]) {
                    latest = latest.max(record.ended.saturating_sub(times.signal_at));
                }
            }
        }
        (total, counts, latest)
    };

    let (before, counts, _) = tally(&|_, phase| phase == Phase::BeforeSignal);
    if before > 0 {
        lines.push(format!(
            "{before} requests failed before any signal ({}): the service fails them while it is up. That is not \
             the restart; check the paths (--path, --slow-path) and the service's own errors.",
            outcomes(&counts)
        ));
    }

    let drain = restarts
        .iter()
        .map(|times| {
            times
                .listener_closed_at
                .unwrap_or(times.exited_at)
                .saturating_sub(times.signal_at)
        })
        .min()
        .unwrap_or_default();
    let routing = |record: &Record| {
        matches!(
            record.outcome,
            Outcome::Status(502..=504) | Outcome::Refused | Outcome::NoAnswer
        )
    };
    let (routed, counts, latest) = tally(&|record, phase| phase != Phase::BeforeSignal && routing(record));
    if routed > 0 {
        let what = format!(
            "{routed} requests failed ({}) within {} after {signal}",
            outcomes(&counts),
            seconds(latest)
        );
        let detection = seconds(setting.detection);
        if drain < Duration::from_millis(100) {
            lines.push(format!(
                "{what}: the listener closed {} ms after the signal while {} still routed to the instance. \
                 The drain delay is missing: after {signal}, keep serving (with readiness failing) for longer \
                 than the balancer takes to stop routing, the health check's interval × fall count plus its \
                 timeout ({detection} here; in Kubernetes, the time for the endpoint's removal to reach every balancer, often 5 s).",
                drain.as_millis(),
                setting.lb
            ));
        } else if drain < setting.detection {
            lines.push(format!(
                "{what}: readiness failed before the balancer stopped routing — the drain delay ({}) must cover \
                 the health check's interval × fall count ({detection} here).",
                seconds(drain)
            ));
        } else {
            lines.push(format!(
                "{what}, although the drain delay ({}) covered the balancer's detection ({detection}): \
                 connections were closed under requests. Close keep-alive connections only after a response \
                 with `Connection: close` (HTTP/1.1) or after a GOAWAY (HTTP/2), never while a request is on them.",
                seconds(drain)
            ));
        }
    }

    let (cut, counts, _) = tally(&|record, phase| {
        phase != Phase::BeforeSignal && matches!(record.outcome, Outcome::Truncated | Outcome::Timeout)
    });
    if cut > 0 {
        lines.push(format!(
            "{cut} requests in flight were cut ({}): the process stopped before finishing them. Its drain \
             timeout must be longer than the slowest request, and it must wait for in-flight requests before \
             exiting.",
            outcomes(&counts)
        ));
    }

    let (other, counts, _) = tally(&|record, phase| {
        phase != Phase::BeforeSignal
            && !routing(record)
            && !matches!(record.outcome, Outcome::Truncated | Outcome::Timeout)
    });
    if other > 0 {
        lines.push(format!(
            "{other} requests got error answers from the service after {signal} ({}): a stopping service must \
             still answer the requests it accepts.",
            outcomes(&counts)
        ));
    }

    let killed: Vec<_> = reports
        .iter()
        .filter(|report| report.killed)
        .map(|report| report.restart)
        .collect();
    if !killed.is_empty() {
        lines.push(format!(
            "Restarts {killed:?}: the process did not exit within the grace ({}) and was killed (SIGKILL), as \
             the kubelet does; whatever it still held was cut.",
            seconds(setting.grace)
        ));
    }
    let failed_exits: Vec<_> = reports
        .iter()
        .filter(|report| !report.killed && report.exit_code != Some(0))
        .map(|report| match (report.exit_code, report.exit_signal) {
            (Some(code), _) => format!("#{}: code {code}", report.restart),
            (None, Some(signal)) => format!("#{}: signal {signal}", report.restart),
            (None, None) => format!("#{}: unknown", report.restart),
        })
        .collect();
    if !failed_exits.is_empty() {
        lines.push(format!(
            "Exits other than 0 after {signal} ({}): Kubernetes and systemd count them as failures; a graceful \
             stop should exit 0.",
            failed_exits.join(", ")
        ));
    }
    lines
}

/// The report as text: a table per restart, the summary and the diagnosis.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{:>7} {:>7} {:>8} {:>9} {:>16} {:>9} {:>7} {:>6} | {:>6} {:>6} {:>7} {:>6} {:>6}",
        "restart",
        "replica",
        "pid",
        "signal@",
        "listener closed",
        "exited",
        "ready",
        "exit",
        "before",
        "drain",
        "closed",
        "exited",
        "lost"
    );
    for restart in &report.restarts {
        let closed = restart.listener_closed_at.map_or("with exit".to_owned(), |at| {
            format!("+{:.2} s", at - restart.signal_at)
        });
        let exit = match (restart.exit_code, restart.exit_signal, restart.killed) {
            (_, _, true) => "KILLED".to_owned(),
            (Some(code), _, _) => code.to_string(),
            (None, Some(signal), _) => format!("sig {signal}"),
            (None, None, _) => "?".to_owned(),
        };
        let phase = |name: &str| restart.lost_by_phase.get(name).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "{:>7} {:>7} {:>8} {:>7.2} s {:>16} {:>7} {:>7} {:>6} | {:>6} {:>6} {:>7} {:>6} {:>6}",
            format!("{}/{}", restart.restart, report.restarts.len()),
            restart.replica,
            restart.pid,
            restart.signal_at,
            closed,
            format!("+{:.2} s", restart.stop_seconds),
            format!("+{:.1} s", restart.ready_at - restart.signal_at),
            exit,
            phase("before_signal"),
            phase("drain_delay"),
            phase("listener_closed"),
            phase("after_exit"),
            restart.lost
        );
    }
    let _ = writeln!(
        out,
        "\n{} requests through {} in {:.1} s to {} replicas: {} ok, {} lost (max {}).",
        report.requests,
        report.lb,
        report.duration_seconds,
        report.replicas,
        report.ok,
        report.lost,
        report.max_lost
    );
    let by_outcome: Vec<String> = report
        .by_outcome
        .iter()
        .map(|(outcome, count)| format!("{outcome}={count}"))
        .collect();
    let _ = writeln!(
        out,
        "By outcome: {} (HTTP/2 requests refused unprocessed and sent again: {}).",
        by_outcome.join(" "),
        report.h2_retried
    );
    let _ = writeln!(out, "\nDiagnosis:");
    for line in &report.diagnosis {
        let _ = writeln!(out, "  - {line}");
    }
    let verdict = if report.passed { "PASS" } else { "FAIL" };
    let _ = writeln!(
        out,
        "\n{verdict}: {} lost, {} allowed.",
        report.lost, report.max_lost
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(signal: u64, closed: Option<u64>, exited: u64, ready: u64) -> RestartTimes {
        let ms = Duration::from_millis;
        RestartTimes {
            replica: 0,
            pid: 1,
            signal_at: ms(signal),
            listener_closed_at: closed.map(ms),
            exited_at: ms(exited),
            exit: Exit {
                code: Some(0),
                signal: None,
                killed: false,
            },
            ready_at: ms(ready),
        }
    }

    #[test]
    fn each_moment_falls_in_one_restart_and_one_phase() {
        let restarts = [times(1000, Some(4000), 4100, 5000), times(6000, None, 6050, 7000)];
        let at = |ms| place(Duration::from_millis(ms), &restarts);
        assert_eq!(at(10), (Some(0), Phase::BeforeSignal));
        assert_eq!(at(1000), (Some(0), Phase::DrainDelay));
        assert_eq!(at(4000), (Some(0), Phase::ListenerClosed));
        assert_eq!(at(4500), (Some(0), Phase::AfterExit));
        assert_eq!(at(5000), (Some(1), Phase::BeforeSignal));
        // No listener close seen: the drain lasts until the exit.
        assert_eq!(at(6040), (Some(1), Phase::DrainDelay));
        assert_eq!(at(6050), (Some(1), Phase::AfterExit));
        // After the last replacement was ready: still the last restart's.
        assert_eq!(at(9000), (Some(1), Phase::AfterExit));
    }

    fn lost(ended_ms: u64, outcome: Outcome) -> Record {
        Record {
            sent: Duration::from_millis(ended_ms),
            ended: Duration::from_millis(ended_ms),
            outcome,
            protocol: "HTTP/1.1",
            kind: "GET",
            detail: None,
        }
    }

    fn setting() -> Setting {
        Setting {
            command: vec!["server".into()],
            lb: "haproxy",
            detection: Duration::from_millis(1500),
            replicas: 2,
            rps: 100,
            signal: "TERM".into(),
            grace: Duration::from_secs(30),
            max_lost: 0,
        }
    }

    #[test]
    fn balancer_errors_right_after_the_signal_without_a_drain_delay_are_diagnosed_as_the_missing_delay() {
        let restarts = [times(1000, Some(1002), 1010, 3000)];
        let records = [
            lost(1200, Outcome::Status(503)),
            lost(1300, Outcome::NoAnswer),
            lost(500, Outcome::Ok),
        ];
        let report = build(&setting(), &records, &restarts, Duration::from_secs(4), 0);
        assert_eq!(
            (report.requests, report.ok, report.lost, report.passed),
            (3, 1, 2, false)
        );
        assert_eq!(report.restarts[0].lost_by_phase["after_exit"], 2);
        assert!(
            report.diagnosis[0].contains("drain delay is missing"),
            "{:?}",
            report.diagnosis
        );
        assert!(
            report.diagnosis[0].contains("2 requests failed"),
            "{:?}",
            report.diagnosis
        );
    }

    #[test]
    fn a_drain_delay_shorter_than_the_detection_is_called_too_short() {
        let restarts = [times(1000, Some(1500), 1510, 3000)];
        let records = [lost(1600, Outcome::Status(503))];
        let report = build(&setting(), &records, &restarts, Duration::from_secs(4), 0);
        assert!(
            report.diagnosis[0].contains("readiness failed before the balancer stopped routing"),
            "{:?}",
            report.diagnosis
        );
    }

    #[test]
    fn nothing_lost_passes() {
        let restarts = [times(1000, Some(4000), 4010, 5000)];
        let report = build(
            &setting(),
            &[lost(10, Outcome::Ok)],
            &restarts,
            Duration::from_secs(6),
            0,
        );
        assert!(report.passed);
        assert!(report.diagnosis[0].starts_with("Nothing was lost"));
    }
}
