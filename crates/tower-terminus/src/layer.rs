//! [`TerminusLayer`] and its builder: where probes are mounted and how they answer.

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};
use terminus_core::ShutdownController;
use tower_layer::Layer;

use crate::probe::{ProbeKind, ProbeRoutes};
use crate::service::TerminusService;

/// Default liveness path.
pub const DEFAULT_LIVENESS_PATH: &str = "/livez";
/// Default readiness path.
pub const DEFAULT_READINESS_PATH: &str = "/readyz";
/// Default startup path.
pub const DEFAULT_STARTUP_PATH: &str = "/startupz";

/// Applies [`TerminusService`] to a service: probes answered before the inner service
/// runs, in-flight requests counted until their body ends, `Connection: close` on
/// HTTP/1.x responses while draining.
///
/// ```
/// use terminus_core::ShutdownController;
/// use tower_terminus::TerminusLayer;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let controller = ShutdownController::builder().build()?;
/// let layer = TerminusLayer::new(&controller);
/// let custom = TerminusLayer::builder(&controller)
///     .readiness_path("/ready")
///     .disable_startup()
///     .header("x-service", "billing")?
///     .build()?;
/// # let _ = (layer, custom); Ok(()) }
/// ```
#[derive(Clone)]
pub struct TerminusLayer {
    shared: Arc<Shared>,
}

/// What every clone of the service shares.
pub(crate) struct Shared {
    pub(crate) controller: ShutdownController,
    pub(crate) probes: ProbeRoutes,
}

impl TerminusLayer {
    /// The layer with the default probes: `/livez`, `/readyz`, `/startupz`.
    pub fn new(controller: &ShutdownController) -> TerminusLayer {
        TerminusLayer {
            shared: Arc::new(Shared {
                controller: controller.clone(),
                probes: ProbeRoutes {
                    routes: vec![
                        (DEFAULT_LIVENESS_PATH.to_owned(), ProbeKind::Liveness),
                        (DEFAULT_READINESS_PATH.to_owned(), ProbeKind::Readiness),
                        (DEFAULT_STARTUP_PATH.to_owned(), ProbeKind::Startup),
                    ],
                    case_insensitive: false,
                    headers: HeaderMap::new(),
                },
            }),
        }
    }

    /// Configures probe paths and headers; invalid settings are an error from `build()`.
    pub fn builder(controller: &ShutdownController) -> TerminusLayerBuilder {
        TerminusLayerBuilder {
            controller: controller.clone(),
            liveness: Some(DEFAULT_LIVENESS_PATH.to_owned()),
            readiness: Some(DEFAULT_READINESS_PATH.to_owned()),
            startup: Some(DEFAULT_STARTUP_PATH.to_owned()),
            healthz: false,
            case_insensitive: false,
            headers: HeaderMap::new(),
        }
    }

    /// The controller this layer reports on.
    pub fn controller(&self) -> &ShutdownController {
        &self.shared.controller
    }
}

impl<S> Layer<S> for TerminusLayer {
    type Service = TerminusService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TerminusService::new(inner, Arc::clone(&self.shared))
    }
}

impl fmt::Debug for TerminusLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TerminusLayer")
            .field("probes", &self.shared.probes)
            .finish_non_exhaustive()
    }
}

/// Builds a [`TerminusLayer`]; see [`TerminusLayer::builder`].
#[derive(Debug)]
#[must_use = "a builder does nothing until build() is called"]
pub struct TerminusLayerBuilder {
    controller: ShutdownController,
    liveness: Option<String>,
    readiness: Option<String>,
    startup: Option<String>,
    healthz: bool,
    case_insensitive: bool,
    headers: HeaderMap,
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

    /// Matches probe paths ignoring ASCII case (default: exact, case-sensitive).
    pub fn case_insensitive(mut self, enabled: bool) -> Self {
        self.case_insensitive = enabled;
        self
    }

    /// Adds a header to every probe response, including those sent while shutting down.
    /// An invalid name or value is an error naming the field `headers`.
    pub fn header(mut self, name: &str, value: &str) -> Result<Self, ProbeConfigError> {
        let name = HeaderName::try_from(name)
            .map_err(|_| ProbeConfigError::new("headers", format!("invalid header name `{name}`")))?;
        let value = HeaderValue::try_from(value)
            .map_err(|_| ProbeConfigError::new("headers", format!("invalid value for header `{name}`")))?;
        self.headers.append(name, value);
        Ok(self)
    }

    /// Validates the paths and creates the layer.
    pub fn build(self) -> Result<TerminusLayer, ProbeConfigError> {
        let mut routes: Vec<(String, ProbeKind)> = Vec::new();
        let candidates = [
            ("liveness_path", self.liveness, ProbeKind::Liveness),
            ("readiness_path", self.readiness, ProbeKind::Readiness),
            ("startup_path", self.startup, ProbeKind::Startup),
            (
                "healthz_alias",
                self.healthz.then(|| "/healthz".to_owned()),
                ProbeKind::Readiness,
            ),
        ];
        for (field, path, kind) in candidates {
            let Some(path) = path else { continue };
            if !path.starts_with('/') {
                return Err(ProbeConfigError::new(
                    field,
                    format!("path `{path}` must start with `/`"),
                ));
            }
            if path.contains('?') || path.contains('#') {
                return Err(ProbeConfigError::new(
                    field,
                    format!("path `{path}` must not contain a query or fragment"),
                ));
            }
            let clash = routes.iter().any(|(existing, _)| {
                if self.case_insensitive {
                    existing.eq_ignore_ascii_case(&path)
                } else {
                    *existing == path
                }
            });
            if clash {
                return Err(ProbeConfigError::new(
                    field,
                    format!("path `{path}` is already used by another probe"),
                ));
            }
            routes.push((path, kind));
        }
        Ok(TerminusLayer {
            shared: Arc::new(Shared {
                controller: self.controller,
                probes: ProbeRoutes {
                    routes,
                    case_insensitive: self.case_insensitive,
                    headers: self.headers,
                },
            }),
        })
    }
}

/// An invalid probe setting: which field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfigError {
    field: &'static str,
    message: String,
}

impl ProbeConfigError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        ProbeConfigError {
            field,
            message: message.into(),
        }
    }

    /// The builder field at fault, e.g. `readiness_path`.
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl fmt::Display for ProbeConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid probe configuration: {}: {}", self.field, self.message)
    }
}

impl std::error::Error for ProbeConfigError {}
