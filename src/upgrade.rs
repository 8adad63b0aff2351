//! Protocols of the handler's own: a `101 Switching Protocols` (HTTP/1.1)
//! or a `2xx` to CONNECT (a tunnel, over HTTP/1.1 and HTTP/2) hands the
//! connection's bytes to the handler's code.

use crate::io::{Handover, Prefixed, Socket, StopWatch};
use crate::response::ResponseData;
use futures_util::FutureExt;
use std::fmt;
use std::future::Future;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

type Run = Box<dyn FnOnce(Upgraded) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The body of a response that gives the connection to the handler's
/// code: made by [`ResponseData::upgrade`].
///
/// ```
/// let body = mist::ResponseData::upgrade(|_io| async {});
/// assert!(matches!(body, mist::ResponseData::Upgrade(_)));
/// ```
pub struct Upgrade {
    run: Run,
}

impl fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upgrade").finish_non_exhaustive()
    }
}

impl Upgrade {
    /// Runs the handler's code on the connection until it is done. A panic
    /// (of the closure or of its future) is caught, as a handler's is, and
    /// logged; the connection is then reset, whenever the [`Upgraded`] is
    /// dropped.
    pub(crate) async fn start(self, handover: Handover) {
        let peer = handover.peer;
        let failed = Arc::new(AtomicBool::new(false));
        let upgraded = Upgraded::new(handover, Arc::clone(&failed));
        let run = self.run;
        let outcome = match catch_unwind(AssertUnwindSafe(move || run(upgraded))) {
            Ok(future) => {
                let mut future = std::pin::pin!(AssertUnwindSafe(future).catch_unwind());
                // Declared after the future, so dropped before it when the
                // connection is dropped midway (the end of a shutdown's
                // grace): the `Upgraded` inside then resets.
                let cut = Cut(&failed);
                let outcome = future.as_mut().await;
                std::mem::forget(cut);
                outcome
            }
            Err(panic) => Err(panic),
        };
        if outcome.is_err() {
            failed.store(true, Ordering::Relaxed);
            tracing::error!(
                ?peer,
                "an upgraded connection's code panicked; connection reset"
            );
        }
    }
}

impl ResponseData {
    /// The body of a response that switches the connection to a protocol of
    /// the handler's own: with status `101 Switching Protocols` (and the
    /// `upgrade` and `connection: upgrade` fields the protocol asks for) to
    /// an HTTP/1.1 request that asked for it in its `upgrade` field, or with
    /// a `2xx` status to a CONNECT (a tunnel, RFC 9110 §9.3.6, over HTTP/1.1
    /// or HTTP/2). Once the head is written, `run` gets the connection as
    /// an [`Upgraded`] byte stream and keeps it until its future ends; the
    /// bytes the client sent right after its request come first.
    ///
    /// Any other status (a 101 without an `upgrade` field, or over HTTP/1.0
    /// or HTTP/2, which have none) is the handler's mistake: the client
    /// gets a 500 instead, and the error is logged. A 101 goes out with
    /// `connection: upgrade`, whatever the handler's `connection` said. A
    /// request whose body was not read whole is answered 400, since its
    /// bytes would reach `run` as the protocol's.
    ///
    /// No timeout applies to `run`: an idle tunnel keeps its connection
    /// (and its place under [`Builder::max_connections`]) until `run`
    /// ends. A graceful shutdown waits for it until its grace period ends,
    /// then drops it and resets the connection (the client must not take
    /// a cut tunnel for a finished one); [`Upgraded::stopping`] tells `run`
    /// that one has begun. For WebSockets, [`websocket`](crate::websocket) does all of
    /// this and the protocol too.
    ///
    /// [`Builder::max_connections`]: crate::Builder::max_connections
    ///
    /// Whether the request asked for the protocol (its `upgrade` field, and
    /// `upgrade` among its `connection` options) is for the handler to
    /// check, as in hyper.
    ///
    /// ```no_run
    /// use http::{header, Request, Response, StatusCode};
    /// use mist::{Connection, ResponseData};
    /// use tokio::io::{AsyncReadExt, AsyncWriteExt};
    ///
    /// /// `Upgrade: echo`: every byte comes back, until the client stops.
    /// async fn echo(req: Request<Connection>) -> Response<ResponseData> {
    ///     let asked = req.headers().get(header::UPGRADE).is_some_and(|v| v == "echo");
    ///     if !asked || req.version() != http::Version::HTTP_11 {
    ///         return Response::builder().status(426).header(header::UPGRADE, "echo")
    ///             .body(ResponseData::empty()).unwrap();
    ///     }
    ///     Response::builder()
    ///         .status(StatusCode::SWITCHING_PROTOCOLS)
    ///         .header(header::UPGRADE, "echo")
    ///         .header(header::CONNECTION, "upgrade")
    ///         .body(ResponseData::upgrade(|mut io| async move {
    ///             let mut buf = [0u8; 4096];
    ///             while let Ok(n @ 1..) = io.read(&mut buf).await {
    ///                 if io.write_all(&buf[..n]).await.is_err() {
    ///                     break;
    ///                 }
    ///             }
    ///         }))
    ///         .unwrap()
    /// }
    /// ```
    ///
    /// A CONNECT proxy: the target is the request's authority. Connecting
    /// before answering makes a failure a 502, not a tunnel that breaks at
    /// once; the upstream then moves into `run`.
    ///
    /// ```no_run
    /// use http::{Request, Response, StatusCode};
    /// use mist::{Connection, ResponseData};
    ///
    /// async fn proxy(req: Request<Connection>) -> Response<ResponseData> {
    ///     let refuse = |code: StatusCode| {
    ///         Response::builder().status(code).body(ResponseData::empty()).unwrap()
    ///     };
    ///     let Some(target) = req.uri().authority().map(|a| a.to_string()) else {
    ///         return refuse(StatusCode::BAD_REQUEST);
    ///     };
    ///     // (A real proxy decides here which targets it serves.)
    ///     let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
    ///         return refuse(StatusCode::BAD_GATEWAY);
    ///     };
    ///     Response::new(ResponseData::upgrade(move |mut io| async move {
    ///         if tokio::io::copy_bidirectional(&mut io, &mut upstream).await.is_err() {
    ///             io.reset();
    ///         }
    ///     }))
    /// }
    /// ```
    pub fn upgrade<F, Fut>(run: F) -> ResponseData
    where
        F: FnOnce(Upgraded) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        ResponseData::Upgrade(Upgrade {
            run: Box::new(move |upgraded| Box::pin(run(upgraded))),
        })
    }
}

