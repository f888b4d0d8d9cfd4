//! Client connections: the accept loop behind [`super::serve`], on hyper's HTTP/1 connections,
//! with what `axum::serve` lacks and a public service needs (nginx's names in brackets):
//!
//! - a header-read timeout, from the connection or from the first byte of a request on a
//!   kept-alive connection (`client_header_timeout`): a half-sent header cannot hold a connection;
//! - a keep-alive idle timeout (`keepalive_timeout`);
//! - a connection limit (`worker_connections`), lowered to fit the open-file limit; at the limit
//!   the longest-idle connection is closed to admit the new one, so `/health` still answers when
//!   idle clients hold every slot;
//! - lingering close: after a response that refused a request's body (413) the rest of the body is
//!   read and discarded, bounded in bytes and time, so the client reads the 413 instead of a reset;
//! - shutdown that closes idle connections (and those that never completed a request header) at
//!   once, while requests in flight drain.
//!
//! Each connection has a [`Conn`] shared by its reader, its requests and its task: whether a
//! request is in flight, since when the connection has waited, and whether it must close.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use axum::extract::ConnectInfo;
use futures_util::FutureExt;
use http_body::Body;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower_service::Service;

mod wrappers;

use super::Metrics;
use crate::config::ServiceParams;
use wrappers::{RequestBody, ResponseBody, Tracked};

/// Descriptors kept for everything but client connections (the database pool besides, Redis, the
/// embeddings client, the runtime, logs) when the connection limit is fitted to the open-file limit.
pub const RESERVED_DESCRIPTORS: u64 = 64;
/// Most bytes of a refused body read and discarded before the connection is closed.
pub const LINGER_BYTES: usize = 16 * 1024 * 1024;
/// Longest time spent reading a refused body before the connection is closed.
pub const LINGER_TIME: Duration = Duration::from_secs(5);

/// How client connections are bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub keepalive_timeout: Duration,
    /// Connections open at once, after fitting the open-file limit.
    pub max_connections: usize,
}

impl Limits {
    /// The service's limits; the connection limit lowered to fit the open-file limit
    /// (RLIMIT_NOFILE), since every connection holds a descriptor.
    pub fn of(params: &ServiceParams) -> Self {
        let wanted = u64::from(params.max_connections);
        let fitting = open_file_limit()
            .map(|n| n.saturating_sub(RESERVED_DESCRIPTORS + u64::from(params.pool_size)))
            .map_or(wanted, |n| wanted.min(n.max(1)));
        Self {
            header_read_timeout: params.header_read_timeout,
            keepalive_timeout: params.keepalive_timeout,
            max_connections: usize::try_from(fitting).unwrap_or(usize::MAX),
        }
    }
}

/// Raises this process's open-file limit (the soft one, up to the hard one) to what `params` need,
/// as servers do at start; what the hard limit does not allow, [`Limits::of`] takes off the
/// connection limit.
pub fn raise_open_file_limit(params: &ServiceParams) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let needed =
        u64::from(params.max_connections) + RESERVED_DESCRIPTORS + u64::from(params.pool_size);
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < needed
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, needed.min(hard), hard)
    {
        tracing::debug!(error = %e, "raising the open-file limit failed");
    }
}

/// The process's open-file limit (soft), when it has one.
pub fn open_file_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit};
    getrlimit(Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
        .filter(|&soft| soft != nix::sys::resource::RLIM_INFINITY)
}

/// Serves `app` on `listener` until `shutdown` completes; then closes idle connections, lets
/// requests in flight finish, and returns when every connection is closed.
pub async fn run(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    metrics: Metrics,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let registry = Arc::new(Registry::new(limits.max_connections));
    let (stop, stopping) = watch::channel(false);
    let shared = Shared {
        app,
        registry: registry.clone(),
        metrics,
        stopping,
    };
    tokio::pin!(shutdown);
    let mut out_of_descriptors = false;
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                if std::mem::take(&mut out_of_descriptors) {
                    tracing::info!("accepting connections again");
                }
                accepted
            }
            Err(e) => {
                // Out of descriptors: close the longest-idle connection and try again. Anything
                // else concerns one connection that the client gave up (ECONNABORTED …).
                let fds = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
                if fds && !std::mem::replace(&mut out_of_descriptors, true) {
                    tracing::warn!(
                        error = %e,
                        "out of file descriptors: closing idle connections to accept new ones \
                         (raise ulimit -n or lower --max-connections)"
                    );
                }
                if !(fds && registry.evict_longest_idle()) {
                    tracing::debug!(error = %e, "accepting a connection failed");
                }
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(Duration::from_millis(10)) => continue,
                }
            }
        };
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            slot = registry.admit() => slot,
        };
        let conn = registry.open(limits);
        shared.metrics.open_connections.inc();
        tokio::spawn(shared.clone().serve_connection(stream, peer, conn, slot));
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a slot until it is closed.
    let _all = registry.slots.acquire_many(registry.capacity).await;
    Ok(())
}

