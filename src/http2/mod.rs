//! HTTP/2 (RFC 9113) through the `h2` crate, which owns the framing,
//! HPACK, flow control and the stream states; this module turns its
//! streams into the handler's requests and the handler's responses into
//! frames.
//!
//! One task per connection drives the `h2` connection: every frame in and
//! out passes through it. Each stream's handler and response run on a task
//! of their own, so one connection's requests run in parallel, as hyper's
//! do; the stream tasks belong to the connection and end with it.

mod body;
mod io;

use self::body::H2Body;
use self::io::{Prefixed, StreamIo};
use crate::body::{BodySource, Connection};
use crate::builder::Handler;
use crate::config::Config;
use crate::file::FileBody;
use crate::h1::dispatch::ConnContext;
use crate::h1::encode::{date_value, status_has_no_body};
use crate::io::{deadline_after, poll_deadline, Deadline, Handover, StopWatch};
use crate::response::{BoxError, ChunkedBody, ResponseData};
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;
use tokio::time::Sleep;
use tracing::{debug, error, trace};

/// Flow-control windows, per stream and per connection: how much a client
/// may send before the handler reads it. hyper's 1 MiB; `h2`'s default of
/// 64 KiB would cap an upload at 64 KiB per round trip.
const STREAM_WINDOW: u32 = 1024 * 1024;
const CONNECTION_WINDOW: u32 = 1024 * 1024;

/// A file is read and sent in pieces of at most this size.
const FILE_PIECE: usize = 64 * 1024;

/// What every stream of a connection shares.
struct StreamContext {
    peer: Option<SocketAddr>,
    config: Arc<Config>,
    /// The connection's registration for the server's stop; streams that
    /// outlive their handler (event streams) take one of their own.
    shutdown: StopWatch,
}

