//! The builder: handler, address, limits and timeouts; then `start_http`
//! or `start_https`.

use crate::body::{read_body, Connection};
use crate::client_info::{get_client_info, IpAddress};
use crate::config::{Config, MAX_HEADERS_CAP};
use crate::response::ResponseData;
use crate::server::{self, Server, StartError};
use crate::tls::{Certificates, HttpsError};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// A request handler: an async function from a request to a response.
///
/// Implemented for every `Fn(Request<B>) -> impl Future<Output =
/// Response<ResponseData>>` that can be shared between connections, so
/// closures and `async fn`s work as they are. `B` is [`Connection`] for a
/// handler that reads the body itself, or `Bytes` for one behind
/// [`Builder::read_request_body`].
///
/// ```
/// use http::{Request, Response};
/// use mist::{Connection, ResponseData};
///
/// async fn hello(_req: Request<Connection>) -> Response<ResponseData> {
///     Response::new(ResponseData::from("Hello, world!"))
/// }
/// let builder = mist::new(hello);
/// # let _ = builder;
/// ```
pub trait Handler<B>: Send + Sync + 'static {
    /// Handles one request.
    ///
    /// ```
    /// # async fn f() {
    /// use mist::Handler;
    /// use mist::bytes::Bytes;
    /// let handler = |_req: http::Request<Bytes>| async { http::Response::new(mist::ResponseData::from("hi")) };
    /// let response = handler.call(http::Request::new(Bytes::new())).await;
    /// assert_eq!(response.status(), 200);
    /// # }
    /// ```
    fn call(&self, request: Request<B>) -> impl Future<Output = Response<ResponseData>> + Send;
}

