//! Probe paths: which request is a probe, what it asks for, and the answer it gets.
//!
//! The request path pays for one comparison per probe path (plus one prefix test per
//! built-in probe for `/readyz/<check>`); everything else here runs for probes only.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use terminus_core::health::{CheckKind, ProbeRequest, Report, DEFAULT_CHECK_TIMEOUT, LIFECYCLE_CHECK};
use terminus_core::Terminus;
use tokio_util::task::AbortOnDropHandle;

use crate::render::{self, ProbeFormat, RenderRequest, RenderSettings, CONTENT_TYPE_JSON, CONTENT_TYPE_TEXT};

/// The answer to a probe, once the checks have run.
///
/// Most probes find every result they need fresh in the cache: they are answered on the
/// spot, without boxing a future. Only a probe that must wait (a check to run, the
/// shutdown hook) pays for the allocation.
pub(crate) enum ProbeFuture {
    /// The answer, taken by the first poll.
    Ready(Option<Response<Bytes>>),
    /// Checks or the shutdown hook still to wait for.
    Waiting(Pin<Box<dyn Future<Output = Response<Bytes>> + Send + 'static>>),
}

impl Future for ProbeFuture {
    type Output = Response<Bytes>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response<Bytes>> {
        match self.get_mut() {
            ProbeFuture::Ready(response) => match response.take() {
                Some(response) => Poll::Ready(response),
                // Polled again after `Ready`: the caller broke the `Future` contract.
                // Answer a bare 500 rather than panic in the request path.
                None => {
                    let mut response = Response::new(Bytes::new());
                    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                    Poll::Ready(response)
                }
            },
            ProbeFuture::Waiting(future) => future.as_mut().poll(cx),
        }
    }
}

/// The terminus JSON answers that do not depend on the checks' results, rendered with
/// their headers once, when the layer is built, and cloned (reference counts, no
/// serialisation) for every probe that gets one: passing without any check info, and
/// failing with reasons withheld and no check overriding the body.
#[derive(Clone, Debug, Default)]
pub(crate) struct Canned {
    ok_body: Bytes,
    ok_headers: HeaderMap,
    error_body: Bytes,
    error_headers: HeaderMap,
}

type Hook = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// What a probe path reports on.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// A built-in probe: `/livez`, `/readyz`, `/startupz`, `/healthz`.
    BuiltIn(CheckKind),
    /// A terminus-style path running the named checks.
    Checks(Arc<[String]>),
}

#[derive(Clone, Debug)]
pub(crate) struct Route {
    pub(crate) path: String,
    /// The name in Kubernetes text: `readyz`, or the custom path without its slash.
    pub(crate) name: String,
    pub(crate) target: Target,
    /// The route runs exactly one check (terminus JSON then unwraps its info and causes).
    pub(crate) single: bool,
}

/// Which route a request hit.
#[derive(Debug)]
pub(crate) enum Matched<'a> {
    Route(&'a Route),
    /// `/readyz/<name>`: one check of a built-in probe. The name is still encoded.
    Check(&'a Route, &'a str),
}

/// The probe paths, how they are matched, and how they answer.
#[derive(Clone)]
pub(crate) struct ProbeRoutes {
    pub(crate) routes: Vec<Route>,
    pub(crate) case_insensitive: bool,
    pub(crate) per_check_paths: bool,
    pub(crate) headers: HeaderMap,
    pub(crate) render: RenderSettings,
    pub(crate) fail_during_shutdown: bool,
    pub(crate) on_failure_during_shutdown: Option<Hook>,
    /// Filled by [`ProbeRoutes::prepared`] from the settings above.
    pub(crate) canned: Canned,
    /// Filled by [`ProbeRoutes::prepared`]: what lets `find` turn away almost every
    /// application request after two comparisons.
    pub(crate) quick: QuickReject,
}

