//! [`TerminusLayer`] and its builder: where probes are mounted and how they answer.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::{Map, Value};
use terminus_core::health::CheckKind;
use terminus_core::{ConfigError, Terminus};
use tower_layer::Layer;

use crate::probe::{ProbeRoutes, Route, Target};
use crate::render::{ProbeFormat, RenderSettings};
use crate::service::{LayerState, TerminusService};

/// Default liveness path.
pub const DEFAULT_LIVENESS_PATH: &str = "/livez";
/// Default readiness path.
pub const DEFAULT_READINESS_PATH: &str = "/readyz";
/// Default startup path.
pub const DEFAULT_STARTUP_PATH: &str = "/startupz";
/// The path of the optional readiness alias.
pub const HEALTHZ_PATH: &str = "/healthz";

/// Applies [`TerminusService`] to a service: probes answered before the inner service
/// runs, requests counted in flight until their body ends (unless the server counts
/// them itself), `Connection: close` on HTTP/1.x responses while draining.
///
/// Put it outermost in a `ServiceBuilder` stack (first `.layer(..)`), or around the
/// whole router: probes then skip tracing, compression, CORS and timeouts.
///
/// ```
/// use tower_terminus::health::Check;
/// use tower_terminus::{ProbeFormat, Terminus, TerminusLayer};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let terminus = Terminus::builder()
///     .check(Check::new("db", |_| async { Ok(None) }))
///     .build()?;
/// let layer = TerminusLayer::new(&terminus);
/// let custom = TerminusLayer::builder(&terminus)
///     .readiness_path("/ready")
///     .disable_startup()
///     .custom_path("/health", ["db"])        // terminus's healthChecks: { '/health': ... }
///     .default_format(ProbeFormat::Kubernetes)
///     .header("x-service", "billing")?
///     .build()?;
/// # let _ = (layer, custom); Ok(()) }
/// ```
#[derive(Clone)]
pub struct TerminusLayer {
    state: Arc<LayerState>,
}

impl TerminusLayer {
    /// The layer with the default probes: `/livez`, `/readyz`, `/startupz` (and
    /// `/readyz/<check>` and so on), terminus JSON bodies, reasons withheld.
    pub fn new(terminus: &Terminus) -> TerminusLayer {
        TerminusLayer::builder(terminus).assemble()
    }

    /// Configures probe paths, bodies and headers; invalid settings are an error from `build()`.
    pub fn builder(terminus: &Terminus) -> TerminusLayerBuilder {
        TerminusLayerBuilder {
            terminus: terminus.clone(),
            liveness: Some(DEFAULT_LIVENESS_PATH.to_owned()),
            readiness: Some(DEFAULT_READINESS_PATH.to_owned()),
            startup: Some(DEFAULT_STARTUP_PATH.to_owned()),
            healthz: false,
            custom: Vec::new(),
            case_insensitive: false,
            per_check_paths: true,
            headers: HeaderMap::new(),
            header_error: None,
            render: RenderSettings::default(),
            ok_body: None,
            error_body: None,
            status_ok: None,
            status_error: None,
            fail_during_shutdown: true,
            on_failure_during_shutdown: None,
        }
    }

    /// The `Terminus` this layer reports on.
    pub fn terminus(&self) -> &Terminus {
        &self.state.terminus
    }
}

impl<S> Layer<S> for TerminusLayer {
    type Service = TerminusService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TerminusService::new(inner, Arc::clone(&self.state))
    }
}

impl fmt::Debug for TerminusLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TerminusLayer")
            .field("probes", &self.state.probes)
            .finish_non_exhaustive()
    }
}

type Hook = Arc<dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Builds a [`TerminusLayer`]; see [`TerminusLayer::builder`]. Every setting is checked
/// by [`build`](TerminusLayerBuilder::build), which names the field at fault.
#[must_use = "a builder does nothing until build() is called"]
pub struct TerminusLayerBuilder {
    terminus: Terminus,
    liveness: Option<String>,
    readiness: Option<String>,
    startup: Option<String>,
    healthz: bool,
    custom: Vec<(String, Vec<String>)>,
    case_insensitive: bool,
    per_check_paths: bool,
    headers: HeaderMap,
    header_error: Option<ConfigError>,
    render: RenderSettings,
    ok_body: Option<Value>,
    error_body: Option<Value>,
    status_ok: Option<u16>,
    status_error: Option<u16>,
    fail_during_shutdown: bool,
    on_failure_during_shutdown: Option<Hook>,
}

