//! Probe bodies: a [`Report`] rendered as terminus JSON, Kubernetes text, or
//! `application/health+json`.
//!
//! Failure reasons (check messages, causes, the lifecycle's reason) appear only when
//! [`RenderSettings::expose_reasons`] is set; stack-like details only with
//! [`RenderSettings::unsafe_stacks`]. Everything else is the same for every caller.
//!
//! The kubelet reads at most [`MAX_BODY`] (10 KiB) of a probe's body and drops the
//! rest. A terminus JSON or Kubernetes text body that would be longer (many checks,
//! long reasons) lists fewer checks, failing ones first, and says how many it left
//! out, so that what the kubelet reads is whole and ends with the verdict.

use std::fmt::Write as _;

use bytes::Bytes;
use http::StatusCode;
use serde_json::{json, Map, Value};
use terminus_core::health::{Causes, CheckError, CheckReport, HealthStatus, Report, LIFECYCLE_CHECK};

/// The body format of a probe response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProbeFormat {
    /// `@godaddy/terminus`'s JSON: `{"status":"ok"}` / `{"status":"error"}`, with
    /// `info`/`details` and, when reasons are exposed, `error`/`details`
    /// (`application/json`). The default.
    #[default]
    Terminus,
    /// kube-apiserver's text: `ok`, or with `?verbose` (and always on failure) one line
    /// per check, `[+]name ok` / `[-]name failed: reason withheld`, then
    /// `readyz check passed|failed` (`text/plain; charset=utf-8`).
    Kubernetes,
    /// The IETF draft "Health Check Response Format for HTTP APIs":
    /// `{"status":"pass|warn|fail","checks":{...}}` (`application/health+json`).
    /// Sent whenever the request's `Accept` header asks for it.
    HealthJson,
}

/// Content type of [`ProbeFormat::Terminus`].
pub(crate) const CONTENT_TYPE_JSON: &str = "application/json";
/// Content type of [`ProbeFormat::Kubernetes`].
pub(crate) const CONTENT_TYPE_TEXT: &str = "text/plain; charset=utf-8";
/// Content type of [`ProbeFormat::HealthJson`].
pub(crate) const CONTENT_TYPE_HEALTH_JSON: &str = "application/health+json";

/// What every probe of one layer renders with.
#[derive(Clone, Debug)]
pub(crate) struct RenderSettings {
    pub(crate) status_ok: StatusCode,
    pub(crate) status_error: StatusCode,
    pub(crate) ok_body: Map<String, Value>,
    pub(crate) error_body: Map<String, Value>,
    pub(crate) verbatim: bool,
    pub(crate) expose_reasons: bool,
    pub(crate) unsafe_stacks: bool,
    pub(crate) default_format: ProbeFormat,
}

impl Default for RenderSettings {
    fn default() -> Self {
        RenderSettings {
            status_ok: StatusCode::OK,
            status_error: StatusCode::SERVICE_UNAVAILABLE,
            ok_body: status_object("ok"),
            error_body: status_object("error"),
            verbatim: false,
            expose_reasons: false,
            unsafe_stacks: false,
            default_format: ProbeFormat::Terminus,
        }
    }
}

fn status_object(status: &str) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("status".to_owned(), Value::String(status.to_owned()));
    map
}

/// The most of a probe's body the kubelet reads (Kubernetes' `maxRespBodyLength`).
pub(crate) const MAX_BODY: usize = 10 * 1024;

/// Why a body lists fewer checks than the report has.
const LEFT_OUT: &str = "not listed: a probe body stays within the 10 KiB the kubelet reads";

/// How one probe request wants its report.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RenderRequest<'a> {
    pub(crate) format: ProbeFormat,
    /// The probe's name in Kubernetes text (`readyz`, `health`).
    pub(crate) name: &'a str,
    /// `?verbose` was present.
    pub(crate) verbose: bool,
    /// The route selects exactly one check: terminus JSON then shows its `info` and
    /// causes unwrapped, as terminus does for its one-function-per-path checks.
    pub(crate) single: bool,
    /// Whether the lifecycle gate is part of what the route reports.
    pub(crate) show_gate: bool,
}

