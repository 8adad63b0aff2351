//! The listener(s), the accept loop with its connection limit, and the
//! server handle with graceful shutdown.

mod listener;

use crate::body::Connection;
use crate::builder::{Handler, Scheme};
use crate::client_info::{Identity, PeerCredentials};
use crate::config::Config;
use crate::h1::dispatch::{self, ConnContext};
use crate::io::{PlainStream, Shutdown};
use crate::tls::{self, CertificateError, Certificates};
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, error, warn};

/// Longest pause after an accept error such as running out of descriptors.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
const MIN_ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Why a server could not start.
///
/// ```no_run
/// # async fn f() {
/// let result = mist::new(|_: http::Request<mist::Connection>| async {
///     http::Response::new(mist::ResponseData::empty())
/// })
/// .bind("not an address")
/// .start_http()
/// .await;
/// assert!(matches!(result, Err(mist::StartError::InvalidInterface(_))));
/// # }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum StartError {
    /// The interface given to [`Builder::bind`](crate::Builder::bind) is not
    /// `localhost`, an IPv4 address or an IPv6 address.
    InvalidInterface(String),
    /// The operating system refused to listen on this address (in use, no
    /// permission, not available on this machine).
    Bind {
        /// The address that could not be bound.
        address: SocketAddr,
        /// What the operating system said.
        source: io::Error,
    },
    /// A listener given to [`Builder::listener`](crate::Builder::listener)
    /// or [`Builder::unix_listener`](crate::Builder::unix_listener) cannot
    /// be served: it is not a listening stream socket, or the reactor
    /// refused it.
    Listener(io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::InvalidInterface(interface) => write!(
                f,
                "invalid interface {interface:?}: expected \"localhost\", an IPv4 or an IPv6 address"
            ),
            StartError::Bind { address, source } => write!(f, "cannot listen on {address}: {source}"),
            StartError::Listener(source) => write!(f, "cannot serve on the given listener: {source}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Bind { source, .. } | StartError::Listener(source) => Some(source),
            StartError::InvalidInterface(_) => None,
        }
    }
}

/// What `start` needs from the builder.
pub(crate) struct Options {
    pub port: u16,
    pub interface: String,
    pub ipv6: bool,
    pub config: Config,
    pub scheme: Scheme,
    /// Listeners the caller bound; when there are any (of either kind),
    /// `port`, `interface` and `ipv6` are not used.
    pub listeners: Vec<std::net::TcpListener>,
    pub unix_listeners: Vec<std::os::unix::net::UnixListener>,
    /// The certificate of an HTTPS server; `None` for plain HTTP.
    pub tls: Option<Arc<Certificates>>,
}

/// A running server: its address, and its shutdown.
///
/// Cloning gives another handle to the same server. Dropping every handle
/// leaves the server running.
///
/// ```no_run
/// # use http::{Request, Response};
/// # use mist::{Connection, ResponseData};
/// # use std::time::Duration;
/// # async fn run() -> Result<(), mist::StartError> {
/// let server = mist::new(|_req: Request<Connection>| async { Response::new(ResponseData::empty()) })
///     .port(0)
///     .start_http()
///     .await?;
/// // ... later: stop accepting, give requests in flight 10 s, then close.
/// server.shutdown(Duration::from_secs(10));
/// server.wait().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

struct Shared {
    addrs: Vec<SocketAddr>,
    unix_addrs: Vec<std::os::unix::net::SocketAddr>,
    stop: watch::Sender<Option<Duration>>,
    done: watch::Receiver<bool>,
    tls: Option<Arc<Certificates>>,
}