impl<F, Fut, B> Handler<B> for F
where
    F: Fn(Request<B>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<ResponseData>> + Send,
{
    fn call(&self, request: Request<B>) -> impl Future<Output = Response<ResponseData>> + Send {
        self(request)
    }
}

/// The scheme a server speaks, as passed to [`Builder::after_start`].
///
/// ```
/// assert_eq!(mist::Scheme::Https.to_string(), "https");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// `"http"` or `"https"`.
    ///
    /// ```
    /// assert_eq!(mist::Scheme::Http.as_str(), "http");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type AfterStart = Arc<dyn Fn(u16, Scheme, IpAddress) + Send + Sync>;

/// Configures and starts a server; made by [`new`].
///
/// `B` is the request body type the handler takes: [`Connection`] (the
/// default: the body stays on the socket until read) or `Bytes` (read
/// before the handler runs; see [`Builder::read_request_body`]). Only a
/// `Builder<_, Connection>` can start, so the compiler checks the choice:
/// a handler taking `Request<Bytes>` has no `start_http` until
/// `read_request_body` says how much to read (the compiler says "no method
/// named `start_http`", and that the method exists for `Builder<H>`, that
/// is `Builder<H, Connection>`). A closure that ignores its request need
/// not name its type: `start_http` makes it a `Request<Connection>`
/// handler (one that uses its request must name the type, for the
/// compiler to know it at the first method call):
///
/// ```no_run
/// # async fn run() -> Result<(), mist::StartError> {
/// let server = mist::new(|_req| async { http::Response::new(mist::ResponseData::from("hi")) })
///     .start_http()
///     .await?;
/// # let _ = server; Ok(()) }
/// ```
///
/// ```compile_fail,E0599
/// # async fn run() {
/// let server = mist::new(|req: http::Request<mist::bytes::Bytes>| async move {
///     http::Response::new(mist::ResponseData::from(req.into_body()))
/// })
/// .start_http() // no method: call `.read_request_body(limit, failure)` first
/// .await;
/// # }
/// ```
///
/// ```no_run
/// use http::{Request, Response};
/// use mist::{Connection, ResponseData};
/// use std::time::Duration;
///
/// # async fn run() -> Result<(), mist::StartError> {
/// let server = mist::new(|_req: Request<Connection>| async {
///     Response::new(ResponseData::from("Hello, world!"))
/// })
/// .bind("0.0.0.0")
/// .port(8080)
/// .max_connections(10_000)
/// .keep_alive_timeout(Duration::from_secs(30))
/// .start_http()
/// .await?;
/// # let _ = server; Ok(()) }
/// ```
pub struct Builder<H, B = Connection> {
    handler: H,
    port: u16,
    interface: String,
    ipv6: bool,
    /// Listeners the caller bound ([`Builder::listener`]).
    listeners: Vec<std::net::TcpListener>,
    /// Unix domain sockets the caller bound ([`Builder::unix_listener`]).
    unix_listeners: Vec<std::os::unix::net::UnixListener>,
    /// `None`: print the `Listening on` line.
    after_start: Option<AfterStart>,
    config: Config,
    _body: PhantomData<fn(B)>,
}

/// Creates a server builder around a handler. The default port is 4000 and
/// the default interface `localhost` (IPv4).
///
/// ```no_run
/// use http::{Request, Response};
/// use mist::{Connection, ResponseData};
///
/// #[tokio::main]
/// async fn main() -> Result<(), mist::StartError> {
///     let server = mist::new(|_req: Request<Connection>| async {
///         Response::new(ResponseData::from("Hello, world!"))
///     })
///     .port(4000)
///     .bind("localhost")
///     .start_http()
///     .await?;
///     server.wait().await;
///     Ok(())
/// }
/// ```
pub fn new<B, H: Handler<B>>(handler: H) -> Builder<H, B> {
    Builder {
        handler,
        port: 4000,
        interface: "localhost".to_string(),
        ipv6: false,
        listeners: Vec::new(),
        unix_listeners: Vec::new(),
        after_start: None,
        config: Config::default(),
        _body: PhantomData,
    }
}

/// A Unix domain socket's address as text: `unix:` and its path, or `@`
/// and the name of one of Linux's abstract addresses.
fn unix_addr_text(addr: &std::os::unix::net::SocketAddr) -> String {
    if let Some(path) = addr.as_pathname() {
        return format!("unix:{}", path.display());
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::linux::net::SocketAddrExt;
        if let Some(name) = addr.as_abstract_name() {
            return format!("unix:@{}", String::from_utf8_lossy(name));
        }
    }
    format!("unix:{addr:?}")
}

/// Prints `Listening on http://HOST:PORT`, as mist does.
fn default_after_start(port: u16, scheme: Scheme, ip: IpAddress) {
    let host = match ip {
        IpAddress::V4(..) => ip.to_string(),
        IpAddress::V6(..) => format!("[{ip}]"),
    };
    println!("Listening on {scheme}://{host}:{port}");
}

impl<H, B> Builder<H, B> {
    /// The port to listen on (default 4000). `0` asks the operating system
    /// for a free port; [`Server::port`] tells which one it gave.
    ///
    /// ```
    /// # let builder = mist::new(|_: http::Request<mist::Connection>| async { http::Response::new(mist::ResponseData::empty()) });
    /// let builder = builder.port(0);
    /// # let _ = builder;
    /// ```
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The interface to listen on: `"localhost"`, an IPv4 address
    /// (`"0.0.0.0"` for all) or an IPv6 address (`"::1"`, `"[::]"`).
    /// Anything else makes [`Builder::start_http`] fail with
    /// [`StartError::InvalidInterface`].
    ///
    /// ```
    /// # let builder = mist::new(|_: http::Request<mist::Connection>| async { http::Response::new(mist::ResponseData::empty()) });
    /// let builder = builder.bind("0.0.0.0");
    /// # let _ = builder;
    /// ```
    pub fn bind(mut self, interface: &str) -> Self {
        self.interface = interface.to_string();
        self
    }

    /// Listens on IPv6 as well as IPv4 where the interface allows:
    /// `localhost` adds `::1`, `0.0.0.0` becomes a dual-stack `::`. A
    /// specific IPv4 address stays IPv4 only; an IPv6 address is unaffected.
    ///
    /// ```
    /// # let builder = mist::new(|_: http::Request<mist::Connection>| async { http::Response::new(mist::ResponseData::empty()) });
    /// let builder = builder.with_ipv6();
    /// # let _ = builder;
    /// ```
    pub fn with_ipv6(mut self) -> Self {
        self.ipv6 = true;
        self
    }

    /// Serves on a listener the caller has bound, instead of binding one
    /// from [`Builder::port`], [`Builder::bind`] and
    /// [`Builder::with_ipv6`] (which are then not used). For a socket
    /// inherited from a service manager (systemd's socket activation, for
    /// instance through the `listenfd` crate), a port chosen before the
    /// server starts, or socket options mist does not set. Each call adds
    /// one listener; the server accepts on all of them, and
    /// [`Builder::after_start`] and [`Server::port`] report the first.
    ///
    /// The listener must be listening (every `std::net::TcpListener` made
    /// by `bind` is); mist makes it non-blocking and sets `TCP_NODELAY`.
    /// A socket that is not a stream socket, or (except on Apple's
    /// systems, which cannot tell) not listening, makes
    /// [`Builder::start_http`] fail with [`StartError::Listener`]. A tokio
    /// listener converts with `into_std()`.
    ///
    /// ```no_run
    /// # use http::{Request, Response};
    /// # use mist::{Connection, ResponseData};
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// let port = listener.local_addr()?.port();
    /// let server = mist::new(|_req: Request<Connection>| async { Response::new(ResponseData::empty()) })
    ///     .listener(listener)
    ///     .start_http()
    ///     .await?;
    /// assert_eq!(server.port(), port);
    /// # Ok(()) }
    /// ```
    pub fn listener(mut self, listener: std::net::TcpListener) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Serves on a Unix domain socket the caller has bound: for a reverse
    /// proxy on the same machine (nginx's `proxy_pass http://unix:PATH`),
    /// where the socket file's permissions decide who may connect. Like
    /// [`Builder::listener`], it replaces [`Builder::port`],
    /// [`Builder::bind`] and [`Builder::with_ipv6`], and each call adds one
    /// listener; TCP and Unix listeners may be mixed.
    ///
    /// A request over a Unix domain socket is served as over TCP (files
    /// go out with `sendfile(2)` too), except for two things. A Unix
    /// socket has no reset: a response stream that fails cannot tell an
    /// HTTP/1.0 client, whose body runs until close, that the body is
    /// incomplete (it is logged as an error), so a proxy in front should
    /// speak HTTP/1.1 (nginx: `proxy_http_version 1.1;`). And a client has
    /// no address: [`get_client_info`](crate::get_client_info) answers
    /// [`ClientInfoUnavailable`](crate::ClientInfoUnavailable); its user,
    /// group and process IDs are in every request's
    /// [`PeerCredentials`](crate::PeerCredentials) extension instead.
    ///
    /// [`Server::unix_addrs`] lists these listeners;
    /// [`Server::local_addrs`] lists only the TCP ones. A server with no
    /// TCP listener does not run [`Builder::after_start`], which speaks of
    /// ports (a warning says so if one was set); by default it prints
    /// `Listening on unix:PATH (http)`.
    ///
    /// mist neither creates nor removes the socket file: binding fails if
    /// the file exists (a server that stopped without removing it), so
    /// remove a stale one before binding, and the file after the server
    /// has stopped. The listener must be listening, as for
    /// [`Builder::listener`] (every `UnixListener` made by `bind` is).
    ///
    /// A tokio listener converts with `into_std()`.
    ///
    /// ```no_run
    /// # use http::{Request, Response};
    /// # use mist::{Connection, ResponseData};
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::os::unix::{fs::FileTypeExt, net::UnixListener, net::UnixStream};
    /// let path = "/run/myapp/http.sock";
    /// // A socket file left by an earlier run, which nobody listens on:
    /// if std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_socket())
    ///     && UnixStream::connect(path)
    ///         .is_err_and(|err| err.kind() == std::io::ErrorKind::ConnectionRefused)
    /// {
    ///     std::fs::remove_file(path)?;
    /// }
    /// let listener = UnixListener::bind(path)?;
    /// let server = mist::new(|_req: Request<Connection>| async {
    ///     Response::new(ResponseData::from("Hello over a Unix socket"))
    /// })
    /// .unix_listener(listener)
    /// .start_http()
    /// .await?;
    /// tokio::signal::ctrl_c().await?;
    /// server.shutdown(std::time::Duration::from_secs(10));
    /// server.wait().await;
    /// std::fs::remove_file(path)?;
    /// # Ok(()) }
    /// ```
    ///
    /// `curl --unix-socket /run/myapp/http.sock http://localhost/` talks
    /// to it.
    pub fn unix_listener(mut self, listener: std::os::unix::net::UnixListener) -> Self {
        self.unix_listeners.push(listener);
        self
    }

    /// Replaces what runs once the server listens, with the port, scheme
    /// and address of its first TCP listener. The default prints
    /// `Listening on http://HOST:PORT` (`https://` for
    /// [`Builder::start_https`]). A server listening on Unix domain sockets
    /// only does not run it (see [`Builder::unix_listener`]).
    ///
    /// ```
    /// # let builder = mist::new(|_: http::Request<mist::Connection>| async { http::Response::new(mist::ResponseData::empty()) });
    /// let builder = builder.after_start(|port, scheme, ip| {
    ///     eprintln!("serving {scheme} on {}:{port}", mist::ip_address_to_string(&ip));
    /// });
    /// # let _ = builder;
    /// ```
    pub fn after_start(
        mut self,
        after_start: impl Fn(u16, Scheme, IpAddress) + Send + Sync + 'static,
    ) -> Self {
        self.after_start = Some(Arc::new(after_start));
        self
    }

    /// Largest request head (request line plus header fields), in bytes.
    /// A larger head is answered `431 Request Header Fields Too Large` and
    /// the connection closed. Default 64 KiB.
    ///
    /// ```
    /// # let builder = mist::new(|_: http::Request<mist::Connection>| async { http::Response::new(mist::ResponseData::empty()) });
    /// let builder = builder.max_head_size(16 * 1024);
    /// # let _ = builder;
    /// ```
    pub fn max_head_size(mut self, bytes: usize) -> Self {
        self.config.max_head_size = bytes;
        self
    }

    /// Longest request target (path and query), in bytes. A longer one is
    /// answered `414 URI Too Long`. Default 8 KiB.
    ///
    /// ```
    /// # let builder = mist::new(|_: http::Request<mist::Connection>| async { http::Response::new(mist::ResponseData::empty()) });
    /// let builder = builder.max_request_target(2048);
    /// # let _ = builder;
    /// ```
    pub fn max_request_target(mut self, bytes: usize) -> Self {
        self.config.max_request_target = bytes;
        self
    }

    /// Most header fields in a request. More are answered `431`.
    /// Default 100; at most 512.
    ///
    /// ```
    /// # let builder = mist::new(|_: http::Request<mist::Connection>| async { http::Response::new(mist::ResponseData::empty()) });
    /// let builder = builder.max_headers(64);
    /// # let _ = builder;
    /// ```
    pub fn max_headers(mut self, count: usize) -> Self {
        self.config.max_headers = count.clamp(1, MAX_HEADERS_CAP);
        self
    }

    /// Most bytes of a request body the handler left unread that the server
    /// reads and discards to keep the connection open; a larger rest closes
    /// the connection after the response instead. Default 256 KiB.
    ///
    /// ```
    /// # let builder = mist::new(|_: http::Request<mist::Connection>| async { http::Response::new(mist::ResponseData::empty()) });
    /// let builder = builder.max_discard(64 * 1024);
    /// # let _ = builder;
    /// ```
    pub fn max_discard(mut self, bytes: u64) -> Self {
        self.config.max_discard = bytes;
        self
    }

    /// Most connections served at once. Beyond it the server stops
    /// accepting until one closes; waiting clients queue in the kernel's
    /// backlog. Default 25,000. An HTTP/1.1 connection runs one handler
    /// at a time; with [`Builder::with_http2`] one connection can run up
    /// to [`Builder::http2_max_concurrent_streams`] handlers at once, so
    /// size both together when handlers hold scarce resources (or bound
    /// those resources in the handler, e.g. with a `tokio::sync::Semaphore`).
    ///
    /// ```
    /// # let builder = mist::new(|_: http::Request<mist::Connection>| async { http::Response::new(mist::ResponseData::empty()) });
    /// let builder = builder.max_connections(1000);
    /// # let _ = builder;
    /// ```
    pub fn max_connections(mut self, count: usize) -> Self {
        self.config.max_connections = count.max(1);
        self
    }

    /// Time a client has to send a complete request head, from its first
    /// byte (from the accept for the first request). Past it the server
    /// answers `408 Request Timeout` and closes. Default 30 s.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # let builder = mist::new(|_: http::Request<mist::Connection>| async { http::Response::new(mist::ResponseData::empty()) });
    /// let builder = builder.header_read_timeout(Duration::from_secs(10));
    /// # let _ = builder;
    /// ```
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.config.header_read_timeout = timeout;
        self
    }

    /// Time an idle keep-alive connection stays open waiting for its next
    /// request; then it is closed silently. Default 60 s.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # let builder = mist::new(|_: http::Request<mist::Connection>| async { http::Response::new(mist::ResponseData::empty()) });
    /// let builder = builder.keep_alive_timeout(Duration::from_secs(5));
    /// # let _ = builder;
    /// ```
    pub fn keep_alive_timeout(mut self, timeout: Duration) -> Self {
        self.config.keep_alive_timeout = timeout;
        self
    }

    /// Time a body read waits for the client's next bytes before failing
    /// with [`ReadError::Timeout`](crate::ReadError::Timeout): it measures
    /// silence, not the whole body. Discarding a body the handler left unread
    /// is bounded by it in total. Default 30 s; `Duration::MAX` for none.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # let builder = mist::new(|_: http::Request<mist::Connection>| async { http::Response::new(mist::ResponseData::empty()) });
    /// let builder = builder.body_read_timeout(Duration::from_secs(10));
    /// # let _ = builder;
    /// ```
    pub fn body_read_timeout(mut self, timeout: Duration) -> Self {
        self.config.body_read_timeout = timeout;
        self
    }

    /// Time the server waits for a client to accept more response bytes
    /// before disconnecting it: a stall, not the whole download, so slow
    /// but steady clients get large bodies whole. Default 30 s. WebSockets
    /// and event streams use it too, unless their options set their own
    /// ([`WebsocketOptions::write_timeout`](crate::WebsocketOptions::write_timeout),
    /// [`SseOptions::write_timeout`](crate::SseOptions::write_timeout)).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # let builder = mist::new(|_: http::Request<mist::Connection>| async { http::Response::new(mist::ResponseData::empty()) });
    /// let builder = builder.write_timeout(Duration::from_secs(10));
    /// # let _ = builder;
    /// ```
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.config.write_timeout = timeout;
        self
    }

    /// Time a client has to complete the TLS handshake of an HTTPS server
    /// ([`Builder::start_https`]), from the accept. Past it the connection
    /// is closed (logged at debug level); a client that connects and says
    /// nothing holds its connection slot no longer than this. The
    /// [`header_read_timeout`](Builder::header_read_timeout) of the first
    /// request starts when the handshake ends. Default 10 s; no effect on
    /// plain HTTP.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # let builder = mist::new(|_: http::Request<mist::Connection>| async { http::Response::new(mist::ResponseData::empty()) });
    /// let builder = builder.tls_handshake_timeout(Duration::from_secs(5));
    /// # let _ = builder;
    /// ```
    pub fn tls_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.config.tls_handshake_timeout = timeout;
        self
    }

    /// Serves HTTP/2 (RFC 9113) as well as HTTP/1.1. Over HTTPS the client
    /// chooses with ALPN (`h2` is offered first, as browsers expect); over
    /// plain HTTP a client that starts with the HTTP/2 preface ("prior
    /// knowledge", `curl --http2-prior-knowledge`) is served HTTP/2 and
    /// every other client HTTP/1.1. The deprecated `Upgrade: h2c` is not
    /// taken up: such a request is answered in HTTP/1.1, which the client
    /// must accept. Off by default.
    ///
    /// Handlers do not change: the request's [`version`](http::Request::version)
    /// is `HTTP/2.0` and its URI carries the scheme and authority, bodies
    /// are read with [`read_body`](crate::read_body) and
    /// [`stream`](crate::stream()) as before, and every response body
    /// works, files through user space. A WebSocket over HTTP/2 is an
    /// extended CONNECT (RFC 8441, which browsers use once the server
    /// offers it): the handler sees the `GET` it stands for and
    /// [`websocket`](crate::websocket) takes it as it takes an upgrade, so
    /// one route serves both protocols. The limits apply per
    /// request: [`Builder::max_head_size`] bounds the header list,
    /// [`Builder::max_request_target`] and [`Builder::max_headers`] are
    /// checked as for HTTP/1.1, and [`Builder::keep_alive_timeout`] closes
    /// a connection without open streams with a `GOAWAY`.
    ///
    /// ```
    /// # let builder = mist::new(|_: http::Request<mist::Connection>| async { http::Response::new(mist::ResponseData::empty()) });
    /// let builder = builder.with_http2();
    /// # let _ = builder;
    /// ```
    pub fn with_http2(mut self) -> Self {
        self.config.http2 = true;
        self
    }

    /// Most HTTP/2 streams (requests) a client may have open at once on
    /// one connection; more are refused by the client's own HTTP/2 stack,
    /// which waits. Default 200, as hyper. Only matters with
    /// [`Builder::with_http2`].
    ///
    /// ```
    /// # let builder = mist::new(|_: http::Request<mist::Connection>| async { http::Response::new(mist::ResponseData::empty()) });
    /// let builder = builder.with_http2().http2_max_concurrent_streams(100);
    /// # let _ = builder;
    /// ```
    pub fn http2_max_concurrent_streams(mut self, streams: u32) -> Self {
        self.config.http2_max_concurrent_streams = streams.max(1);
        self
    }

    /// Sends an HTTP/2 `PING` on every connection this often, and closes a
    /// connection whose client has not answered the last one by the time
    /// the next is due: a client gone without a word (a dropped network,
    /// a sleeping laptop) is found even while its event streams or
    /// WebSockets send nothing. Off by default, as in hyper. Only matters
    /// with [`Builder::with_http2`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # let builder = mist::new(|_: http::Request<mist::Connection>| async { http::Response::new(mist::ResponseData::empty()) });
    /// let builder = builder.with_http2().http2_keep_alive_interval(Duration::from_secs(20));
    /// # let _ = builder;
    /// ```
    pub fn http2_keep_alive_interval(mut self, every: Duration) -> Self {
        self.config.http2_keep_alive_interval = Some(every);
        self
    }
}