/// A rendered probe answer.
#[derive(Debug)]
pub(crate) struct Rendered {
    pub(crate) status: StatusCode,
    pub(crate) content_type: &'static str,
    pub(crate) body: Bytes,
}

pub(crate) fn render(report: &Report, request: &RenderRequest<'_>, settings: &RenderSettings) -> Rendered {
    let status = status_code(report, settings);
    let checks = report.checks.len();
    match request.format {
        ProbeFormat::Terminus => Rendered {
            status,
            content_type: CONTENT_TYPE_JSON,
            body: within_limit(checks, |listed| terminus_json(report, request, settings, listed)),
        },
        ProbeFormat::Kubernetes => Rendered {
            status,
            content_type: CONTENT_TYPE_TEXT,
            body: within_limit(checks, |listed| {
                Bytes::from(kubernetes_text(report, request, settings, listed))
            }),
        },
        // Sent only to clients that ask for it (the kubelet asks for `*/*`), in full.
        ProbeFormat::HealthJson => Rendered {
            status,
            content_type: CONTENT_TYPE_HEALTH_JSON,
            body: json_bytes(&health_json(report, request, settings)),
        },
    }
}

/// The body `render` gives with every check listed (`None`) if it fits in
/// [`MAX_BODY`]; otherwise the one listing the most checks that fits (`Some(n)`: at most
/// `n` per-check entries, failing ones first, and a note of what was left out). A body
/// only grows with `n`, so bisection finds it in a few renders; this happens only for
/// bodies that would be too long, never on the cached paths.
fn within_limit(checks: usize, render: impl Fn(Option<usize>) -> Bytes) -> Bytes {
    let full = render(None);
    if full.len() <= MAX_BODY {
        return full;
    }
    let most = render(Some(checks));
    if most.len() <= MAX_BODY {
        return most;
    }
    // `fits` fits (or is 0, the least there is); `over` does not.
    let (mut fits, mut over) = (0, checks);
    while over - fits > 1 {
        let middle = fits + (over - fits) / 2;
        if render(Some(middle)).len() <= MAX_BODY {
            fits = middle;
        } else {
            over = middle;
        }
    }
    render(Some(fits))
}

/// The first `listed` of `entries` (all when `None`), and how many were left out.
fn take_listed<T>(entries: Vec<T>, listed: Option<usize>) -> (Vec<T>, usize) {
    let mut entries = entries;
    let left_out = listed.map_or(0, |listed| entries.len().saturating_sub(listed));
    entries.truncate(entries.len() - left_out);
    (entries, left_out)
}

/// Whether `report`'s terminus JSON body is one of the two that depend on the settings
/// alone: `Some(true)` for the passing body (no check returned info), `Some(false)` for
/// the failing one (reasons withheld, no check overriding the body), `None` otherwise.
/// [`canned`] renders them.
pub(crate) fn is_canned(report: &Report, settings: &RenderSettings) -> Option<bool> {
    if report.passed() {
        return ran(report).all(|check| check.info.is_none()).then_some(true);
    }
    let plain = !settings.expose_reasons
        && !settings.unsafe_stacks
        && report
            .deciding_error()
            .and_then(|error| error.body_override())
            .is_none();
    plain.then_some(false)
}

/// The terminus JSON body [`is_canned`] stands for: what [`render`] gives any report
/// with no info (passing) or nothing to add to the error body (failing).
pub(crate) fn canned(passed: bool, settings: &RenderSettings) -> Bytes {
    let body = if passed {
        &settings.ok_body
    } else {
        &settings.error_body
    };
    Ordered::from(body).to_bytes()
}