impl Server {
    /// The port the server listens on (the real one when 0 was asked for).
    ///
    /// # Panics
    ///
    /// If the server listens on Unix domain sockets only
    /// ([`Builder::unix_listener`](crate::Builder::unix_listener));
    /// `server.local_addrs().first()` is the answer that cannot panic.
    ///
    /// ```no_run
    /// # async fn f(server: mist::Server) {
    /// println!("http://127.0.0.1:{}/", server.port());
    /// # }
    /// ```
    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// The first TCP address the server listens on.
    ///
    /// # Panics
    ///
    /// If the server listens on Unix domain sockets only
    /// ([`Builder::unix_listener`](crate::Builder::unix_listener)); for a
    /// server that may, `local_addrs().first()` cannot panic, and
    /// [`Server::unix_addrs`] lists the Unix sockets.
    ///
    /// ```no_run
    /// # async fn f(server: mist::Server) {
    /// assert!(server.local_addr().ip().is_loopback());
    /// # }
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        match self.shared.addrs.first() {
            Some(addr) => *addr,
            None => {
                panic!("the server listens on Unix domain sockets only: see Server::unix_addrs")
            }
        }
    }

    /// Every TCP address the server listens on (two with
    /// [`Builder::with_ipv6`](crate::Builder::with_ipv6) on `localhost`;
    /// none when it listens on Unix domain sockets only).
    ///
    /// ```no_run
    /// # async fn f(server: mist::Server) {
    /// for addr in server.local_addrs() {
    ///     println!("listening on {addr}");
    /// }
    /// # }
    /// ```
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.shared.addrs
    }

    /// Every Unix domain socket the server listens on (given to
    /// [`Builder::unix_listener`](crate::Builder::unix_listener)).
    ///
    /// ```no_run
    /// # async fn f(server: mist::Server) {
    /// for addr in server.unix_addrs() {
    ///     if let Some(path) = addr.as_pathname() {
    ///         println!("listening on {}", path.display());
    ///     }
    /// }
    /// # }
    /// ```
    pub fn unix_addrs(&self) -> &[std::os::unix::net::SocketAddr] {
        &self.shared.unix_addrs
    }

    /// Starts a graceful shutdown: the server stops accepting at once; idle
    /// connections close; requests in flight run to their end and their
    /// responses carry `connection: close` (an HTTP/2 connection gets a
    /// `GOAWAY` and finishes its open streams; WebSockets close with 1001,
    /// event streams end). Connections still open after `grace` are
    /// closed. Returns at once; [`Server::wait`] waits for the end. Only
    /// the first call counts.
    ///
    /// ```no_run
    /// # async fn f(server: mist::Server) {
    /// server.shutdown(std::time::Duration::from_secs(10));
    /// server.wait().await;
    /// # }
    /// ```
    pub fn shutdown(&self, grace: Duration) {
        self.shared.stop.send_if_modified(|stop| {
            if stop.is_some() {
                return false;
            }
            *stop = Some(grace);
            true
        });
    }

    /// Waits until the server has stopped: no listener, no connection left.
    ///
    /// ```no_run
    /// # async fn f(server: mist::Server) {
    /// let waiter = server.clone();
    /// tokio::spawn(async move { waiter.wait().await; println!("stopped") });
    /// server.shutdown(std::time::Duration::ZERO);
    /// # }
    /// ```
    pub async fn wait(&self) {
        let mut done = self.shared.done.clone();
        let _ = done.wait_for(|done| *done).await;
    }

    /// Replaces the certificate of an HTTPS server without a restart, for
    /// renewals: the files are read and checked as
    /// [`start_https`](crate::start_https) does, and if they are usable,
    /// every handshake from now on presents the new certificate.
    /// Connections already open carry on undisturbed with the old one. On
    /// an error the old certificate stays in use. A server started with
    /// [`Builder::start_http`](crate::Builder::start_http) answers
    /// [`CertificateError::NotHttps`].
    ///
    /// ```no_run
    /// # async fn f(server: mist::Server) {
    /// // e.g. on SIGHUP, after certbot renewed the files:
    /// if let Err(err) = server.reload_certificate("fullchain.pem", "privkey.pem") {
    ///     eprintln!("keeping the old certificate: {err}");
    /// }
    /// # }
    /// ```
    pub fn reload_certificate(
        &self,
        certfile: impl AsRef<Path>,
        keyfile: impl AsRef<Path>,
    ) -> Result<(), CertificateError> {
        match &self.shared.tls {
            Some(certificates) => certificates.reload(certfile.as_ref(), keyfile.as_ref()),
            None => Err(CertificateError::NotHttps),
        }
    }

    /// Replaces the whole rustls configuration of an HTTPS server without a
    /// restart: every handshake from now on uses `config`, adapted as
    /// [`Builder::start_https_with_config`](crate::Builder::start_https_with_config)
    /// adapts it (its ALPN protocols and early data are mist's).
    /// Connections already open carry on with the configuration they
    /// started with. A client resumes a TLS session without showing its
    /// certificate again: if the new configuration trusts fewer clients,
    /// give it a session store and ticketer of its own (rustls' defaults
    /// are new ones), not the old configuration's. Also for a server
    /// started from certificate files,
    /// which from then on refuses
    /// [`Server::reload_certificate`]. A server started with
    /// [`Builder::start_http`](crate::Builder::start_http) answers
    /// [`CertificateError::NotHttps`].
    ///
    /// ```no_run
    /// # fn new_config() -> mist::rustls::ServerConfig { unimplemented!() }
    /// # async fn f(server: mist::Server) {
    /// // e.g. a new list of trusted client CAs:
    /// let config: mist::rustls::ServerConfig = new_config();
    /// server.reload_tls_config(config).expect("an HTTPS server");
    /// # }
    /// ```
    pub fn reload_tls_config(&self, config: rustls::ServerConfig) -> Result<(), CertificateError> {
        match &self.shared.tls {
            Some(certificates) => {
                certificates.replace(config);
                Ok(())
            }
            None => Err(CertificateError::NotHttps),
        }
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("addrs", &self.shared.addrs)
            .field("unix_addrs", &self.shared.unix_addrs)
            .finish()
    }
}

