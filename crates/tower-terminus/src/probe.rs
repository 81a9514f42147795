//! Probe paths: which request is a probe, and the answer it gets.

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use terminus_core::ShutdownController;

use crate::body::TerminusBody;

/// What a probe path reports on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProbeKind {
    /// Passes unless a fatal error was set; keeps passing while draining.
    Liveness,
    /// Passes only while serving: fails while starting and from Draining on.
    Readiness,
    /// Passes once startup is done.
    Startup,
}

impl ProbeKind {
    /// The probe's short name as kube-apiserver spells it: `livez`, `readyz`, `startupz`.
    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "livez",
            ProbeKind::Readiness => "readyz",
            ProbeKind::Startup => "startupz",
        }
    }

    fn passes(self, controller: &ShutdownController) -> bool {
        match self {
            ProbeKind::Liveness => controller.is_live(),
            ProbeKind::Readiness => controller.is_ready(),
            ProbeKind::Startup => controller.is_started(),
        }
    }
}

/// The probe paths and how they are matched.
#[derive(Clone, Debug)]
pub(crate) struct ProbeRoutes {
    pub(crate) routes: Vec<(String, ProbeKind)>,
    pub(crate) case_insensitive: bool,
    pub(crate) headers: HeaderMap,
}

impl ProbeRoutes {
    /// The probe at `path`, matched on the path alone (the query string is not part of it).
    pub(crate) fn find(&self, path: &str) -> Option<ProbeKind> {
        self.routes.iter().find_map(|(route, kind)| {
            let hit = if self.case_insensitive {
                route.eq_ignore_ascii_case(path)
            } else {
                route == path
            };
            hit.then_some(*kind)
        })
    }

    /// The complete answer to a probe request. Never calls the application.
    pub(crate) fn answer<B>(
        &self,
        kind: ProbeKind,
        method: &Method,
        controller: &ShutdownController,
    ) -> Response<TerminusBody<B>> {
        let (status, body) = match *method {
            Method::GET | Method::HEAD => {
                if kind.passes(controller) {
                    (StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#))
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        Bytes::from_static(br#"{"status":"error"}"#),
                    )
                }
            }
            _ => (
                StatusCode::METHOD_NOT_ALLOWED,
                Bytes::from_static(br#"{"status":"error","error":"method not allowed"}"#),
            ),
        };
        let mut response = Response::new(());
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
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
        let body = if *method == Method::HEAD {
            Bytes::new()
        } else {
            body
        };
        response.map(|()| TerminusBody::full(body))
    }
}
