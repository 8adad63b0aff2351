//! The request body: it stays on the socket until the handler asks for it.

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use http::Request;
use std::fmt;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Piece size used when a [`BodyStream`] is polled as a `Stream`.
const STREAM_PIECE: usize = 64 * 1024;

/// Most memory `read_body` reserves ahead of the bytes actually received.
const INITIAL_CAPACITY_CAP: usize = 64 * 1024;

/// Where the bytes of a lazy request body come from. Each protocol engine
/// implements it (HTTP/1.1 today), so this module never depends on one.
pub(crate) trait BodySource: Send + Sync {
    /// The next piece of the body, at most `max` bytes; `None` at its end.
    /// `gather`: a piece of a body with a declared length waits for `max`
    /// bytes (at most 64 KiB) or the rest of the body; otherwise it is
    /// what has arrived.
    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        gather: bool,
    ) -> Poll<Result<Option<Bytes>, ReadError>>;

    /// The body's length when the client declared it.
    fn declared_length(&self) -> Option<u64>;
}

/// The body of a request as the handler first receives it: still on the
/// socket, plus what is known about the client.
///
/// Read it with [`read_body`] (all of it, with a limit) or [`stream()`]
/// (piece by piece); ask who sent it with [`get_client_info`](crate::get_client_info).
/// The body must be read before the handler returns its response, or by
/// the response's own chunked stream (see [`stream()`]); a body left
/// unread is discarded by the server.
///
/// ```no_run
/// use http::{Request, Response};
/// use mist::{Connection, ResponseData};
///
/// async fn handler(req: Request<Connection>) -> Response<ResponseData> {
///     let peer = mist::get_client_info(req.body()).map(|info| info.port).unwrap_or(0);
///     let body = mist::read_body(req, 64 * 1024).await.map(|r| r.into_body()).unwrap_or_default();
///     Response::new(ResponseData::from(format!("{} bytes from port {peer}", body.len())))
/// }
/// ```
pub struct Connection {
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) body: Option<Box<dyn BodySource>>,
}

impl Connection {
    pub(crate) fn new(peer: Option<SocketAddr>, body: Option<Box<dyn BodySource>>) -> Connection {
        Connection { peer, body }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .field("has_body", &self.body.is_some())
            .finish()
    }
}

/// Why a request body could not be read.
///
/// After any of these the server closes the connection once the response
/// is sent, unless the unread rest of the body is small enough to discard.
///
/// ```
/// use http::StatusCode;
/// use mist::ReadError;
///
/// fn status_for(err: ReadError) -> StatusCode {
///     match err {
///         ReadError::ExcessBody => StatusCode::PAYLOAD_TOO_LARGE,
///         ReadError::Timeout => StatusCode::REQUEST_TIMEOUT,
///         _ => StatusCode::BAD_REQUEST,
///     }
/// }
/// assert_eq!(status_for(ReadError::ExcessBody), StatusCode::PAYLOAD_TOO_LARGE);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadError {
    /// The body is larger than the limit the handler gave. Known from
    /// `Content-Length` before anything is read, and for chunked bodies as
    /// soon as the decoded bytes pass the limit.
    ExcessBody,
    /// The body is malformed (bad chunked framing) or shorter than
    /// declared: the client closed the connection before its end.
    MalformedBody,
    /// The client sent nothing for longer than the body read timeout
    /// ([`Builder::body_read_timeout`](crate::Builder::body_read_timeout)).
    Timeout,
}