/// The length of the shortest probe path, and the bytes a probe path can have after
/// its leading `/`. A request path that is shorter, or whose second byte is not one of
/// them, is no probe: `/`, `/api/...` and nearly every application path are turned
/// away without comparing any string.
#[derive(Clone, Debug, Default)]
pub(crate) struct QuickReject {
    shortest: usize,
    second_bytes: [u64; 4],
}

impl QuickReject {
    fn new(routes: &[Route], case_insensitive: bool) -> QuickReject {
        let mut quick = QuickReject {
            shortest: routes
                .iter()
                .map(|route| route.path.len())
                .min()
                .unwrap_or(usize::MAX),
            second_bytes: [0; 4],
        };
        for route in routes {
            if let Some(&byte) = route.path.as_bytes().get(1) {
                quick.insert(byte);
                if case_insensitive {
                    quick.insert(byte.to_ascii_lowercase());
                    quick.insert(byte.to_ascii_uppercase());
                }
            }
        }
        quick
    }

    fn insert(&mut self, byte: u8) {
        self.second_bytes[usize::from(byte / 64)] |= 1 << (byte % 64);
    }

    #[inline]
    fn may_match(&self, path: &[u8]) -> bool {
        path.len() >= self.shortest
            && path
                .get(1)
                .is_some_and(|&byte| self.second_bytes[usize::from(byte / 64)] & (1 << (byte % 64)) != 0)
    }
}

impl std::fmt::Debug for ProbeRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeRoutes")
            .field("routes", &self.routes)
            .field("case_insensitive", &self.case_insensitive)
            .field("per_check_paths", &self.per_check_paths)
            .field("headers", &self.headers)
            .field("render", &self.render)
            .field("fail_during_shutdown", &self.fail_during_shutdown)
            .finish_non_exhaustive()
    }
}

impl ProbeRoutes {
    /// These routes with their [`Canned`] answers rendered: call once the settings are final.
    pub(crate) fn prepared(mut self) -> ProbeRoutes {
        // The same code renders them as renders every other answer, so they cannot
        // differ from what a probe would have rendered itself.
        let ok_body = render::canned(true, &self.render);
        let error_body = render::canned(false, &self.render);
        let ok_headers = self
            .finish(self.render.status_ok, CONTENT_TYPE_JSON, ok_body.clone(), false)
            .into_parts()
            .0
            .headers;
        let error_headers = self
            .finish(
                self.render.status_error,
                CONTENT_TYPE_JSON,
                error_body.clone(),
                false,
            )
            .into_parts()
            .0
            .headers;
        self.canned = Canned {
            ok_body,
            ok_headers,
            error_body,
            error_headers,
        };
        self.quick = QuickReject::new(&self.routes, self.case_insensitive);
        self
    }

    fn same(&self, route: &str, path: &str) -> bool {
        if self.case_insensitive {
            route.eq_ignore_ascii_case(path)
        } else {
            route == path
        }
    }

    /// The probe at `path`, matched on the path alone (the query string is not part of it).
    #[inline]
    pub(crate) fn find<'a>(&'a self, path: &'a str) -> Option<Matched<'a>> {
        if !self.quick.may_match(path.as_bytes()) {
            return None;
        }
        for route in &self.routes {
            if self.same(&route.path, path) {
                return Some(Matched::Route(route));
            }
        }
        if !self.per_check_paths {
            return None;
        }
        self.routes.iter().find_map(|route| {
            if !matches!(route.target, Target::BuiltIn(_)) {
                return None;
            }
            let prefix = path.get(..route.path.len())?;
            let rest = path[route.path.len()..].strip_prefix('/')?;
            (self.same(&route.path, prefix) && !rest.is_empty()).then_some(Matched::Check(route, rest))
        })
    }

