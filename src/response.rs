//! Response bodies.

use bytes::Bytes;
use futures_core::Stream;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};
use tracing::warn;

/// The error type a chunked stream may fail with.
///
/// ```
/// let err: mist::BoxError = "backend went away".into();
/// assert_eq!(err.to_string(), "backend went away");
/// ```
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of a response: what the handler returns inside `Response`.
///
/// Mirrors mist's `ResponseData`. The engine owns the framing headers:
/// a `content-length` or `transfer-encoding` the handler sets is replaced
/// by what the body really is, except for a valid `content-length` on a
/// [`Chunked`](ResponseData::Chunked) stream and on an empty body
/// answering a HEAD (see the variants). Non-exhaustive, so that more kinds
/// of body can come.
///
/// ```
/// use mist::ResponseData;
/// let hello = ResponseData::from("Hello, world!");
/// let chunks = ResponseData::chunked(["one", "two", "three"]);
/// # let _ = (hello, chunks);
/// ```
#[non_exhaustive]
pub enum ResponseData {
    /// A body of known size, sent with `content-length`. An empty body
    /// answering a HEAD keeps the `content-length` the handler set (the
    /// size its GET would have, RFC 9110 §9.3.2), so a HEAD handler need
    /// not build the body.
    Bytes(Bytes),
    /// A body sent piece by piece with `transfer-encoding: chunked` (or,
    /// to an HTTP/1.0 client, until the connection closes; over HTTP/2,
    /// as DATA frames). Every piece is written as soon as the stream
    /// yields it and nothing else is ready.
    ///
    /// When the handler knows the length (a proxy passing on its
    /// upstream's, a download of known size) and sets a valid
    /// `content-length`, the body goes out with it instead, without chunk
    /// framing, and the connection stays usable also for HTTP/1.0. The
    /// stream must then give exactly that many bytes: once it has, it is
    /// dropped without waiting for its end (an upstream that stays open
    /// does not hold up the connection); bytes it has ready beyond are not
    /// sent (and an HTTP/1.1 connection closes after the response); a
    /// stream that ends short resets the connection (the HTTP/2 stream),
    /// so that the client does not wait for the rest. Both mistakes are
    /// logged as warnings.
    Chunked(ChunkedBody),
    /// A file, or part of one, sent with `sendfile(2)` where the connection
    /// allows; made by [`send_file`](crate::send_file).
    File(crate::file::FileBody),
    /// A WebSocket: the body of the `101` response made by
    /// [`websocket`](crate::websocket); the connection is handed over to it.
    Websocket(crate::ws::actor::WebsocketUpgrade),
    /// A stream of server-sent events, made by
    /// [`server_sent_events`](crate::server_sent_events).
    ServerSentEvents(crate::sse::SseStream),
    /// The body of a `101` or of a `2xx` to CONNECT: the connection is
    /// handed over to the handler's code; made by
    /// [`ResponseData::upgrade`].
    Upgrade(crate::upgrade::Upgrade),
}

impl ResponseData {
    /// An empty body.
    ///
    /// ```
    /// let body = mist::ResponseData::empty();
    /// # let _ = body;
    /// ```
    pub fn empty() -> ResponseData {
        ResponseData::Bytes(Bytes::new())
    }

    /// A chunked body from an iterator of chunks: mist's `Chunked(Iterator)`.
    /// The iterator runs on the connection's task, so it should not block;
    /// use [`ResponseData::chunked_stream`] for chunks that take time.
    ///
    /// ```
    /// let body = mist::ResponseData::chunked((1..=3).map(|i| format!("line {i}\n")));
    /// # let _ = body;
    /// ```
    pub fn chunked<I>(chunks: I) -> ResponseData
    where
        I: IntoIterator,
        I::Item: Into<Bytes>,
        I::IntoIter: Send + 'static,
    {
        ResponseData::Chunked(ChunkedBody(Box::pin(IterStream {
            iter: chunks.into_iter(),
        })))
    }

    /// A chunked body from an async stream of chunks. If the stream yields an
    /// error, the connection is closed without the final empty chunk, so the
    /// client can tell the body is incomplete (an HTTP/1.0 client, whose
    /// body runs until close, by a reset; a Unix domain socket has none,
    /// see [`Builder::unix_listener`](crate::Builder::unix_listener)). Any `futures` stream works;
    /// the one below is written by hand to need only the `futures-core`
    /// crate (`futures-util`'s `stream::iter`, `unfold` or a channel's
    /// stream wrapper are the usual sources).
    ///
    /// ```
    /// use mist::bytes::Bytes;
    /// use std::pin::Pin;
    /// use std::task::{Context, Poll};
    ///
    /// struct Countdown(u8);
    /// impl futures_core::Stream for Countdown {
    ///     type Item = Result<Bytes, std::io::Error>;
    ///     fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
    ///         if self.0 == 0 { return Poll::Ready(None); }
    ///         self.0 -= 1;
    ///         Poll::Ready(Some(Ok(Bytes::from(format!("{}\n", self.0)))))
    ///     }
    /// }
    /// let body = mist::ResponseData::chunked_stream(Countdown(3));
    /// # let _ = body;
    /// ```
    pub fn chunked_stream<S, T, E>(stream: S) -> ResponseData
    where
        S: Stream<Item = Result<T, E>> + Send + 'static,
        T: Into<Bytes>,
        E: Into<BoxError>,
    {
        ResponseData::Chunked(ChunkedBody(Box::pin(MapStream { stream })))
    }
}