impl fmt::Debug for TerminusLayerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TerminusLayerBuilder")
            .field("liveness", &self.liveness)
            .field("readiness", &self.readiness)
            .field("startup", &self.startup)
            .field("healthz", &self.healthz)
            .field("custom", &self.custom)
            .field("case_insensitive", &self.case_insensitive)
            .field("render", &self.render)
            .finish_non_exhaustive()
    }
}

impl TerminusLayerBuilder {
    /// The liveness path (default `/livez`).
    pub fn liveness_path(mut self, path: impl Into<String>) -> Self {
        self.liveness = Some(path.into());
        self
    }

    /// The readiness path (default `/readyz`).
    pub fn readiness_path(mut self, path: impl Into<String>) -> Self {
        self.readiness = Some(path.into());
        self
    }

    /// The startup path (default `/startupz`).
    pub fn startup_path(mut self, path: impl Into<String>) -> Self {
        self.startup = Some(path.into());
        self
    }

    /// Serves no liveness probe.
    pub fn disable_liveness(mut self) -> Self {
        self.liveness = None;
        self
    }

    /// Serves no readiness probe.
    pub fn disable_readiness(mut self) -> Self {
        self.readiness = None;
        self
    }

    /// Serves no startup probe.
    pub fn disable_startup(mut self) -> Self {
        self.startup = None;
        self
    }

    /// Also answers `/healthz`, as an alias of readiness (default off).
    pub fn healthz_alias(mut self, enabled: bool) -> Self {
        self.healthz = enabled;
        self
    }

    /// A terminus-style path answering with the named checks (registered on the
    /// terminus, of any kind or none): terminus's `healthChecks: { '/health': fn }`.
    /// It fails from Draining on (see
    /// [`send_failures_during_shutdown`](Self::send_failures_during_shutdown)) and is not
    /// affected by startup. `build()` fails (field `custom_path`) on an unknown name.
    pub fn custom_path<I, S>(mut self, path: impl Into<String>, checks: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.custom
            .push((path.into(), checks.into_iter().map(Into::into).collect()));
        self
    }

    /// Matches probe paths ignoring ASCII case (default: exact, case-sensitive;
    /// terminus's `caseInsensitive`).
    pub fn case_insensitive(mut self, enabled: bool) -> Self {
        self.case_insensitive = enabled;
        self
    }

    /// Whether `/readyz/<check>` (and the same under `/livez`, `/startupz`, `/healthz`)
    /// answers for one check alone, as kube-apiserver does (default `true`). Unknown
    /// names get `404`. Turn it off if the application routes paths under a probe path.
    pub fn per_check_paths(mut self, enabled: bool) -> Self {
        self.per_check_paths = enabled;
        self
    }

    /// Adds a header to every probe response, including those sent while shutting down
    /// (terminus's `headers`). An invalid name or value makes `build()` fail naming the
    /// field `headers`.
    pub fn header(mut self, name: &str, value: &str) -> Result<Self, ConfigError> {
        let name = HeaderName::try_from(name)
            .map_err(|_| ConfigError::new("headers", format!("invalid header name `{name}`")))?;
        let value = HeaderValue::try_from(value)
            .map_err(|_| ConfigError::new("headers", format!("invalid value for header `{name}`")))?;
        self.headers.append(name, value);
        Ok(self)
    }

    /// Adds every header of `headers` to every probe response (see [`header`](Self::header)).
    pub fn headers<I, K, V>(mut self, headers: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        for (name, value) in headers {
            let parsed = HeaderName::try_from(name.as_ref())
                .ok()
                .zip(HeaderValue::try_from(value.as_ref()).ok());
            match parsed {
                Some((name, value)) => {
                    self.headers.append(name, value);
                }
                None => {
                    self.header_error.get_or_insert_with(|| {
                        ConfigError::new("headers", format!("invalid header `{}`", name.as_ref()))
                    });
                }
            }
        }
        self
    }

