//! The server's facts as metrics (feature `metrics`), next to the lifecycle's (see
//! `terminus_core::metrics`): `terminus_connections_open` (gauge) and
//! `terminus_connections_cut_total` (counter). Per connection, not per request, so the
//! facade's lookup on each update costs nothing that matters. Without the feature these
//! compile away.

pub(crate) fn connection_opened() {
    #[cfg(feature = "metrics")]
    metrics::gauge!("terminus_connections_open").increment(1.0);
}

pub(crate) fn connection_closed() {
    #[cfg(feature = "metrics")]
    metrics::gauge!("terminus_connections_open").decrement(1.0);
}

#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn connections_cut(count: usize) {
    #[cfg(feature = "metrics")]
    metrics::counter!("terminus_connections_cut_total").increment(count as u64);
}