/// A small text response, for errors the engines answer themselves.
pub(crate) fn plain_response(
    status: http::StatusCode,
    text: &'static str,
) -> http::Response<ResponseData> {
    let mut response = http::Response::new(ResponseData::from(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

impl Default for ResponseData {
    fn default() -> Self {
        ResponseData::empty()
    }
}

impl From<Bytes> for ResponseData {
    fn from(b: Bytes) -> Self {
        ResponseData::Bytes(b)
    }
}

impl From<&'static str> for ResponseData {
    fn from(s: &'static str) -> Self {
        ResponseData::Bytes(Bytes::from_static(s.as_bytes()))
    }
}

impl From<&'static [u8]> for ResponseData {
    fn from(s: &'static [u8]) -> Self {
        ResponseData::Bytes(Bytes::from_static(s))
    }
}

impl From<String> for ResponseData {
    fn from(s: String) -> Self {
        ResponseData::Bytes(Bytes::from(s))
    }
}

impl From<Vec<u8>> for ResponseData {
    fn from(v: Vec<u8>) -> Self {
        ResponseData::Bytes(Bytes::from(v))
    }
}

impl fmt::Debug for ResponseData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseData::Bytes(b) => f.debug_tuple("Bytes").field(&b.len()).finish(),
            ResponseData::Chunked(_) => f.write_str("Chunked(..)"),
            ResponseData::File(file) => f.debug_tuple("File").field(file).finish(),
            ResponseData::Websocket(_) => f.write_str("Websocket(..)"),
            ResponseData::ServerSentEvents(_) => f.write_str("ServerSentEvents(..)"),
            ResponseData::Upgrade(_) => f.write_str("Upgrade(..)"),
        }
    }
}

/// The stream behind [`ResponseData::Chunked`]; build it with
/// [`ResponseData::chunked`] or [`ResponseData::chunked_stream`].
///
/// ```
/// let body = mist::ResponseData::chunked(["a", "b"]);
/// assert!(matches!(body, mist::ResponseData::Chunked(_)));
/// ```
pub struct ChunkedBody(Pin<Box<dyn Stream<Item = Result<Bytes, BoxError>> + Send>>);

impl ChunkedBody {
    /// The next chunk; a panicking stream is an error, not a crash.
    pub(crate) fn poll_chunk(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, BoxError>>> {
        catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll_next(cx)))
            .unwrap_or_else(|_| Poll::Ready(Some(Err("the response stream panicked".into()))))
    }

    /// For a stream with a declared `content-length`, of which `left`
    /// bytes are still to send: counts `chunk` off, cut to what is left,
    /// and says whether more may follow. Once the length is reached the
    /// stream is not waited for: it is only looked at once more, for
    /// bytes beyond the length, which the response cannot carry (a
    /// warning: the handler's mistake). Both engines frame a declared
    /// length with this.
    pub(crate) fn fit(&mut self, chunk: &mut Bytes, left: &mut u64) -> Fit {
        let len = chunk.len() as u64;
        if len < *left {
            *left -= len;
            return Fit::More;
        }
        let overflowed = len > *left || self.overflows_now();
        chunk.truncate(*left as usize);
        *left = 0;
        if overflowed {
            warn!("response stream longer than its content-length; the rest is not sent");
            return Fit::Overflowed;
        }
        Fit::Last
    }

    /// Whether the stream has more bytes ready now. Never waits: a
    /// stream that would only end later (a proxy's upstream that stays
    /// open, a channel whose sender is kept) must not hold up the
    /// connection; nor does an error after the last byte spoil the
    /// response.
    fn overflows_now(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        // Empty chunks are skipped, a bounded number of them: a stream
        // that yields nothing else must not hold the connection either.
        for _ in 0..64 {
            match self.poll_chunk(&mut cx) {
                Poll::Ready(Some(Ok(chunk))) if chunk.is_empty() => continue,
                Poll::Ready(Some(Ok(_))) => return true,
                Poll::Ready(None) | Poll::Ready(Some(Err(_))) | Poll::Pending => return false,
            }
        }
        false
    }
}

/// Where a piece leaves a stream with a declared length ([`ChunkedBody::fit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fit {
    /// Below the length: more pieces follow.
    More,
    /// The length is reached, and the stream had nothing more ready.
    Last,
    /// The length is reached, and the stream had more: not sent.
    Overflowed,
}

/// What a stream that ended `short` bytes before its declared
/// `content-length` is told: the response must not look whole, so it is
/// reset (the handler's mistake, a warning).
pub(crate) fn ended_short(short: u64) -> &'static str {
    warn!(
        short,
        "response stream ended before its content-length; resetting"
    );
    "response stream shorter than its content-length"
}

impl fmt::Debug for ChunkedBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChunkedBody(..)")
    }
}

pin_project_lite::pin_project! {
    struct IterStream<I> {
        iter: I,
    }
}

impl<I> Stream for IterStream<I>
where
    I: Iterator,
    I::Item: Into<Bytes>,
{
    type Item = Result<Bytes, BoxError>;

    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.project().iter.next().map(|chunk| Ok(chunk.into())))
    }
}

pin_project_lite::pin_project! {
    struct MapStream<S> {
        #[pin]
        stream: S,
    }
}

impl<S, T, E> Stream for MapStream<S>
where
    S: Stream<Item = Result<T, E>>,
    T: Into<Bytes>,
    E: Into<BoxError>,
{
    type Item = Result<Bytes, BoxError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.project()
            .stream
            .poll_next(cx)
            .map(|item| item.map(|r| r.map(Into::into).map_err(Into::into)))
    }
}