impl<H: Handler<Bytes>> Builder<H, Bytes> {
    /// Reads every request body before the handler runs, so that the
    /// handler takes a `Request<Bytes>`. A body over `bytes_limit` bytes, or
    /// one that is malformed or arrives too slowly, is answered with
    /// `failure_response` and the handler does not run. The client's
    /// [`ConnectionInfo`](crate::ConnectionInfo) is in the request's
    /// extensions.
    ///
    /// ```no_run
    /// use http::{Request, Response};
    /// use mist::bytes::Bytes;
    /// use mist::ResponseData;
    ///
    /// # async fn run() -> Result<(), mist::StartError> {
    /// let too_big = Response::builder().status(413).body("body too large").unwrap();
    /// let server = mist::new(|req: Request<Bytes>| async move {
    ///     Response::new(ResponseData::from(req.into_body()))
    /// })
    /// .read_request_body(1024 * 1024, too_big)
    /// .start_http()
    /// .await?;
    /// # let _ = server; Ok(()) }
    /// ```
    pub fn read_request_body<T: Into<Bytes>>(
        self,
        bytes_limit: usize,
        failure_response: Response<T>,
    ) -> Builder<ReadBody<H>, Connection> {
        let (parts, body) = failure_response.into_parts();
        Builder {
            handler: ReadBody {
                inner: self.handler,
                limit: bytes_limit,
                failure: FailureResponse {
                    status: parts.status,
                    version: parts.version,
                    headers: parts.headers,
                    body: body.into(),
                },
            },
            port: self.port,
            interface: self.interface,
            ipv6: self.ipv6,
            listeners: self.listeners,
            unix_listeners: self.unix_listeners,
            after_start: self.after_start,
            config: self.config,
            _body: PhantomData,
        }
    }
}