/// Binds and spawns the accept loop.
pub(crate) async fn start<H: Handler<Connection>>(
    options: Options,
    handler: Arc<H>,
) -> Result<Server, StartError> {
    let listeners = if options.listeners.is_empty() && options.unix_listeners.is_empty() {
        listener::bind(&options.interface, options.port, options.ipv6)?
    } else {
        let tcp = options.listeners.into_iter().map(listener::adopt);
        let unix = options.unix_listeners.into_iter().map(listener::adopt_unix);
        tcp.chain(unix)
            .collect::<io::Result<Vec<_>>>()
            .map_err(StartError::Listener)?
    };
    let mut addrs = Vec::new();
    let mut unix_addrs = Vec::new();
    for listener in &listeners {
        match listener.addr() {
            listener::Addr::Tcp(addr) => addrs.push(*addr),
            listener::Addr::Unix(addr) => unix_addrs.push(addr.clone()),
        }
    }
    let (stop_tx, stop_rx) = watch::channel(None);
    let (done_tx, done_rx) = watch::channel(false);
    let scheme = match options.scheme {
        Scheme::Http => http::uri::Scheme::HTTP,
        Scheme::Https => http::uri::Scheme::HTTPS,
    };
    let supervisor = Supervisor {
        listeners,
        handler,
        config: Arc::new(options.config),
        scheme,
        tls: options.tls.clone(),
    };
    tokio::spawn(async move {
        supervisor.run(stop_rx).await;
        let _ = done_tx.send(true);
    });
    Ok(Server {
        shared: Arc::new(Shared {
            addrs,
            unix_addrs,
            stop: stop_tx,
            done: done_rx,
            tls: options.tls,
        }),
    })
}

struct Supervisor<H> {
    listeners: Vec<listener::Listener>,
    handler: Arc<H>,
    config: Arc<Config>,
    scheme: http::uri::Scheme,
    tls: Option<Arc<Certificates>>,
}