/// 200 (or `status_ok`) for pass and warn; for fail the deciding check's own status
/// when it is an error status, else `status_error`. Never a redirect.
pub(crate) fn status_code(report: &Report, settings: &RenderSettings) -> StatusCode {
    if report.passed() {
        return settings.status_ok;
    }
    report
        .deciding_error()
        .and_then(|error| error.status_override())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .filter(|code| code.is_client_error() || code.is_server_error())
        .unwrap_or(settings.status_error)
}

/// A check error's causes as terminus serialises them: errors become `{"message": ...}`
/// objects, with `"stack"` only if `include_stacks` (which no public endpoint should
/// set); details are sent as given. `None` when no causes were attached.
fn causes_json(error: &CheckError, include_stacks: bool) -> Option<Value> {
    match error.causes()? {
        Causes::Details(value) => Some(value.clone()),
        Causes::Errors(causes) => Some(Value::Array(
            causes
                .iter()
                .map(|cause| {
                    let mut object = Map::new();
                    object.insert("message".to_owned(), Value::String(cause.message().to_owned()));
                    if include_stacks {
                        object.insert("stack".to_owned(), Value::String(cause.stack().to_owned()));
                    }
                    Value::Object(object)
                })
                .collect(),
        )),
        // `Causes` may grow: render what is not known yet as its message only.
        _ => None,
    }
}

fn json_bytes(value: &Value) -> Bytes {
    // Serialising a `Value` cannot fail: its keys are strings and it holds no floats
    // that JSON cannot represent (serde_json rejects NaN when building the value).
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

fn ran(report: &Report) -> impl Iterator<Item = &CheckReport> {
    report.checks.iter().filter(|check| !check.excluded)
}

/// terminus's body. Keys keep terminus's order (`status` first, then `info`/`details` or
/// `error`/`details`), which a `serde_json::Map` would sort.
fn terminus_json(
    report: &Report,
    request: &RenderRequest<'_>,
    settings: &RenderSettings,
    listed: Option<usize>,
) -> Bytes {
    if report.passed() {
        let mut body = Ordered::from(&settings.ok_body);
        let (info, left_out) = if request.single {
            let info: Vec<Value> = ran(report)
                .find_map(|check| check.info.clone())
                .into_iter()
                .collect();
            let (mut info, left_out) = take_listed(info, listed);
            (info.pop(), left_out)
        } else {
            let infos: Vec<(String, Value)> = ran(report)
                .filter_map(|check| Some((check.name.to_string(), check.info.clone()?)))
                .collect();
            let (infos, left_out) = take_listed(infos, listed);
            let infos: Map<String, Value> = infos.into_iter().collect();
            ((!infos.is_empty()).then_some(Value::Object(infos)), left_out)
        };
        match info {
            Some(Value::Object(fields)) if settings.verbatim => {
                for (key, value) in fields {
                    body.insert(key, value);
                }
            }
            Some(info) => {
                body.insert("info".to_owned(), info.clone());
                body.insert("details".to_owned(), info);
            }
            None => {}
        }
        note_left_out(&mut body, left_out, "info");
        return body.to_bytes();
    }

    let deciding = report.deciding_error();
    let mut body = match deciding.and_then(|error| error.body_override()) {
        Some(Value::Object(fields)) => Ordered::from(fields),
        // A non-object override cannot take `error`/`details`: send it as it is.
        Some(other) => return json_bytes(other),
        None => Ordered::from(&settings.error_body),
    };
    if settings.expose_reasons || settings.unsafe_stacks {
        let reason = |check: &CheckReport| {
            check.error.as_ref().map(|error| {
                causes_json(error, settings.unsafe_stacks)
                    .unwrap_or_else(|| json!({ "message": error.message() }))
            })
        };
        let (error, left_out) = if request.single {
            let error: Vec<Value> = ran(report).find_map(reason).into_iter().collect();
            let (mut error, left_out) = take_listed(error, listed);
            (error.pop(), left_out)
        } else {
            let reasons: Vec<(String, Value)> = ran(report)
                .filter_map(|check| Some((check.name.to_string(), reason(check)?)))
                .collect();
            let (reasons, left_out) = take_listed(reasons, listed);
            let reasons: Map<String, Value> = reasons.into_iter().collect();
            ((!reasons.is_empty()).then_some(Value::Object(reasons)), left_out)
        };
        if let Some(error) = error {
            body.insert("error".to_owned(), error.clone());
            body.insert("details".to_owned(), error);
        }
        note_left_out(&mut body, left_out, "failure reason");
    }
    body.to_bytes()
}

/// `"truncated": "3 checks' failure reasons not listed: ..."` when some were left out.
fn note_left_out(body: &mut Ordered, left_out: usize, what: &str) {
    if left_out > 0 {
        body.insert(
            "truncated".to_owned(),
            Value::String(format!("{left_out} checks' {what} {LEFT_OUT}")),
        );
    }
}

/// A JSON object that keeps its keys in insertion order.
struct Ordered(Vec<(String, Value)>);

impl Ordered {
    fn from(map: &Map<String, Value>) -> Ordered {
        // `status` first, as in terminus's default bodies; the rest as the map has them.
        let mut entries: Vec<(String, Value)> = map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        entries.sort_by_key(|(key, _)| key != "status");
        Ordered(entries)
    }

    /// Replaces the value of `key`, or appends it (JavaScript's `Object.assign`).
    fn insert(&mut self, key: String, value: Value) {
        match self.0.iter_mut().find(|(existing, _)| *existing == key) {
            Some((_, slot)) => *slot = value,
            None => self.0.push((key, value)),
        }
    }

    fn to_bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(64);
        out.push(b'{');
        for (index, (key, value)) in self.0.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            // Writing into a Vec cannot fail, and a `Value` or `str` always serialises.
            let _ = serde_json::to_writer(&mut out, key);
            out.push(b':');
            let _ = serde_json::to_writer(&mut out, value);
        }
        out.push(b'}');
        Bytes::from(out)
    }
}