impl<H: Handler<Connection>> Builder<H, Connection> {
    /// Binds the listener(s) and starts serving HTTP/1.1 on the current
    /// tokio runtime. Returns once the server is listening (after
    /// [`Builder::after_start`] has run); the server keeps running until
    /// [`Server::shutdown`], also if the returned handle is dropped.
    ///
    /// ```no_run
    /// # use http::{Request, Response};
    /// # use mist::{Connection, ResponseData};
    /// # async fn run() -> Result<(), mist::StartError> {
    /// let server = mist::new(|_req: Request<Connection>| async { Response::new(ResponseData::empty()) })
    ///     .port(0)
    ///     .start_http()
    ///     .await?;
    /// println!("port {}", server.port());
    /// # Ok(()) }
    /// ```
    pub async fn start_http(self) -> Result<Server, StartError> {
        self.start(None).await
    }

    /// Binds the listener(s) and starts serving HTTPS (HTTP/1.1 over TLS
    /// 1.3 or 1.2) on the current tokio runtime; the method form of
    /// [`start_https`](crate::start_https), which documents the files and
    /// errors. The certificate is checked before anything listens.
    /// [`Builder::after_start`] receives [`Scheme::Https`] and the default
    /// one prints `Listening on https://HOST:PORT`.
    ///
    /// ```no_run
    /// # use http::{Request, Response};
    /// # use mist::{Connection, ResponseData};
    /// # async fn run() -> Result<(), mist::HttpsError> {
    /// let server = mist::new(|_req: Request<Connection>| async { Response::new(ResponseData::empty()) })
    ///     .port(4443)
    ///     .start_https("cert.pem", "key.pem")
    ///     .await?;
    /// // Later, after the certificate was renewed on disk:
    /// server.reload_certificate("cert.pem", "key.pem")?;
    /// # Ok(()) }
    /// ```
    pub async fn start_https(
        self,
        certfile: impl AsRef<Path>,
        keyfile: impl AsRef<Path>,
    ) -> Result<Server, HttpsError> {
        let certificates =
            Certificates::load(certfile.as_ref(), keyfile.as_ref(), self.config.http2)?;
        Ok(self.start(Some(Arc::new(certificates))).await?)
    }