/// Marks a connection to be reset if dropped before `run` ends.
struct Cut<'a>(&'a AtomicBool);

impl Drop for Cut<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A connection given to the handler's code by [`ResponseData::upgrade`]:
/// bytes both ways, over TCP, TLS, a Unix domain socket or an HTTP/2
/// stream alike. Reads start with what the client sent right after its
/// request. Shutting down the write side (`AsyncWriteExt::shutdown`) sends
/// the end (a FIN, TLS's `close_notify`, HTTP/2's `END_STREAM`); dropping
/// it closes the connection, with a reset (where the connection has one:
/// a Unix domain socket has none) if the code panicked or
/// [`Upgraded::reset`] asked for it. Closing while the client's bytes are
/// still unread makes the kernel reset the connection too, which may
/// discard the last bytes written: to end cleanly, shut down the write
/// side and read until the client ends its own.
///
/// ```no_run
/// use tokio::io::AsyncWriteExt;
/// async fn greet(mut io: mist::Upgraded) -> std::io::Result<()> {
///     io.write_all(b"hello\n").await?;
///     io.shutdown().await
/// }
/// ```
pub struct Upgraded {
    /// The connection, after what the client sent past its request and
    /// the engine already read.
    io: Prefixed<Box<dyn Socket>>,
    /// The server's stop signal.
    shutdown: StopWatch,
    /// Close with a reset: the code panicked, or asked for it.
    failed: Arc<AtomicBool>,
}

impl Upgraded {
    fn new(handover: Handover, failed: Arc<AtomicBool>) -> Upgraded {
        let Handover {
            io,
            read_buf,
            shutdown,
            ..
        } = handover;
        Upgraded {
            io: Prefixed::new(read_buf, io),
            shutdown,
            failed,
        }
    }

    /// Resolves once the server begins a graceful shutdown (see
    /// [`Server::shutdown`](crate::Server::shutdown)): the time to end the
    /// protocol cleanly, before the grace period ends and the connection
    /// is dropped.
    ///
    /// ```no_run
    /// use tokio::io::AsyncReadExt;
    /// async fn run(mut io: mist::Upgraded) {
    ///     let stopping = io.stopping();
    ///     tokio::pin!(stopping);
    ///     let mut buf = [0u8; 1024];
    ///     loop {
    ///         tokio::select! {
    ///             read = io.read(&mut buf) => match read {
    ///                 Ok(1..) => { /* the protocol's work */ }
    ///                 _ => return,
    ///             },
    ///             () = &mut stopping => return, // say goodbye first, if the protocol can
    ///         }
    ///     }
    /// }
    /// ```
    pub fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        // A watch of its own: `self.shutdown` has one waker, and this may
        // be awaited from more than one task; and no borrow of `self`, so
        // that reading and writing go on while it is awaited.
        let watch = self.shutdown.another();
        async move { watch.stopped().await }
    }

    /// Closes the connection with a reset instead of a clean end (a TCP
    /// RST; `RST_STREAM` over HTTP/2; a Unix domain socket has none and
    /// just closes): for a tunnel whose other end failed, so that the
    /// client does not take the end for a complete exchange.
    ///
    /// ```no_run
    /// async fn proxy(io: mist::Upgraded) {
    ///     match tokio::net::TcpStream::connect("127.0.0.1:5432").await {
    ///         Ok(upstream) => { /* copy both ways */ let _ = upstream; }
    ///         Err(_) => io.reset(),
    ///     }
    /// }
    /// ```
    pub fn reset(self) {
        self.failed.store(true, Ordering::Relaxed);
    }
}

impl fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upgraded").finish_non_exhaustive()
    }
}

impl AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upgraded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl Drop for Upgraded {
    fn drop(&mut self) {
        // Dropped while the code panics, or after it did (held elsewhere),
        // or asked to: a clean end would pass for a finished exchange.
        if std::thread::panicking() || self.failed.load(Ordering::Relaxed) {
            self.io.get_ref().reset_on_close();
        }
    }
}