    /// The status of a passing probe (default 200; terminus's `statusOk`). Must be 2xx.
    pub fn status_ok(mut self, status: u16) -> Self {
        self.status_ok = Some(status);
        self
    }

    /// The status of a failing probe (default 503; terminus's `statusError`). Must be
    /// 4xx or 5xx. A failing check's own status (see `CheckError::status`) wins.
    pub fn status_error(mut self, status: u16) -> Self {
        self.status_error = Some(status);
        self
    }

    /// The terminus JSON body of a passing probe (default `{"status":"ok"}`; terminus's
    /// `statusOkResponse`). Must be a JSON object: `info`/`details` are merged into it.
    pub fn ok_body(mut self, body: Value) -> Self {
        self.ok_body = Some(body);
        self
    }

    /// The terminus JSON body of a failing probe (default `{"status":"error"}`;
    /// terminus's `statusErrorResponse`). Must be a JSON object. A failing check's own
    /// body (see `CheckError::body`) wins.
    pub fn error_body(mut self, body: Value) -> Self {
        self.error_body = Some(body);
        self
    }

    /// Merges a passing check's info object into the body instead of nesting it under
    /// `info`/`details` (default `false`; terminus's `healthChecks.verbatim`).
    pub fn verbatim(mut self, enabled: bool) -> Self {
        self.render.verbatim = enabled;
        self
    }

    /// The body format when the request does not ask for one (default
    /// [`ProbeFormat::Terminus`]). `?verbose` always gives Kubernetes text and an
    /// `Accept: application/health+json` header always gives health+json.
    pub fn default_format(mut self, format: ProbeFormat) -> Self {
        self.render.default_format = format;
        self
    }

    /// Puts failure reasons in probe bodies: check messages and causes (terminus's
    /// `error`/`details`), the lifecycle's reason, `[-]db failed: <message>`. Default
    /// `false`: bodies say only which check failed, and reasons go to the log. Enable it
    /// on an admin listener, not on a port the internet reaches.
    pub fn expose_failure_reasons(mut self, enabled: bool) -> Self {
        self.render.expose_reasons = enabled;
        self
    }

    /// Also puts each cause's debug representation and source chain in terminus JSON
    /// bodies, as `stack` (terminus's `__unsafeExposeStackTraces`). Implies
    /// [`expose_failure_reasons`](Self::expose_failure_reasons). Unsafe for any endpoint
    /// a stranger can reach; default `false`.
    pub fn unsafe_expose_stack_traces(mut self, enabled: bool) -> Self {
        self.render.unsafe_stacks = enabled;
        if enabled {
            self.render.expose_reasons = true;
        }
        self
    }

    /// Whether [custom paths](Self::custom_path) fail as soon as shutdown begins, without
    /// running their checks (default `true`; terminus's `sendFailuresDuringShutdown`).
    /// The readiness probe fails while draining whatever this says.
    pub fn send_failures_during_shutdown(mut self, enabled: bool) -> Self {
        self.fail_during_shutdown = enabled;
        self
    }

