//! What every connection of a server shares: the `Terminus`, hyper's builders and the
//! HTTP versions spoken.

use hyper::server::conn::{http1, http2};
use hyper_util::rt::TokioExecutor;
use terminus_core::Terminus;

/// Which HTTP versions a server speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Versions {
    /// Both, told apart by the HTTP/2 preface.
    #[default]
    Both,
    Http1Only,
    Http2Only,
}

/// What every connection of a server shares.
pub(crate) struct Settings {
    pub(crate) terminus: Terminus,
    pub(crate) http1: http1::Builder,
    pub(crate) http2: http2::Builder<TokioExecutor>,
    pub(crate) versions: Versions,
    pub(crate) connect_info: bool,
}