impl<H: Handler<Connection>> Supervisor<H> {
    async fn run(self, stop: watch::Receiver<Option<Duration>>) {
        let drain = Shutdown::default();
        let permits = Arc::new(Semaphore::new(self.config.max_connections));
        let mut connections = JoinSet::new();
        let mut backoff = MIN_ACCEPT_BACKOFF;
        let mut turn = 0usize;
        // One wait for the stop for the whole loop: made anew for every
        // connection, it registered and dropped a waiter each time.
        let stop_requested = wait_for_stop(stop);
        tokio::pin!(stop_requested);
        let mut stop_handle_gone = false;
        // Accepting pauses after an error that is not one connection's.
        let pause = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(pause);
        let mut paused = false;
        let grace = loop {
            tokio::select! {
                biased;
                requested = &mut stop_requested, if !stop_handle_gone => match requested {
                    Ok(grace) => break grace,
                    // Every `Server` handle is gone: nobody can stop the
                    // server any more, so it serves until the runtime ends.
                    Err(_) => stop_handle_gone = true,
                },
                Some(ended) = connections.join_next(), if !connections.is_empty() => {
                    if let Err(err) = ended {
                        if err.is_panic() {
                            error!("a connection task panicked: {err}");
                        }
                    }
                }
                () = &mut pause, if paused => paused = false,
                accepted = accept(&self.listeners, &permits, &mut turn), if !paused => match accepted {
                    Ok((accepted, permit)) => {
                        backoff = MIN_ACCEPT_BACKOFF;
                        self.spawn_connection(&mut connections, accepted, permit, drain.clone());
                    }
                    Err(err) if is_connection_error(&err) => {
                        debug!(%err, "connection failed during accept");
                    }
                    Err(err) => {
                        // EMFILE, ENFILE, ENOBUFS, ENOMEM: accepting again at
                        // once would spin; wait for resources to come back
                        // (connections that end meanwhile are still reaped,
                        // and a shutdown does not wait on this).
                        error!(%err, ?backoff, "accept failed; backing off");
                        pause.as_mut().reset(tokio::time::Instant::now() + backoff);
                        paused = true;
                        backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                    }
                },
            }
        };
        drop(self.listeners);
        debug!(connections = connections.len(), ?grace, "shutting down");
        drain.stop();
        let deadline = tokio::time::sleep(grace);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                ended = connections.join_next() => if ended.is_none() { break },
                _ = &mut deadline => {
                    warn!(connections = connections.len(), "shutdown grace period over; closing connections");
                    connections.shutdown().await;
                    break;
                }
            }
        }
    }

    /// Serves one accepted connection in a task of its own.
    fn spawn_connection(
        &self,
        connections: &mut JoinSet<()>,
        accepted: listener::Accepted,
        permit: OwnedSemaphorePermit,
        shutdown: Shutdown,
    ) {
        let mut identity = Identity::default();
        let (stream, peer) = match accepted {
            listener::Accepted::Tcp(stream, peer) => {
                // Responses are written whole or in large pieces: Nagle's
                // delay would only add latency. (On Linux the socket has it
                // already, from the listener: see `listener::bind_one`.)
                #[cfg(not(any(target_os = "linux", target_os = "android")))]
                if let Err(err) = stream.set_nodelay(true) {
                    debug!(%err, "cannot set TCP_NODELAY");
                }
                (PlainStream::Tcp(stream), Some(peer))
            }
            // A Unix socket's client has no address, but credentials.
            listener::Accepted::Unix(stream) => {
                match PeerCredentials::of(&stream) {
                    Ok(credentials) => identity.set_credentials(credentials),
                    Err(err) => debug!(%err, "no peer credentials"),
                }
                (PlainStream::Unix(stream), None)
            }
        };
        let ctx = ConnContext {
            peer,
            scheme: self.scheme.clone(),
            config: Arc::clone(&self.config),
            shutdown: shutdown.watch(),
            identity,
        };
        let handler = Arc::clone(&self.handler);
        // The TLS handshake runs in the connection's task, never here: a
        // slow or silent client must not hold up the accept loop.
        // Two kinds of task, not one future with both paths: a task is as
        // large as its future, and the TLS handshake's state would make
        // every plain connection carry it (measured: 2.4 -> 6.1 KiB per
        // idle connection).
        // Each future is boxed: tokio copies a task's whole stage when it
        // spawns the task, builds its cell, writes its stage and reads its
        // output (seven copies of 1.2 KB in a churn profile), and aligns
        // the cell to 128 bytes. A pointer moves instead: 880 fewer
        // instructions per connection, and an idle connection takes
        // 1.84 KiB instead of 1.91.
        match self.tls.clone() {
            None => {
                connections.spawn(Box::pin(async move {
                    dispatch::serve(stream, handler, ctx).await;
                    drop(permit);
                }));
            }
            Some(certificates) => {
                connections.spawn(Box::pin(async move {
                    tls::serve(stream, &certificates, handler, ctx).await;
                    drop(permit);
                }));
            }
        }
    }
}

