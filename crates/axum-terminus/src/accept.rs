//! Accepting connections on one listener, and closing it without losing what the
//! kernel already accepted.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response};
use terminus_core::{BoxError, Phase};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_service::Service;

use crate::clock::Clock;
use crate::connection::{Connection, Limits};
use crate::drain::Registry;
use crate::io::ConnectionIo;
use crate::listener::{self, TerminusListener};
use crate::serve_connection::{serve_connection, Transport};
use crate::settings::Settings;

/// What every accept loop of a server shares.
pub(crate) struct ServerParts {
    pub(crate) settings: Arc<Settings>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) clock: Arc<Clock>,
    /// The bounds on each connection's life.
    pub(crate) limits: Limits,
    /// In an upgrade's successor, closed until it is ready.
    #[cfg(all(feature = "upgrade", unix))]
    pub(crate) accept_gate: crate::upgrade::AcceptGate,
}

/// What a listener is for.
#[derive(Clone)]
pub(crate) enum Role {
    /// Application traffic, under the server's connection cap if it has one.
    Public { cap: Option<Arc<Semaphore>> },
    /// Operators' traffic (probes, `/metrics`): outside the cap, and its requests are
    /// not the application's, so the lifecycle does not count them.
    Admin,
}

/// Accepts connections and serves each on its own task, until Closing; then closes the
/// listener (`drain::close_listener`).
pub(crate) async fn accept_loop<L, S, B>(
    mut listener: L,
    service: S,
    transport: Transport,
    server: Arc<ServerParts>,
    role: Role,
) where
    L: TerminusListener,
    L::Addr: Clone + Sync + fmt::Debug + 'static,
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let name = listener::name(&listener);
    let (cap, admin) = match role {
        Role::Public { cap } => (cap, false),
        Role::Admin => (None, true),
    };
    let mut phases = server.settings.terminus.subscribe();
    // A successor accepts nothing before it is ready: its parent serves the queue.
    #[cfg(all(feature = "upgrade", unix))]
    tokio::select! {
        biased;
        _ = phases.wait_for(|phase| *phase >= Phase::Closing) => {}
        () = server.accept_gate.opened() => {}
    }
    loop {
        // At the cap, wait for a connection to close before accepting: the kernel
        // queues new ones meanwhile.
        let permit = match &cap {
            None => None,
            Some(cap) => tokio::select! {
                biased;
                _ = phases.wait_for(|phase| *phase >= Phase::Closing) => break,
                permit = Arc::clone(cap).acquire_owned() => permit.ok(),
            },
        };
        let (io, addr) = tokio::select! {
            biased;
            _ = phases.wait_for(|phase| *phase >= Phase::Closing) => break,
            accepted = listener.accept() => accepted,
        };
        spawn::<L, S, B>(io, addr, permit, admin, &name, &service, &transport, &server);
    }
    crate::drain::close_listener(listener, &name, &server.settings.terminus, |io, addr| {
        spawn::<L, S, B>(io, addr, None, admin, &name, &service, &transport, &server);
    });
}

#[allow(clippy::too_many_arguments)] // one call site per listener event; a struct would only rename them
fn spawn<L, S, B>(
    io: L::Io,
    addr: L::Addr,
    permit: Option<OwnedSemaphorePermit>,
    admin: bool,
    listener: &str,
    service: &S,
    transport: &Transport,
    server: &Arc<ServerParts>,
) where
    L: TerminusListener,
    L::Addr: Clone + Sync + fmt::Debug + 'static,
    S: Service<Request<Body>, Response = Response<B>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    L::accepted(&io);
    let connection = Arc::new(Connection::new(
        server.settings.terminus.clone(),
        L::peer(&addr, listener),
        Arc::clone(&server.clock),
        admin,
        server.limits,
    ));
    let registered = server.registry.register(Arc::clone(&connection), permit);
    // Registered before this read: if Closing began meanwhile, either the registry's
    // notice reached this connection or this read sees the phase (both take the lock).
    if server.settings.terminus.phase() >= Phase::Closing {
        connection.close_when_empty();
    }
    let io = ConnectionIo::new::<L>(io, Arc::clone(&connection), registered);
    let task = tokio::spawn(serve_connection(
        io,
        Arc::clone(&connection),
        service.clone(),
        addr,
        Arc::clone(&server.settings),
        transport.clone(),
    ));
    connection.set_abort(task.abort_handle());
}