/// Why the service closed a connection (the `reason` of `capbench_connections_closed_total`).
#[derive(Debug, Clone, Copy)]
enum Closed {
    HeaderTimeout,
    KeepaliveTimeout,
    Evicted,
    Shutdown,
}

impl Closed {
    fn as_str(self) -> &'static str {
        match self {
            Closed::HeaderTimeout => "header_timeout",
            Closed::KeepaliveTimeout => "keepalive_timeout",
            Closed::Evicted => "evicted",
            Closed::Shutdown => "shutdown",
        }
    }
}

/// What every connection's task shares.
#[derive(Clone)]
struct Shared {
    app: axum::Router,
    registry: Arc<Registry>,
    metrics: Metrics,
    /// Becomes true when the service shuts down.
    stopping: watch::Receiver<bool>,
}

impl Shared {
    /// Serves one connection until the client or the service closes it; `_slot` is its place
    /// under the connection limit, given back when it is closed.
    async fn serve_connection(
        self,
        stream: TcpStream,
        peer: SocketAddr,
        conn: Arc<Conn>,
        _slot: OwnedSemaphorePermit,
    ) {
        let Shared {
            app,
            registry,
            metrics,
            mut stopping,
        } = self;
        let io = TokioIo::new(Tracked {
            stream,
            conn: conn.clone(),
        });
        let requests = conn.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            handle(app.clone(), requests.clone(), peer, req)
        });
        // The header timeout is this module's: hyper's would also cut kept-alive idleness short.
        let mut http = hyper::server::conn::http1::Builder::new()
            .header_read_timeout(None)
            .serve_connection(io, service);
        let mut shutting_down = false;
        let closed = loop {
            let deadline = conn.deadline();
            tokio::select! {
                result = poll_fn(|cx| http.poll_without_shutdown(cx)) => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, %peer, "connection ended with an error");
                    }
                    break None;
                }
                _ = conn.wake.notified() => {}
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {}
                _ = stopping.changed(), if !shutting_down => {
                    // hyper closes a connection that is idle or has not sent a byte, and closes the
                    // others once their request is answered; …
                    shutting_down = true;
                    Pin::new(&mut http).graceful_shutdown();
                }
            }
            let (waiting, reading) = conn.waiting();
            if conn.evict.swap(false, Ordering::AcqRel) && waiting {
                break Some(Closed::Evicted);
            }
            if shutting_down && waiting && reading {
                // … except one whose first request header is still arriving: close it here.
                break Some(Closed::Shutdown);
            }
            if conn.deadline().is_some_and(|d| d <= Instant::now()) {
                break Some(if reading || !conn.served() {
                    Closed::HeaderTimeout
                } else {
                    Closed::KeepaliveTimeout
                });
            }
        };
        registry.close(conn.id);
        metrics.open_connections.dec();
        match closed {
            Some(reason) => {
                metrics
                    .connections_closed
                    .with_label_values(&[reason.as_str()])
                    .inc();
            }
            None if conn.body_unread() => linger(http.into_parts().io.into_inner().stream).await,
            None => {}
        }
    }
}

/// One request: the client's address for the handlers, and the connection told when the request
/// starts, when its body has been read, and when its response has been written.
fn handle(
    mut app: axum::Router,
    conn: Arc<Conn>,
    peer: SocketAddr,
    req: hyper::Request<Incoming>,
) -> Pin<Box<dyn Future<Output = Result<hyper::Response<ResponseBody>, Infallible>> + Send>> {
    let request = conn.begin_request(!req.body().is_end_stream());
    let mut req = req.map(|inner| {
        axum::body::Body::new(RequestBody {
            inner,
            conn: conn.clone(),
        })
    });
    req.extensions_mut().insert(ConnectInfo(peer));
    async move {
        // A Router is always ready; asking keeps to the Service contract.
        let ready = poll_fn(|cx| Service::<axum::extract::Request>::poll_ready(&mut app, cx)).await;
        let response = match ready {
            Ok(()) => app.call(req).await,
            Err(never) => Err(never),
        };
        let response = match response {
            Ok(response) => response,
            Err(never) => match never {},
        };
        Ok(response.map(|inner| ResponseBody {
            inner,
            _request: request,
        }))
    }
    .boxed()
}