impl ReadError {
    /// A short description, as `Display` writes it.
    ///
    /// ```
    /// assert_eq!(mist::ReadError::ExcessBody.as_str(), "request body larger than the limit");
    /// ```
    pub const fn as_str(&self) -> &'static str {
        match self {
            ReadError::ExcessBody => "request body larger than the limit",
            ReadError::MalformedBody => "malformed or truncated request body",
            ReadError::Timeout => "timed out reading the request body",
        }
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for ReadError {}

/// Reads the whole request body, refusing bodies over `max_body_limit` bytes.
///
/// A `Content-Length` over the limit fails with [`ReadError::ExcessBody`]
/// before a byte is read; a chunked body fails as soon as the bytes decoded
/// pass the limit. The memory used is bounded by the limit either way.
/// If the client sent `Expect: 100-continue`, the interim `100 Continue`
/// goes out here, when the body is first asked for.
///
/// ```no_run
/// use http::{Request, Response};
/// use mist::{Connection, ResponseData};
///
/// async fn echo(req: Request<Connection>) -> Response<ResponseData> {
///     match mist::read_body(req, 1024 * 1024).await {
///         Ok(req) => Response::new(ResponseData::from(req.into_body())),
///         Err(mist::ReadError::ExcessBody) => status(413),
///         Err(_) => status(400),
///     }
/// }
/// # fn status(code: u16) -> Response<ResponseData> {
/// #     Response::builder().status(code).body(ResponseData::empty()).unwrap()
/// # }
/// ```
pub async fn read_body(
    req: Request<Connection>,
    max_body_limit: usize,
) -> Result<Request<Bytes>, ReadError> {
    let (parts, conn) = req.into_parts();
    let Some(mut source) = conn.body else {
        return Ok(Request::from_parts(parts, Bytes::new()));
    };
    if let Some(length) = source.declared_length() {
        if length > max_body_limit as u64 {
            return Err(ReadError::ExcessBody);
        }
    }
    // One byte more than the limit tells an exact fit from an excess.
    let budget = max_body_limit.saturating_add(1);
    let mut first: Option<Bytes> = None;
    let mut rest: Option<BytesMut> = None;
    let mut total = 0usize;
    while let Some(piece) = poll_fn(|cx| source.poll_data(cx, budget - total, true)).await? {
        total += piece.len();
        if total > max_body_limit {
            return Err(ReadError::ExcessBody);
        }
        match (&mut first, &mut rest) {
            (None, _) => first = Some(piece),
            (Some(head), None) => {
                // Grow with what arrives: a declared length is only a claim,
                // and reserving it up front would let a client make the
                // server allocate whatever the limit allows.
                let hint = source
                    .declared_length()
                    .map_or(0, |n| n.min(INITIAL_CAPACITY_CAP as u64) as usize);
                let mut buf = BytesMut::with_capacity(hint.max(head.len() + piece.len()));
                buf.extend_from_slice(head);
                buf.extend_from_slice(&piece);
                rest = Some(buf);
            }
            (Some(_), Some(buf)) => buf.extend_from_slice(&piece),
        }
    }
    let body = match (first, rest) {
        (_, Some(buf)) => buf.freeze(),
        (Some(only), None) => only,
        (None, None) => Bytes::new(),
    };
    Ok(Request::from_parts(parts, body))
}

/// Takes the body out of a request to read it piece by piece.
///
/// The Rust form of mist's `stream`: call [`BodyStream::consume`] with the
/// most bytes you want per piece until it returns [`Chunk::Done`], or use
/// the [`BodyStream`] as a `futures` `Stream` of `Bytes`. Works the same for
/// `Content-Length` and chunked bodies (extensions and trailers are read
/// and dropped). The request keeps its head; its body is then empty.
///
/// The stream can also be the response's body: the engine writes each
/// piece back while the client is still sending the rest (a proxy, an
/// upload transformed on the fly). A client waiting for `100 Continue`
/// gets it ahead of the response then.
///
/// ```no_run
/// use futures_util::StreamExt; // the `futures-util` crate's stream combinators
/// use http::{Request, Response};
/// use mist::{Connection, ResponseData};
///
/// async fn shout(mut req: Request<Connection>) -> Response<ResponseData> {
///     let upper = mist::stream(&mut req)
///         .map(|piece| piece.map(|bytes| bytes.to_ascii_uppercase()));
///     Response::new(ResponseData::chunked_stream(upper))
/// }
/// ```
///
/// ```no_run
/// use http::{Request, Response};
/// use mist::{Chunk, Connection, ResponseData};
///
/// async fn count(mut req: Request<Connection>) -> Response<ResponseData> {
///     let mut body = mist::stream(&mut req);
///     let mut total = 0;
///     loop {
///         match body.consume(1024).await {
///             Ok(Chunk::Data(bytes)) => total += bytes.len(),
///             Ok(Chunk::Done) => break,
///             Err(_) => return Response::builder().status(400).body(ResponseData::empty()).unwrap(),
///         }
///     }
///     Response::new(ResponseData::from(total.to_string()))
/// }
/// ```
pub fn stream(req: &mut Request<Connection>) -> BodyStream {
    BodyStream {
        source: req.body_mut().body.take(),
    }
}

/// One pull of a [`BodyStream`]: mist's `Chunk`.
///
/// ```no_run
/// # async fn f(mut req: http::Request<mist::Connection>) -> Result<(), mist::ReadError> {
/// let mut body = mist::stream(&mut req);
/// match body.consume(512).await? {
///     mist::Chunk::Data(bytes) => println!("first {} bytes", bytes.len()),
///     mist::Chunk::Done => println!("empty body"),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// Some bytes of the body: at least one, at most the size asked for.
    Data(Bytes),
    /// The body has been read completely.
    Done,
}

