//! Protocols of the handler's own: a `101 Switching Protocols` (HTTP/1.1)
//! or a `2xx` to CONNECT (a tunnel, over HTTP/1.1 and HTTP/2) hands the
//! connection's bytes to the handler's code.

use crate::io::Socket;
use crate::response::ResponseData;
use bytes::{Buf, BytesMut};
use futures_util::FutureExt;
use std::fmt;
use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

type Run = Box<dyn FnOnce(Upgraded) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The body of a response that gives the connection to the handler's
/// code: made by [`ResponseData::upgrade`].
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
    /// is caught, as a handler's is, and logged; the connection is then
    /// reset (see [`Upgraded`]'s drop).
    pub(crate) async fn start(self, upgraded: Upgraded) {
        let run = (self.run)(upgraded);
        if AssertUnwindSafe(run).catch_unwind().await.is_err() {
            tracing::error!("an upgraded connection's code panicked; connection reset");
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
    /// Any other status (or a 101 over HTTP/1.0 or HTTP/2, which have
    /// none) is the handler's mistake: the client gets a 500 instead, and
    /// the error is logged. A request whose body was not read whole is
    /// answered 400, since its bytes would reach `run` as the protocol's.
    /// The server's write timeout does not apply to `run`'s writes, and a
    /// graceful shutdown waits for `run` until its grace period ends, then
    /// drops it. For WebSockets, [`websocket`](crate::websocket) does all
    /// of this and the protocol too.
    ///
    /// ```no_run
    /// use http::{header, Request, Response, StatusCode};
    /// use mist::{Connection, ResponseData};
    /// use tokio::io::{AsyncReadExt, AsyncWriteExt};
    ///
    /// /// `Upgrade: echo`: every byte comes back, until the client stops.
    /// async fn echo(req: Request<Connection>) -> Response<ResponseData> {
    ///     let asked = req.headers().get(header::UPGRADE).is_some_and(|v| v == "echo");
    ///     if !asked {
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

/// A connection given to the handler's code by [`ResponseData::upgrade`]:
/// bytes both ways, over TCP, TLS, a Unix domain socket or an HTTP/2
/// stream alike. Reads start with what the client sent right after its
/// request. Shutting down the write side (`AsyncWriteExt::shutdown`) sends
/// the end (a FIN, TLS's `close_notify`, HTTP/2's `END_STREAM`); dropping
/// it closes the connection, with a reset if the code panicked.
///
/// ```no_run
/// use tokio::io::AsyncWriteExt;
/// async fn greet(mut io: mist::Upgraded) -> std::io::Result<()> {
///     io.write_all(b"hello\n").await?;
///     io.shutdown().await
/// }
/// ```
pub struct Upgraded {
    io: Box<dyn Socket>,
    /// What the client sent past its request, already read.
    read_buf: BytesMut,
}

impl Upgraded {
    pub(crate) fn new(io: Box<dyn Socket>, read_buf: BytesMut) -> Upgraded {
        Upgraded { io, read_buf }
    }
}

impl fmt::Debug for Upgraded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upgraded")
            .field("buffered", &self.read_buf.len())
            .finish_non_exhaustive()
    }
}

impl AsyncRead for Upgraded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read_buf.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let n = this.read_buf.len().min(buf.remaining());
        buf.put_slice(&this.read_buf[..n]);
        this.read_buf.advance(n);
        if this.read_buf.is_empty() {
            // The engine's buffer is not kept for the connection's life.
            this.read_buf = BytesMut::new();
        }
        Poll::Ready(Ok(()))
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
        // Dropped while the code panics: a clean end would pass for a
        // finished exchange.
        if std::thread::panicking() {
            self.io.reset_on_close();
        }
    }
}
