//! Which failed HTTP/2 requests a client may send again: those the server never
//! processed.
//!
//! RFC 9113 §8.7 says a request refused by the server's GOAWAY (a stream above its last
//! stream id) or by `REFUSED_STREAM` was not processed and may be retried, whatever its
//! method; hyper-util's, Go's and gRPC's clients do. A request hyper never wrote because
//! its connection had already closed was not sent at all. Counting such a request as
//! lost would blame the server for a retry every real client makes, so the load
//! generator retries it once (and counts the retry).

/// Whether `error` (from hyper's HTTP/2 client) reports a request the server never
/// processed: not sent because the connection had closed or closed first (hyper's
/// "canceled"), or refused by a graceful GOAWAY or `REFUSED_STREAM`.
pub fn never_processed(error: &hyper::Error) -> bool {
    let source = std::error::Error::source(error);
    if error.is_canceled() {
        // Not handed to the connection (it had just closed), or still in hyper's queue
        // when it closed: never sent. (A request hyper had started to send and lost is
        // reported otherwise.)
        return source.is_some_and(|source| {
            let cause = source.to_string();
            cause == "connection closed" || cause == "connection was not ready"
        });
    }
    source
        .and_then(|source| source.downcast_ref::<h2::Error>())
        .is_some_and(refused_unprocessed)
}

/// Whether an HTTP/2 stream failed because the server refused it without processing
/// it: h2 fails with the server's graceful GOAWAY (`NO_ERROR`) a stream above the
/// GOAWAY's last stream id and a request started on the connection after the GOAWAY
/// arrived; a stream the server reset with `REFUSED_STREAM` was not processed either.
/// The gRPC tests ask the same of tonic's errors (`terminus_tests::grpc_load`).
pub fn refused_unprocessed(error: &h2::Error) -> bool {
    error.is_remote()
        && match error.reason() {
            Some(h2::Reason::NO_ERROR) => error.is_go_away(),
            Some(h2::Reason::REFUSED_STREAM) => error.is_reset(),
            _ => false,
        }
}