fn kubernetes_text(
    report: &Report,
    request: &RenderRequest<'_>,
    settings: &RenderSettings,
    listed: Option<usize>,
) -> String {
    let passed = report.passed();
    if passed && !request.verbose {
        return "ok".to_owned();
    }
    // Always verbose on failure, as kube-apiserver is.
    let mut out = String::new();
    if request.show_gate {
        if report.gate.passed {
            let _ = writeln!(out, "[+]{LIFECYCLE_CHECK} ok");
        } else {
            let reason = if settings.expose_reasons {
                report.gate.reason.as_ref()
            } else {
                "reason withheld"
            };
            let _ = writeln!(out, "[-]{LIFECYCLE_CHECK} failed: {reason}");
        }
    }
    let failed_line = |check: &CheckReport, error: &CheckError| {
        let reason = if settings.expose_reasons {
            error.message()
        } else {
            "reason withheld"
        };
        let non_critical = if check.critical { "" } else { " (non-critical)" };
        format!("[-]{} failed{non_critical}: {reason}\n", check.name)
    };
    match listed {
        None => {
            for check in &report.checks {
                match (&check.error, check.excluded) {
                    (_, true) => {
                        let _ = writeln!(out, "[+]{} excluded: ok", check.name);
                    }
                    (None, false) => {
                        let _ = writeln!(out, "[+]{} ok", check.name);
                    }
                    (Some(error), false) => out.push_str(&failed_line(check, error)),
                }
            }
        }
        // Too long to list everything: the failures first, as many as `listed`, and a
        // count of the rest.
        Some(listed) => {
            let failed: Vec<_> = ran(report)
                .filter_map(|check| Some((check, check.error.as_ref()?)))
                .collect();
            let (failed, failed_left_out) = take_listed(failed, Some(listed));
            for (check, error) in failed {
                out.push_str(&failed_line(check, error));
            }
            let others = report
                .checks
                .iter()
                .filter(|check| check.excluded || check.error.is_none());
            let others = others.count();
            if others > 0 {
                let _ = writeln!(out, "[+]{others} more checks ok or excluded: {LEFT_OUT}");
            }
            if failed_left_out > 0 {
                let _ = writeln!(out, "[-]{failed_left_out} more checks failed: {LEFT_OUT}");
            }
        }
    }
    if !report.unknown_excluded.is_empty() {
        let names: Vec<String> = report
            .unknown_excluded
            .iter()
            .map(|name| format!("{name:?}"))
            .collect();
        let _ = writeln!(
            out,
            "warn: some health checks cannot be excluded: no matches for {}",
            names.join(",")
        );
    }
    let verdict = if passed { "passed" } else { "failed" };
    let _ = writeln!(out, "{} check {verdict}", request.name);
    out
}