/// The grace period of a requested shutdown; `Err` once every handle is gone.
async fn wait_for_stop(
    mut stop: watch::Receiver<Option<Duration>>,
) -> Result<Duration, watch::error::RecvError> {
    let grace = stop.wait_for(Option::is_some).await?;
    Ok(grace.unwrap_or_default())
}

/// Accepts from whichever listener is ready, once a connection slot is free.
async fn accept(
    listeners: &[listener::Listener],
    permits: &Arc<Semaphore>,
    turn: &mut usize,
) -> io::Result<(listener::Accepted, OwnedSemaphorePermit)> {
    let permit = Arc::clone(permits)
        .acquire_owned()
        .await
        .map_err(|_| io::Error::other("connection limit closed"))?;
    // Take turns, so that a busy listener cannot starve the other.
    *turn = turn.wrapping_add(1);
    let first = *turn;
    let accepted = poll_fn(|cx| {
        for i in 0..listeners.len() {
            let listener = &listeners[(first + i) % listeners.len()];
            if let Poll::Ready(accepted) = listener.poll_accept(cx) {
                return Poll::Ready(accepted);
            }
        }
        Poll::Pending
    })
    .await?;
    Ok((accepted, permit))
}

/// Errors that concern one connection, not the listener.
fn is_connection_error(err: &io::Error) -> bool {
    use rustix::io::Errno;
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    ) || err.raw_os_error().is_some_and(|code| {
        // accept(2) on Linux: "the network errors defined for the protocol
        // [...] treat them like EAGAIN by retrying": a pending error of
        // the new connection, not of the listener.
        let code = Errno::from_raw_os_error(code);
        [
            Errno::NETDOWN,
            Errno::PROTO,
            Errno::NOPROTOOPT,
            Errno::HOSTDOWN,
            Errno::NONET,
            Errno::HOSTUNREACH,
            Errno::OPNOTSUPP,
            Errno::NETUNREACH,
        ]
        .contains(&code)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::io::Errno;

    /// A network error the new connection brought with it is skipped; the
    /// listener's own trouble (out of descriptors) backs off.
    #[test]
    fn accept_errors_of_one_connection_do_not_back_off() {
        let os = |errno: Errno| io::Error::from_raw_os_error(errno.raw_os_error());
        for errno in [
            Errno::PROTO,
            Errno::HOSTUNREACH,
            Errno::NETDOWN,
            Errno::CONNABORTED,
        ] {
            assert!(is_connection_error(&os(errno)), "{errno:?}");
        }
        for errno in [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM] {
            assert!(!is_connection_error(&os(errno)), "{errno:?}");
        }
    }
}