    /// The complete answer to a probe request. Never calls the application.
    pub(crate) fn answer<B>(
        self: &Arc<Self>,
        matched: Matched<'_>,
        request: &Request<B>,
        terminus: &Terminus,
    ) -> ProbeFuture {
        let method = request.method();
        let head = *method == Method::HEAD;
        if *method != Method::GET && !head {
            let response = self.finish(
                StatusCode::METHOD_NOT_ALLOWED,
                CONTENT_TYPE_JSON,
                Bytes::from_static(br#"{"status":"error","error":"method not allowed"}"#),
                false,
            );
            return ProbeFuture::Ready(Some(response));
        }

        let query = Query::parse(request.uri().query().unwrap_or(""));
        let format = if accepts_health_json(request.headers()) {
            ProbeFormat::HealthJson
        } else if query.verbose {
            ProbeFormat::Kubernetes
        } else {
            self.render.default_format
        };
        let (route, probe, single, show_gate) = match matched {
            Matched::Route(route) => match &route.target {
                Target::BuiltIn(kind) => (route, ProbeRequest::kind(*kind), route.single, true),
                Target::Checks(names) => (
                    route,
                    ProbeRequest::checks(names.iter().cloned())
                        .fail_during_shutdown(self.fail_during_shutdown),
                    route.single,
                    true,
                ),
            },
            Matched::Check(route, encoded) => {
                let Target::BuiltIn(kind) = route.target else {
                    return ProbeFuture::Ready(Some(self.not_found(head)));
                };
                // A path segment: `%XX` decoded, `+` is a plus (RFC 3986, not a form).
                let name = percent_encoding::percent_decode_str(encoded)
                    .decode_utf8_lossy()
                    .into_owned();
                let known = name == LIFECYCLE_CHECK || terminus.health().contains_kind(kind, &name);
                if !known {
                    return ProbeFuture::Ready(Some(self.not_found(head)));
                }
                let gate_only = name == LIFECYCLE_CHECK;
                (route, ProbeRequest::single(kind, name), true, gate_only)
            }
        };
        let probe = query.exclude.into_iter().fold(probe, ProbeRequest::exclude);
        let render_request = RenderRequest {
            format,
            name: &route.name,
            verbose: query.verbose,
            single,
            show_gate,
        };

        // Every result fresh in the cache: answer now, without a task or a boxed future.
        let probing = terminus.probe(probe).now();
        if let Ok(report) = &probing {
            if !self.runs_failure_hook(report) {
                return ProbeFuture::Ready(Some(self.respond(report, &render_request, head)));
            }
        }

        let routes = Arc::clone(self);
        let name = route.name.clone();
        ProbeFuture::Waiting(Box::pin(async move {
            let report = match probing {
                Ok(report) => report,
                Err(running) => running.await,
            };
            routes.failure_during_shutdown(&report).await;
            let request = RenderRequest {
                format,
                name: &name,
                verbose: query.verbose,
                single,
                show_gate,
            };
            routes.respond(&report, &request, head)
        }))
    }

    /// The response to `report`: a canned answer when it has one, else rendered.
    fn respond(&self, report: &Report, request: &RenderRequest<'_>, head: bool) -> Response<Bytes> {
        if request.format == ProbeFormat::Terminus {
            if let Some(passed) = render::is_canned(report, &self.render) {
                let canned = &self.canned;
                let (body, headers) = if passed {
                    (&canned.ok_body, &canned.ok_headers)
                } else {
                    (&canned.error_body, &canned.error_headers)
                };
                // HEAD: the same status and headers (Content-Length included), no body.
                let mut response = Response::new(if head { Bytes::new() } else { body.clone() });
                *response.status_mut() = render::status_code(report, &self.render);
                *response.headers_mut() = headers.clone();
                return response;
            }
        }
        let rendered = render::render(report, request, &self.render);
        self.finish(rendered.status, rendered.content_type, rendered.body, head)
    }

    /// Whether answering `report` runs the `on_send_failure_during_shutdown` hook.
    fn runs_failure_hook(&self, report: &Report) -> bool {
        self.on_failure_during_shutdown.is_some() && !report.passed() && report.gate.shutting_down
    }

    /// terminus's `onSendFailureDuringShutdown`: runs before a probe answers a failure
    /// because shutdown began; bounded, and a panic in it is contained.
    async fn failure_during_shutdown(&self, report: &Report) {
        let Some(hook) = &self.on_failure_during_shutdown else {
            return;
        };
        if !self.runs_failure_hook(report) {
            return;
        }
        // Aborted with the handle: when the deadline passes, and when the client hangs
        // up and the probe's future is dropped.
        let task = AbortOnDropHandle::new(tokio::spawn(hook()));
        match tokio::time::timeout(DEFAULT_CHECK_TIMEOUT, task).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => tracing::warn!(target: "terminus", "on_send_failure_during_shutdown panicked"),
            Err(_) => {
                tracing::warn!(
                    target: "terminus",
                    timeout_ms = DEFAULT_CHECK_TIMEOUT.as_millis() as u64,
                    "on_send_failure_during_shutdown did not finish in time; answering anyway"
                );
            }
        }
    }