fn health_json(report: &Report, request: &RenderRequest<'_>, settings: &RenderSettings) -> Value {
    let mut checks = Map::new();
    if request.show_gate {
        let mut entry = Map::new();
        let status = if report.gate.passed {
            HealthStatus::Pass
        } else {
            HealthStatus::Fail
        };
        entry.insert("status".to_owned(), status.as_str().into());
        entry.insert("componentType".to_owned(), "system".into());
        entry.insert("observedValue".to_owned(), report.phase.as_str().into());
        entry.insert(
            "time".to_owned(),
            humantime::format_rfc3339_millis(std::time::SystemTime::now())
                .to_string()
                .into(),
        );
        if !report.gate.passed {
            entry.insert("output".to_owned(), output(&report.gate.reason, settings).into());
        }
        checks.insert(
            LIFECYCLE_CHECK.to_owned(),
            Value::Array(vec![Value::Object(entry)]),
        );
    }
    for check in ran(report) {
        let mut entry = Map::new();
        entry.insert("status".to_owned(), check.status.as_str().into());
        entry.insert("componentType".to_owned(), "component".into());
        if let Some(info) = &check.info {
            entry.insert("observedValue".to_owned(), info.clone());
        }
        entry.insert(
            "time".to_owned(),
            humantime::format_rfc3339_millis(check.observed_at)
                .to_string()
                .into(),
        );
        if let Some(error) = &check.error {
            entry.insert("output".to_owned(), output(error.message(), settings).into());
        }
        checks.insert(check.name.to_string(), Value::Array(vec![Value::Object(entry)]));
    }
    let mut body = Map::new();
    body.insert("status".to_owned(), report.status.as_str().into());
    body.insert("checks".to_owned(), Value::Object(checks));
    if !report.unknown_excluded.is_empty() {
        let notes: Vec<Value> = report
            .unknown_excluded
            .iter()
            .map(|name| Value::String(format!("cannot exclude {name:?}: no such check")))
            .collect();
        body.insert("notes".to_owned(), Value::Array(notes));
    }
    Value::Object(body)
}

fn output<'a>(reason: &'a str, settings: &RenderSettings) -> &'a str {
    if settings.expose_reasons {
        reason
    } else {
        "reason withheld"
    }
}

#[cfg(test)]
mod tests {
    use terminus_core::health::{Check, CheckError};
    use terminus_core::server::ServerExt as _;
    use terminus_core::Terminus;

    use super::*;