/// A request body read in pieces; see [`stream()`].
///
/// Also a `futures` `Stream` of `Result<Bytes, ReadError>`: each piece is
/// what has arrived, at most 64 KiB, without waiting for more.
///
/// ```no_run
/// use futures_util::StreamExt; // for `next`, from the `futures-util` crate
/// # async fn f(mut req: http::Request<mist::Connection>) -> Result<(), mist::ReadError> {
/// let mut body = mist::stream(&mut req);
/// while let Some(piece) = body.next().await {
///     println!("{} bytes", piece?.len());
/// }
/// # Ok(()) }
/// ```
pub struct BodyStream {
    source: Option<Box<dyn BodySource>>,
}

impl BodyStream {
    /// Reads the next piece of at most `size` bytes (at least 1).
    ///
    /// As in mist, a body with a declared length is read in whole pieces:
    /// the call waits until `size` bytes (at most 64 KiB), or the rest of
    /// the body, have arrived. A chunked body's pieces end where its chunks
    /// do.
    ///
    /// ```no_run
    /// # async fn f(mut req: http::Request<mist::Connection>) -> Result<(), mist::ReadError> {
    /// let mut body = mist::stream(&mut req);
    /// while let mist::Chunk::Data(bytes) = body.consume(4096).await? {
    ///     println!("{} bytes", bytes.len());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn consume(&mut self, size: usize) -> Result<Chunk, ReadError> {
        let Some(source) = self.source.as_mut() else {
            return Ok(Chunk::Done);
        };
        match poll_fn(|cx| source.poll_data(cx, size.max(1), true)).await? {
            Some(bytes) => Ok(Chunk::Data(bytes)),
            None => {
                self.source = None;
                Ok(Chunk::Done)
            }
        }
    }

    /// The body's length when the client declared it with `Content-Length`.
    ///
    /// ```no_run
    /// # fn f(mut req: http::Request<mist::Connection>) {
    /// let body = mist::stream(&mut req);
    /// if let Some(length) = body.declared_length() {
    ///     println!("expecting {length} bytes");
    /// }
    /// # }
    /// ```
    pub fn declared_length(&self) -> Option<u64> {
        self.source.as_ref().and_then(|s| s.declared_length())
    }
}

impl Stream for BodyStream {
    type Item = Result<Bytes, ReadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(source) = self.source.as_mut() else {
            return Poll::Ready(None);
        };
        match source.poll_data(cx, STREAM_PIECE, false) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Some(bytes))) => Poll::Ready(Some(Ok(bytes))),
            Poll::Ready(Ok(None)) => {
                self.source = None;
                Poll::Ready(None)
            }
            Poll::Ready(Err(e)) => {
                self.source = None;
                Poll::Ready(Some(Err(e)))
            }
        }
    }
}

impl fmt::Debug for BodyStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyStream")
            .field("finished", &self.source.is_none())
            .finish()
    }
}