/// After a response that refused a request's body, the client may still be sending it: closing
/// at once would make the kernel answer its data with a reset, which destroys the response before
/// the client reads it. Half-close (the client sees the end of the response), then read and
/// discard what still comes, until the client closes, for at most [`LINGER_BYTES`] and
/// [`LINGER_TIME`].
async fn linger(mut stream: TcpStream) {
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = LINGER_BYTES;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while left > 0 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// The connections open, and the slots that bound how many may be.
struct Registry {
    capacity: u32,
    slots: Arc<Semaphore>,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    /// Notified when a request ends: an accept waiting for a slot may close that connection now.
    became_idle: Arc<Notify>,
}

impl Registry {
    fn new(max_connections: usize) -> Self {
        let capacity = u32::try_from(max_connections)
            .unwrap_or(u32::MAX)
            .min(Semaphore::MAX_PERMITS as u32);
        Self {
            capacity,
            slots: Arc::new(Semaphore::new(capacity as usize)),
            conns: Mutex::default(),
            next_id: AtomicU64::new(0),
            became_idle: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a new connection: a free one, or the one the longest-idle connection gives up.
    /// With every connection busy, waits until one ends or goes idle.
    async fn admit(&self) -> OwnedSemaphorePermit {
        loop {
            if let Ok(slot) = self.slots.clone().try_acquire_owned() {
                return slot;
            }
            self.evict_longest_idle();
            tokio::select! {
                slot = self.slots.clone().acquire_owned() => {
                    if let Ok(slot) = slot {
                        return slot;
                    }
                }
                _ = self.became_idle.notified() => {}
            }
        }
    }

    /// Asks the connection that has waited longest without a request in flight to close (unless
    /// one was already asked). Whether there was one.
    fn evict_longest_idle(&self) -> bool {
        let conns = self.lock();
        if conns.values().any(|c| c.evict.load(Ordering::Acquire)) {
            return true;
        }
        let longest = conns
            .values()
            .filter_map(|c| c.waiting_since().map(|since| (since, c)))
            .min_by_key(|(since, _)| *since);
        match longest {
            Some((_, conn)) => {
                conn.evict.store(true, Ordering::Release);
                conn.wake.notify_one();
                true
            }
            None => false,
        }
    }

    fn open(&self, limits: Limits) -> Arc<Conn> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new(id, limits, self.became_idle.clone()));
        self.lock().insert(id, conn.clone());
        conn
    }

    fn close(&self, id: u64) {
        self.lock().remove(&id);
    }
}

/// One connection's state, shared by its reader, its requests and its task.
struct Conn {
    id: u64,
    limits: Limits,
    accepted: Instant,
    state: Mutex<ConnState>,
    /// Wakes the connection's task: a request ended, a header started, or it must close.
    wake: Notify,
    /// The connection must close to admit another (at the connection limit).
    evict: AtomicBool,
    became_idle: Arc<Notify>,
}

struct ConnState {
    /// Requests whose response has not been written yet.
    in_flight: u32,
    /// Whether a request was answered on this connection (waiting is then keep-alive idleness).
    served: bool,
    /// Whether bytes of the next request header have arrived.
    reading: bool,
    /// Since when the connection has waited (for a request, or for the rest of its header).
    since: Instant,
    /// The last request's body was not read to its end (its response refused it).
    body_unread: bool,
}

impl Conn {
    fn new(id: u64, limits: Limits, became_idle: Arc<Notify>) -> Self {
        let now = Instant::now();
        Self {
            id,
            limits,
            accepted: now,
            state: Mutex::new(ConnState {
                in_flight: 0,
                served: false,
                reading: false,
                since: now,
                body_unread: false,
            }),
            wake: Notify::new(),
            evict: AtomicBool::new(false),
            became_idle,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When the connection must close unless something happens: none while a request is in
    /// flight; the header timeout from the connection for its first request, or from the first
    /// byte of a later one; the keep-alive timeout while it waits for that byte.
    fn deadline(&self) -> Option<Instant> {
        let s = self.lock();
        if s.in_flight > 0 {
            None
        } else if !s.served {
            Some(self.accepted + self.limits.header_read_timeout)
        } else if s.reading {
            Some(s.since + self.limits.header_read_timeout)
        } else {
            Some(s.since + self.limits.keepalive_timeout)
        }
    }

    /// Whether no request is in flight, and whether a request header has started arriving.
    fn waiting(&self) -> (bool, bool) {
        let s = self.lock();
        (s.in_flight == 0, s.reading)
    }

    /// Since when the connection has waited without a request in flight.
    fn waiting_since(&self) -> Option<Instant> {
        let s = self.lock();
        (s.in_flight == 0).then_some(s.since)
    }

    fn served(&self) -> bool {
        self.lock().served
    }

    fn body_unread(&self) -> bool {
        self.lock().body_unread
    }

    /// Bytes arrived: between requests, they start a header, which has the header timeout.
    fn on_read(&self) {
        let mut s = self.lock();
        if s.in_flight == 0 && !s.reading {
            s.reading = true;
            s.since = Instant::now();
            drop(s);
            self.wake.notify_one();
        }
    }

    fn begin_request(self: &Arc<Self>, has_body: bool) -> InFlight {
        let mut s = self.lock();
        s.in_flight += 1;
        s.reading = false;
        s.body_unread = has_body;
        InFlight(self.clone())
    }
}

/// A request in flight on its connection, until its response has been written (or dropped).
struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.in_flight = s.in_flight.saturating_sub(1);
        s.served = true;
        if s.in_flight == 0 {
            s.reading = false;
            s.since = Instant::now();
        }
        drop(s);
        self.0.wake.notify_one();
        self.0.became_idle.notify_one();
    }
}