    /// Starts serving HTTPS with a rustls configuration the caller built,
    /// for what certificate files cannot say: client certificates
    /// (mutual TLS, with a `WebPkiClientVerifier`), several certificates
    /// chosen by SNI, a certificate resolver that renews itself, other
    /// cipher suites or a crypto provider of one's own. Handlers find a
    /// client's verified certificates in the request's
    /// [`PeerCertificates`](crate::PeerCertificates) extension.
    ///
    /// mist sets two fields: `alpn_protocols` (those its engines speak:
    /// `h2` with [`Builder::with_http2`], `http/1.1`, `http/1.0`) and
    /// `max_early_data_size` (0: a replayed 0-RTT request is not safe for
    /// handlers). [`Server::reload_tls_config`] replaces the configuration
    /// later; [`Server::reload_certificate`] refuses, since a
    /// configuration made from files would lose these settings. `rustls`
    /// is re-exported as [`mist::rustls`](crate::rustls), so the versions
    /// match. Name the crypto provider (`builder_with_provider`, as below):
    /// rustls' process-wide default panics when another crate in the
    /// build enables a second one.
    ///
    /// ```no_run
    /// use http::{Request, Response};
    /// use mist::rustls::pki_types::pem::PemObject;
    /// use mist::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    /// use mist::rustls::server::WebPkiClientVerifier;
    /// use mist::rustls::{RootCertStore, ServerConfig};
    /// use mist::{Connection, PeerCertificates, ResponseData};
    /// use std::sync::Arc;
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// // Only clients with a certificate from this CA get in.
    /// let mut roots = RootCertStore::empty();
    /// for ca in CertificateDer::pem_file_iter("clients-ca.pem")? {
    ///     roots.add(ca?)?;
    /// }
    /// let ring = Arc::new(mist::rustls::crypto::ring::default_provider());
    /// let verifier =
    ///     WebPkiClientVerifier::builder_with_provider(Arc::new(roots), ring.clone()).build()?;
    /// let chain = CertificateDer::pem_file_iter("cert.pem")?.collect::<Result<Vec<_>, _>>()?;
    /// let key = PrivateKeyDer::from_pem_file("key.pem")?;
    /// let config = ServerConfig::builder_with_provider(ring)
    ///     .with_safe_default_protocol_versions()?
    ///     .with_client_cert_verifier(verifier)
    ///     .with_single_cert(chain, key)?;
    ///
    /// let server = mist::new(|req: Request<Connection>| async move {
    ///     let who = req.extensions().get::<PeerCertificates>().map_or(0, |chain| chain.len());
    ///     Response::new(ResponseData::from(format!("{who} certificates")))
    /// })
    /// .port(4443)
    /// .start_https_with_config(config)
    /// .await?;
    /// server.wait().await;
    /// # Ok(()) }
    /// ```
    pub async fn start_https_with_config(
        self,
        config: rustls::ServerConfig,
    ) -> Result<Server, StartError> {
        let certificates = Certificates::custom(config, self.config.http2);
        self.start(Some(Arc::new(certificates))).await
    }

