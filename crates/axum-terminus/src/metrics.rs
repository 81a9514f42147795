//! The server's facts as metrics (feature `metrics`), next to the lifecycle's (see
//! `terminus_core::metrics`): `terminus_connections_open` (gauge) and
//! `terminus_connections_cut_total` (counter), and
//! `terminus_connections_closed_total{reason}` (counter) for connections ended while
//! serving: `header_timeout`, `idle` (the keep-alive timeout), `age`, `max_requests`,
//! `age_grace_cut` (still busy past the maximum age and its grace). Per connection, not per request, so the
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

/// A connection was told to finish (or closed) while serving, for `reason`.
#[cfg_attr(not(feature = "metrics"), allow(unused_variables))]
pub(crate) fn connection_retired(reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("terminus_connections_closed_total", "reason" => reason).increment(1);
}