    fn not_found(&self, head: bool) -> Response<Bytes> {
        self.finish(
            StatusCode::NOT_FOUND,
            CONTENT_TYPE_TEXT,
            Bytes::from_static(b"404 page not found\n"),
            head,
        )
    }

    /// Status, the probe headers (also while shutting down), and the body unless HEAD.
    fn finish(
        &self,
        status: StatusCode,
        content_type: &'static str,
        body: Bytes,
        head: bool,
    ) -> Response<Bytes> {
        let mut response = Response::new(Bytes::new());
        *response.status_mut() = status;
        let headers = response.headers_mut();
        // Room for every header below, so the map is never grown while filling it.
        headers.reserve(5 + self.headers.len());
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        if status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        // HEAD: the same status and headers (Content-Length included), no body.
        if !head {
            *response.body_mut() = body;
        }
        response
    }
}

/// The probe's query parameters. Anything unexpected is ignored, never an error.
#[derive(Debug, Default, PartialEq, Eq)]
struct Query {
    verbose: bool,
    exclude: Vec<String>,
}

/// More `?exclude=` values than any real configuration has checks; beyond it they are
/// ignored, so a hostile query cannot make a probe slow.
const MAX_EXCLUDES: usize = 64;

impl Query {
    fn parse(query: &str) -> Query {
        let mut parsed = Query::default();
        // `%XX` and `+` decoded form style; malformed escapes are kept as they are and
        // invalid UTF-8 replaced, so garbage decodes to garbage that matches no check.
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "verbose" => parsed.verbose = true,
                "exclude" => {
                    // kube-apiserver takes repeated `exclude`; a comma list is accepted too
                    // (check names cannot contain commas).
                    for name in value.split(',') {
                        if !name.is_empty() && parsed.exclude.len() < MAX_EXCLUDES {
                            parsed.exclude.push(name.to_owned());
                        }
                    }
                }
                _ => {}
            }
        }
        parsed
    }
}

/// Whether `Accept` lists `application/health+json` with a non-zero quality.
fn accepts_health_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("");
            media.eq_ignore_ascii_case(render::CONTENT_TYPE_HEALTH_JSON)
                && !parts.any(|param| {
                    param
                        .strip_prefix("q=")
                        .and_then(|q| q.parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                })
        })
}

#[cfg(test)]
mod tests {
    use terminus_core::health::{Check, CheckError};
    use terminus_core::server::ServerExt as _;

    use super::*;