    /// Starts plain HTTP, or HTTPS with `tls`.
    async fn start(self, tls: Option<Arc<Certificates>>) -> Result<Server, StartError> {
        let scheme = match tls {
            Some(_) => Scheme::Https,
            None => Scheme::Http,
        };
        let options = server::Options {
            port: self.port,
            interface: self.interface,
            ipv6: self.ipv6,
            listeners: self.listeners,
            unix_listeners: self.unix_listeners,
            config: self.config,
            scheme,
            tls,
        };
        let server = server::start(options, Arc::new(self.handler)).await?;
        match (server.local_addrs().first(), self.after_start) {
            (Some(addr), Some(after_start)) => {
                after_start(addr.port(), scheme, IpAddress::from(addr.ip()));
            }
            (Some(addr), None) => {
                default_after_start(addr.port(), scheme, IpAddress::from(addr.ip()));
            }
            // Only Unix domain sockets: `after_start` speaks of ports.
            (None, Some(_)) => tracing::warn!(
                "after_start is not run: the server listens on Unix domain sockets only"
            ),
            (None, None) => {
                if let Some(addr) = server.unix_addrs().first() {
                    println!("Listening on {} ({scheme})", unix_addr_text(addr));
                }
            }
        }
        Ok(server)
    }
}

impl<H, B> fmt::Debug for Builder<H, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("port", &self.port)
            .field("interface", &self.interface)
            .field("ipv6", &self.ipv6)
            .field("listeners", &self.listeners)
            .field("unix_listeners", &self.unix_listeners)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The handler made by [`Builder::read_request_body`]: reads the body,