    /// A readiness report of `checks` checks, the first `failing` of them failing with a
    /// connection error's message, the others passing with a little info.
    async fn report(checks: usize, failing: usize) -> Report {
        let checks = (0..checks).map(|index| {
            Check::new(format!("postgres-replica-{index:04}"), move |_| async move {
                if index < failing {
                    return Err(CheckError::new(format!(
                        "error connecting to 10.12.0.{index}:5432: connection refused (os error 111)"
                    )));
                }
                Ok(Some(json!({ "latency_ms": index % 17 })))
            })
            .readiness()
        });
        let terminus = checks
            .fold(Terminus::builder(), |builder, check| builder.check(check))
            .build()
            .unwrap();
        terminus.mark_listeners_bound(); // Serving: readiness runs its checks
        terminus.probe(terminus_core::health::CheckKind::Readiness).await
    }

    fn request(format: ProbeFormat) -> RenderRequest<'static> {
        RenderRequest {
            format,
            name: "readyz",
            verbose: true,
            single: false,
            show_gate: true,
        }
    }

    fn exposed() -> RenderSettings {
        RenderSettings {
            expose_reasons: true,
            ..RenderSettings::default()
        }
    }

    #[tokio::test]
    async fn a_failing_report_too_long_for_the_kubelet_lists_its_failures_first_and_counts_the_rest() {
        let report = report(300, 250).await;
        let text = render(&report, &request(ProbeFormat::Kubernetes), &exposed()).body;
        let text = std::str::from_utf8(&text).unwrap();
        assert!(text.len() <= MAX_BODY, "{} bytes", text.len());
        assert!(
            text.starts_with("[+]lifecycle ok\n[-]postgres-replica-0000 failed: error connecting"),
            "{text}"
        );
        assert!(
            text.contains("[+]50 more checks ok or excluded: not listed"),
            "{text}"
        );
        assert!(text.contains("more checks failed: not listed"), "{text}");
        assert!(text.ends_with("readyz check failed\n"), "{text}");
        // As many failures as fit: one more line (about 95 bytes) would not have.
        assert!(text.len() > MAX_BODY - 150, "only {} bytes", text.len());

        let json = render(&report, &request(ProbeFormat::Terminus), &exposed()).body;
        assert!(json.len() <= MAX_BODY, "{} bytes", json.len());
        let json: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(json["status"], "error");
        assert_eq!(json["error"], json["details"]);
        let listed = json["error"].as_object().unwrap().len();
        assert!(listed > 10 && listed < 250, "{listed}");
        assert_eq!(
            json["truncated"],
            format!("{} checks' failure reason {LEFT_OUT}", 250 - listed)
        );
    }

    #[tokio::test]
    async fn a_passing_report_too_long_for_the_kubelet_lists_fewer_infos() {
        let report = report(600, 0).await;
        let json = render(
            &report,
            &request(ProbeFormat::Terminus),
            &RenderSettings::default(),
        )
        .body;
        assert!(json.len() <= MAX_BODY, "{} bytes", json.len());
        let json: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(json["status"], "ok");
        let listed = json["info"].as_object().unwrap().len();
        assert_eq!(
            json["truncated"],
            format!("{} checks' info {LEFT_OUT}", 600 - listed)
        );

        let text = render(
            &report,
            &request(ProbeFormat::Kubernetes),
            &RenderSettings::default(),
        )
        .body;
        assert_eq!(
            std::str::from_utf8(&text).unwrap(),
            format!("[+]lifecycle ok\n[+]600 more checks ok or excluded: {LEFT_OUT}\nreadyz check passed\n")
        );
    }

    #[tokio::test]
    async fn bodies_that_fit_are_complete() {
        let report = report(40, 20).await;
        for format in [ProbeFormat::Terminus, ProbeFormat::Kubernetes] {
            let body = render(&report, &request(format), &exposed()).body;
            let body = std::str::from_utf8(&body).unwrap();
            assert!(!body.contains("not listed"), "{body}");
            // The last failure is there; Kubernetes text lists the passing checks too.
            assert!(body.contains("postgres-replica-0019"), "{body}");
            if format == ProbeFormat::Kubernetes {
                assert!(body.contains("[+]postgres-replica-0039 ok"), "{body}");
            }
        }
    }
}