    #[tokio::test]
    async fn canned_bodies_are_what_rendering_the_report_gives() {
        let settings = RenderSettings {
            ok_body: serde_json::from_str(r#"{"up":true,"status":"fine"}"#).unwrap(),
            error_body: serde_json::from_str(r#"{"down":1,"status":"bad"}"#).unwrap(),
            ..RenderSettings::default()
        };
        let terminus = Terminus::builder()
            .readiness(Check::new("ok", |_| async { Ok(None) }))
            .check(Check::new("bad", |_| async { Err(CheckError::new("down")) }))
            .build()
            .unwrap();
        let request = RenderRequest {
            format: ProbeFormat::Terminus,
            name: "readyz",
            verbose: false,
            single: false,
            show_gate: true,
        };
        for (names, passed) in [(["ok"], true), (["bad"], false)] {
            let report = terminus.probe(ProbeRequest::checks(names)).await;
            assert_eq!(render::is_canned(&report, &settings), Some(passed));
            let rendered = render::render(&report, &request, &settings);
            assert_eq!(rendered.body, render::canned(passed, &settings));
        }
    }

    #[tokio::test]
    async fn a_probe_with_every_result_cached_is_answered_on_its_first_poll() {
        use std::task::Waker;
        use tower::{Layer, Service};

        let terminus = Terminus::builder()
            .readiness(Check::new("db", |_| async { Ok(None) }))
            .build()
            .unwrap();
        terminus.mark_listeners_bound();
        let app = tower::service_fn(|_: Request<()>| async {
            Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Empty::<Bytes>::new()))
        });
        let mut service = crate::TerminusLayer::new(&terminus).layer(app);
        let readyz = || Request::get("/readyz").body(()).unwrap();
        let mut cx = Context::from_waker(Waker::noop());

        let mut first = Box::pin(service.call(readyz()));
        assert!(
            first.as_mut().poll(&mut cx).is_pending(),
            "the check has not run yet"
        );
        let first = first.await.unwrap();
        let mut second = Box::pin(service.call(readyz()));
        let Poll::Ready(second) = second.as_mut().poll(&mut cx) else {
            panic!("a cached probe waited");
        };
        let second = second.unwrap();
        assert_eq!(first.status(), second.status());
        assert_eq!(first.headers(), second.headers());
    }

    #[test]
    fn quick_reject_turns_away_application_paths_and_keeps_every_probe_path() {
        let route = |path: &str| Route {
            path: path.to_owned(),
            name: String::new(),
            target: Target::BuiltIn(CheckKind::Readiness),
            single: false,
        };
        let routes = [route("/livez"), route("/readyz"), route("/Health")];
        let quick = QuickReject::new(&routes, false);
        for path in ["/", "/api/users", "/lives", "/livex/long/enough"] {
            assert_eq!(
                quick.may_match(path.as_bytes()),
                path.starts_with("/l") && path.len() >= 6,
                "{path}"
            );
        }
        for path in ["/livez", "/readyz/db", "/Health"] {
            assert!(quick.may_match(path.as_bytes()), "{path}");
        }
        assert!(!quick.may_match(b"/health"), "case-sensitive by default");
        assert!(QuickReject::new(&routes, true).may_match(b"/HEALTH"));
        assert!(
            !QuickReject::new(&[], false).may_match(b"/livez"),
            "no probe paths"
        );
    }

    #[test]
    fn query_parsing_never_fails_and_ignores_garbage() {
        assert_eq!(
            Query::parse("verbose&exclude=db&exclude=a%2Cb&exclude=&x=%zz"),
            Query {
                verbose: true,
                exclude: vec!["db".into(), "a".into(), "b".into()],
            }
        );
        assert_eq!(
            Query::parse("&&=&%&exclude=%ff%"),
            Query {
                verbose: false,
                exclude: vec!["\u{fffd}%".into()],
            }
        );
        assert!(
            Query::parse("verbose=false").verbose,
            "presence counts, as in kube-apiserver"
        );
        let many = "exclude=x&".repeat(1000);
        assert_eq!(Query::parse(&many).exclude.len(), MAX_EXCLUDES);
    }

    #[test]
    fn accept_negotiation_honours_zero_quality() {
        let accept = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, HeaderValue::from_static(value));
            accepts_health_json(&headers)
        };
        assert!(accept("application/health+json"));
        assert!(accept("text/plain, Application/Health+JSON;q=0.9"));
        assert!(!accept("application/health+json;q=0"));
        assert!(!accept("*/*"));
        assert!(!accept("application/json"));
    }
}