/// then calls the inner handler with it. It appears only in the builder's
/// type:
///
/// ```
/// let builder: mist::Builder<mist::ReadBody<_>, mist::Connection> =
///     mist::new(|req: http::Request<mist::bytes::Bytes>| async move {
///         http::Response::new(mist::ResponseData::from(req.into_body()))
///     })
///     .read_request_body(1024, http::Response::new(""));
/// # let _ = builder;
/// ```
pub struct ReadBody<H> {
    inner: H,
    limit: usize,
    failure: FailureResponse,
}

struct FailureResponse {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
}

impl FailureResponse {
    fn to_response(&self) -> Response<ResponseData> {
        let mut response = Response::new(ResponseData::Bytes(self.body.clone()));
        *response.status_mut() = self.status;
        *response.version_mut() = self.version;
        *response.headers_mut() = self.headers.clone();
        response
    }
}

impl<H: Handler<Bytes>> Handler<Connection> for ReadBody<H> {
    async fn call(&self, request: Request<Connection>) -> Response<ResponseData> {
        let client = get_client_info(request.body()).ok();
        match read_body(request, self.limit).await {
            Ok(mut request) => {
                if let Some(client) = client {
                    request.extensions_mut().insert(client);
                }
                self.inner.call(request).await
            }
            Err(err) => {
                tracing::debug!(%err, "request body refused");
                self.failure.to_response()
            }
        }
    }
}