    /// Runs `hook` before a probe answers a failure because shutdown began (terminus's
    /// `onSendFailureDuringShutdown`), bounded by 500 ms; a panic in it is contained.
    pub fn on_send_failure_during_shutdown<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_failure_during_shutdown = Some(Arc::new(move || Box::pin(hook())));
        self
    }

    /// Validates every setting and creates the layer.
    pub fn build(mut self) -> Result<TerminusLayer, ConfigError> {
        if let Some(error) = self.header_error.take() {
            return Err(error);
        }
        if let Some(code) = self.status_ok {
            self.render.status_ok = status("status_ok", code, |s| s.is_success(), "must be 2xx")?;
        }
        if let Some(code) = self.status_error {
            self.render.status_error = status(
                "status_error",
                code,
                |s| s.is_client_error() || s.is_server_error(),
                "must be 4xx or 5xx",
            )?;
        }
        if let Some(body) = self.ok_body.take() {
            self.render.ok_body = object("ok_body", body)?;
        }
        if let Some(body) = self.error_body.take() {
            self.render.error_body = object("error_body", body)?;
        }

        let mut paths: Vec<(&'static str, &str)> = Vec::new();
        let builtin = [
            ("liveness_path", &self.liveness),
            ("readiness_path", &self.readiness),
            ("startup_path", &self.startup),
        ];
        for (field, path) in builtin {
            if let Some(path) = path {
                paths.push((field, path));
            }
        }
        if self.healthz {
            paths.push(("healthz_alias", HEALTHZ_PATH));
        }
        for (path, _) in &self.custom {
            paths.push(("custom_path", path));
        }
        for (index, (field, path)) in paths.iter().enumerate() {
            validate_path(field, path)?;
            let clash = paths[..index].iter().any(|(_, existing)| {
                if self.case_insensitive {
                    existing.eq_ignore_ascii_case(path)
                } else {
                    existing == path
                }
            });
            if clash {
                return Err(ConfigError::new(
                    field,
                    format!("path `{path}` is already used by another probe"),
                ));
            }
        }
        let health = self.terminus.health();
        for (path, names) in &self.custom {
            if names.is_empty() {
                return Err(ConfigError::new(
                    "custom_path",
                    format!("path `{path}` names no check"),
                ));
            }
            if let Some(unknown) = names.iter().find(|name| !health.contains(name)) {
                return Err(ConfigError::new(
                    "custom_path",
                    format!("path `{path}` names the check `{unknown}`, which is not registered on the `Terminus`"),
                ));
            }
        }
        Ok(self.assemble())
    }

    /// Creates the layer from settings already known to be valid.
    fn assemble(self) -> TerminusLayer {
        let health = self.terminus.health();
        let kind_route = |path: &Option<String>, name: &str, kind: CheckKind| {
            path.as_ref().map(|path| Route {
                path: path.clone(),
                name: name.to_owned(),
                target: Target::BuiltIn(kind),
                single: health
                    .names()
                    .filter(|check| health.contains_kind(kind, check))
                    .count()
                    == 1,
            })
        };
        let mut routes: Vec<Route> = [
            kind_route(&self.liveness, CheckKind::Liveness.name(), CheckKind::Liveness),
            kind_route(&self.readiness, CheckKind::Readiness.name(), CheckKind::Readiness),
            kind_route(&self.startup, CheckKind::Startup.name(), CheckKind::Startup),
            kind_route(
                &self.healthz.then(|| HEALTHZ_PATH.to_owned()),
                "healthz",
                CheckKind::Readiness,
            ),
        ]
        .into_iter()
        .flatten()
        .collect();
        for (path, names) in self.custom {
            routes.push(Route {
                name: path.trim_start_matches('/').to_owned(),
                path,
                single: names.len() == 1,
                target: Target::Checks(names.into()),
            });
        }
        let probes = Arc::new(
            ProbeRoutes {
                routes,
                case_insensitive: self.case_insensitive,
                per_check_paths: self.per_check_paths,
                headers: self.headers,
                render: self.render,
                fail_during_shutdown: self.fail_during_shutdown,
                on_failure_during_shutdown: self.on_failure_during_shutdown,
                canned: Default::default(),
                quick: Default::default(),
            }
            .prepared(),
        );
        TerminusLayer {
            state: Arc::new(LayerState {
                terminus: self.terminus,
                probes,
            }),
        }
    }
}

fn validate_path(field: &'static str, path: &str) -> Result<(), ConfigError> {
    if !path.starts_with('/') {
        return Err(ConfigError::new(
            field,
            format!("path `{path}` must start with `/`"),
        ));
    }
    if path.contains('?') || path.contains('#') {
        return Err(ConfigError::new(
            field,
            format!("path `{path}` must not contain a query or fragment"),
        ));
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::new(
            field,
            format!("path `{path}` must not contain spaces or control characters"),
        ));
    }
    Ok(())
}

fn status(
    field: &'static str,
    code: u16,
    allowed: impl Fn(StatusCode) -> bool,
    rule: &str,
) -> Result<StatusCode, ConfigError> {
    StatusCode::from_u16(code)
        .ok()
        .filter(|status| allowed(*status))
        .ok_or_else(|| ConfigError::new(field, format!("{code} {rule} (a probe never redirects)")))
}

fn object(field: &'static str, body: Value) -> Result<Map<String, Value>, ConfigError> {
    match body {
        Value::Object(map) => Ok(map),
        other => Err(ConfigError::new(
            field,
            format!("must be a JSON object, got `{other}`"),
        )),
    }
}