/// Serves one HTTP/2 connection until it closes. `read`: bytes already
/// read from `stream` (the preface, when the HTTP/1.1 parser saw it).
pub(crate) async fn serve<S, H>(stream: S, read: BytesMut, handler: Arc<H>, ctx: ConnContext)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler<Connection>,
{
    let ConnContext {
        peer,
        config,
        shutdown,
        ..
    } = ctx;
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_concurrent_streams(config.http2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(config.max_head_size).unwrap_or(u32::MAX));
    let handshake = builder.handshake::<_, Bytes>(Prefixed::new(read, stream));
    let mut connection = tokio::select! {
        biased;
        () = shutdown.stopped() => return,
        done = tokio::time::timeout(config.header_read_timeout, handshake) => match done {
            Ok(Ok(connection)) => connection,
            Ok(Err(err)) => {
                debug!(?peer, %err, "HTTP/2 handshake failed");
                return;
            }
            Err(_) => {
                debug!(?peer, "HTTP/2 preface not received in time");
                return;
            }
        },
    };
    let keep_alive = config.keep_alive_timeout;
    let shared = Arc::new(StreamContext {
        peer,
        config,
        shutdown,
    });
    let mut streams = JoinSet::new();
    let idle = tokio::time::sleep(keep_alive);
    tokio::pin!(idle);
    // A `GOAWAY` was sent: no new streams; the connection ends once the
    // open ones have.
    let mut closing = false;
    loop {
        tokio::select! {
            biased;
            () = shared.shutdown.stopped(), if !closing => {
                connection.graceful_shutdown();
                closing = true;
            }
            accepted = connection.accept() => match accepted {
                Some(Ok((request, respond))) => {
                    let handler = Arc::clone(&handler);
                    let shared = Arc::clone(&shared);
                    // Boxed: the task cell then holds a pointer, not the
                    // handler's future (see `server::spawn_connection`).
                    streams.spawn(Box::pin(serve_stream(request, respond, handler, shared)));
                }
                Some(Err(err)) => {
                    debug!(?peer, %err, "HTTP/2 connection failed");
                    break;
                }
                None => break,
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {
                if streams.is_empty() {
                    idle.as_mut().reset(deadline_after(keep_alive));
                }
            }
            () = &mut idle, if streams.is_empty() && !closing => {
                trace!(?peer, "idle HTTP/2 connection timed out");
                connection.graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// A stream's response handle, shared with its body while a `100
/// Continue` is owed.
type Respond = Arc<Mutex<SendResponse<Bytes>>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs one stream: the handler (dropped if the client resets the stream
/// first), then its response.
async fn serve_stream<H: Handler<Connection>>(
    request: Request<RecvStream>,
    respond: SendResponse<Bytes>,
    handler: Arc<H>,
    shared: Arc<StreamContext>,
) {
    let respond = Arc::new(Mutex::new(respond));
    let method_is_head = request.method() == Method::HEAD;
    let response = match to_request(request, &respond, &shared) {
        Err((status, why)) => plain(status, why),
        Ok(request) => {
            let handled = async {
                match catch_unwind(AssertUnwindSafe(|| handler.call(request))) {
                    Ok(future) => AssertUnwindSafe(future).catch_unwind().await.ok(),
                    Err(_) => None,
                }
            };
            let reset = poll_fn(|cx| lock(&respond).poll_reset(cx));
            tokio::select! {
                biased;
                handled = handled => handled.unwrap_or_else(|| {
                    error!(peer = ?shared.peer, "request handler panicked; answering 500");
                    plain(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
                }),
                _ = reset => {
                    trace!(peer = ?shared.peer, "stream reset before its response");
                    return;
                }
            }
        }
    };
    send_response(response, &respond, method_is_head, &shared).await;
}

/// The handler's request, or the error status for one over a limit.
fn to_request(
    request: Request<RecvStream>,
    respond: &Respond,
    shared: &StreamContext,
) -> Result<Request<Connection>, (StatusCode, &'static str)> {
    let config = &shared.config;
    let target = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if target > config.max_request_target {
        return Err((StatusCode::URI_TOO_LONG, "request target too long"));
    }
    if request.headers().len() > config.max_headers {
        return Err((
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "too many header fields",
        ));
    }
    let (parts, recv) = request.into_parts();
    let body = if recv.is_end_stream() {
        None
    } else {
        // `h2` has checked the value, and checks the body against it.
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let expects_continue = parts
            .headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let continue_to = expects_continue.then(|| Arc::clone(respond));
        let body = H2Body::new(recv, declared, continue_to, config.body_read_timeout);
        Some(Box::new(body) as Box<dyn BodySource>)
    };
    Ok(Request::from_parts(
        parts,
        Connection::new(shared.peer, body),
    ))
}

/// A short plain-text response of the engine's own.
fn plain(status: StatusCode, text: &'static str) -> Response<ResponseData> {
    let mut response = Response::new(ResponseData::from(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Header fields that name HTTP/1.1 connection features: forbidden in
/// HTTP/2 (RFC 9113 §8.2.2), so a handler's are dropped.
const CONNECTION_FIELDS: [header::HeaderName; 4] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::HeaderName::from_static("keep-alive"),
];

/// The head's fields as HTTP/2 wants them: no connection fields, a `date`,
/// and `content-length` the engine's (the body's real size, when known).
fn prepare_head(headers: &mut HeaderMap, length: Option<u64>) {
    for name in &CONNECTION_FIELDS {
        headers.remove(name);
    }
    headers.remove("proxy-connection");
    if !headers.contains_key(header::DATE) {
        headers.insert(header::DATE, date_value());
    }
    match length {
        Some(n) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        None => {
            headers.remove(header::CONTENT_LENGTH);
        }
    }
}

/// Why a response body stopped.
enum Failure {
    /// The client reset the stream, or the connection ended: nobody to
    /// tell.
    Gone,
    /// The body failed (a stream's error, a file that shrank, a client
    /// that accepted nothing for the write timeout): the stream is reset.
    Failed(BoxError),
}

impl From<h2::Error> for Failure {
    fn from(_: h2::Error) -> Self {
        Failure::Gone
    }
}

/// Sends the handler's response: its head, then its body as the client's
/// flow-control window allows.
async fn send_response(
    response: Response<ResponseData>,
    respond: &Respond,
    method_is_head: bool,
    shared: &StreamContext,
) {
    let mut response = response;
    if matches!(response.body(), ResponseData::Websocket(_)) || response.status().is_informational()
    {
        // `websocket` refuses HTTP/2 requests (they carry no upgrade), so
        // only a handler that built such a response itself gets here.
        error!(peer = ?shared.peer, status = %response.status(), "a handler answered an HTTP/2 request with an upgrade or an interim status; answering 500");
        response = plain(StatusCode::INTERNAL_SERVER_ERROR, "internal server error");
    }
    let (mut parts, body) = response.into_parts();
    let no_body = status_has_no_body(parts.status);
    let length = match &body {
        ResponseData::Bytes(bytes) => Some(bytes.len() as u64),
        ResponseData::File(file) => Some(file.len()),
        _ => None,
    };
    prepare_head(&mut parts.headers, length.filter(|_| !no_body));
    let ends_here = no_body || method_is_head || length == Some(0);
    let head = Response::from_parts(parts, ());
    let mut stream = match lock(respond).send_response(head, ends_here) {
        Ok(stream) => stream,
        Err(err) => {
            debug!(peer = ?shared.peer, %err, "HTTP/2 response not sent");
            return;
        }
    };
    if ends_here {
        return;
    }
    let mut stall = Stall {
        timer: None,
        timeout: shared.config.write_timeout,
    };
    let sent = match body {
        ResponseData::Bytes(bytes) => send_data(&mut stream, &mut stall, bytes, true).await,
        ResponseData::Chunked(chunks) => send_chunks(&mut stream, &mut stall, chunks).await,
        ResponseData::File(file) => send_file(&mut stream, &mut stall, file).await,
        ResponseData::ServerSentEvents(events) => {
            let handover = Handover {
                io: Box::new(StreamIo::new(stream)),
                read_buf: BytesMut::new(),
                shutdown: shared.shutdown.another(),
                peer: shared.peer,
            };
            events.start(handover, false).await;
            return;
        }
        ResponseData::Websocket(_) => Ok(()),
    };
    if let Err(Failure::Failed(err)) = sent {
        debug!(peer = ?shared.peer, %err, "HTTP/2 response failed; resetting the stream");
        stream.send_reset(Reason::INTERNAL_ERROR);
    }
}

/// The write timeout of one response: how long the client may grant no
/// flow-control window. The timer is made on the first wait.
struct Stall {
    timer: Option<Pin<Box<Sleep>>>,
    timeout: Duration,
}

impl Stall {
    /// Waits for `poll`; fails if it makes the response wait longer than
    /// the write timeout.
    async fn wait<T>(
        &mut self,
        mut poll: impl FnMut(&mut Context<'_>) -> Poll<Result<T, Failure>>,
    ) -> Result<T, Failure> {
        let mut armed = false;
        poll_fn(|cx| {
            if let Poll::Ready(done) = poll(cx) {
                return Poll::Ready(done);
            }
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::ZERO)));
            poll_deadline(timer, &mut armed, Deadline::After(self.timeout), cx).map(|()| {
                Err(Failure::Failed(
                    "the client granted no flow-control window for the write timeout".into(),
                ))
            })
        })
        .await
    }
}

/// Capacity to send on `stream`, once the client's window grants some.
fn poll_capacity(
    stream: &mut SendStream<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<Result<usize, Failure>> {
    loop {
        match stream.poll_capacity(cx) {
            Poll::Ready(Some(Ok(0))) => continue,
            Poll::Ready(Some(Ok(granted))) => return Poll::Ready(Ok(granted)),
            Poll::Ready(Some(Err(_))) | Poll::Ready(None) => {
                return Poll::Ready(Err(Failure::Gone))
            }
            Poll::Pending => {
                return match stream.poll_reset(cx) {
                    Poll::Ready(_) => Poll::Ready(Err(Failure::Gone)),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

/// Sends `data` in as many frames as the client's window needs; `end`
/// ends the stream with its last one.
async fn send_data(
    stream: &mut SendStream<Bytes>,
    stall: &mut Stall,
    mut data: Bytes,
    end: bool,
) -> Result<(), Failure> {
    if data.is_empty() {
        if end {
            stream.send_data(data, true)?;
        }
        return Ok(());
    }
    while !data.is_empty() {
        stream.reserve_capacity(data.len());
        let granted = stall.wait(|cx| poll_capacity(stream, cx)).await?;
        let piece = data.split_to(granted.min(data.len()));
        stream.send_data(piece, end && data.is_empty())?;
    }
    Ok(())
}

/// Sends a chunked body's pieces as they come (HTTP/2 has no chunk framing:
/// each piece is DATA). A failed stream resets the stream, which tells the
/// client the body is incomplete.
async fn send_chunks(
    stream: &mut SendStream<Bytes>,
    stall: &mut Stall,
    mut chunks: ChunkedBody,
) -> Result<(), Failure> {
    loop {
        let next = poll_fn(|cx| match chunks.poll_chunk(cx) {
            Poll::Ready(next) => Poll::Ready(Ok(next)),
            // The stream's own pace, no timeout; but a client that leaves
            // ends the wait.
            Poll::Pending => stream.poll_reset(cx).map(|_| Err(Failure::Gone)),
        })
        .await?;
        match next {
            Some(Ok(chunk)) => send_data(stream, stall, chunk, false).await?,
            Some(Err(err)) => return Err(Failure::Failed(err)),
            None => return send_data(stream, stall, Bytes::new(), true).await,
        }
    }
}

/// Sends a file through user space, a bounded piece at a time.
async fn send_file(
    stream: &mut SendStream<Bytes>,
    stall: &mut Stall,
    file: FileBody,
) -> Result<(), Failure> {
    let mut pieces = file.pieces();
    loop {
        let mut piece = BytesMut::with_capacity(FILE_PIECE);
        match pieces.read(&mut piece).await {
            Ok(true) => send_data(stream, stall, piece.freeze(), false).await?,
            Ok(false) => return send_data(stream, stall, Bytes::new(), true).await,
            Err(err) => return Err(Failure::Failed(err.into())),
        }
    }
}
