//! The HTTP/1.1 connection loop: the only code here that touches a socket.
//! It reads heads, lends the transport to the handler for requests with a
//! body, writes responses (gathering those of pipelined requests into one
//! write), and decides after each exchange whether the connection goes on.

use super::decode::Decoder;
use super::encode::{self, encode_chunk_size, encode_head, Framing, LAST_CHUNK};
use super::error::ParseError;
use super::io::{
    map_give, pool_give, pool_take, take_back, with_lent, write_out_lent, Lent, LentBody, Transport,
};
use super::parse::{parse_head, Head};
use crate::body::Connection;
use crate::builder::Handler;
use crate::client_info::Identity;
use crate::config::{
    Config, COPY_BODY_MAX, LINGER_BYTES, LINGER_TIME, MAX_PIPELINED, WRITE_BUFFER_FLUSH,
};
use crate::io::{deadline_after, poll_deadline, timed, Deadline, Plain, Socket, StopWatch};
use crate::response::{ended_short, plain_response, ChunkedBody, Fit, ResponseData};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::uri::Scheme;
use http::{response, Method, Request, Response, StatusCode, Version};
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::{debug, error, trace};

/// What a connection needs besides its stream and the handler.
pub(crate) struct ConnContext {
    pub peer: Option<SocketAddr>,
    pub scheme: Scheme,
    pub config: Arc<Config>,
    /// Becomes true when the server shuts down: finish the request in
    /// flight, then close.
    pub shutdown: StopWatch,
    /// The certificates the client presented in the TLS handshake, or
    /// its Unix socket's credentials, for each request's extensions.
    pub identity: Identity,
}

/// What the connection keeps of a request's head while its handler runs.
#[derive(Clone, Copy)]
struct Exchange {
    method_is_head: bool,
    /// A CONNECT: a 2xx to it would open a tunnel, which mist does not serve.
    method_is_connect: bool,
    version: Version,
    keep_alive: bool,
}

/// Serves one connection until it closes.
///
/// The exchange of each request happens here, not in a future of its own:
/// Rust moves a future by copying all of it, and a boxed per-request
/// future holding the handler's (kilobytes for a router with a few async
/// routes) was copied several times per request. Now the handler's future
/// is written once into a slot the connection owns and polled in place;
/// everything else a request needs is synchronous, and the rare awaits
/// (large or streamed bodies, files, upgrades, draining) are boxed.
pub(crate) async fn serve<S, H>(stream: S, handler: Arc<H>, ctx: ConnContext)
where
    S: Socket,
    H: Handler<Connection>,
{
    let mut transport = Transport::new(stream);
    let mut write_buf = BytesMut::new();
    let mut gathered = 0usize;
    let config = Arc::clone(&ctx.config);
    // The first head must arrive within the header timeout of the accept.
    let mut head_deadline = Some(deadline_after(config.header_read_timeout));
    // The slot for the handler's future: kept across pipelined requests,
    // freed whenever the connection may go idle. (The last `Host` is kept,
    // if at most 255 bytes: the next request almost always repeats it.)
    let mut slot = None;
    // Something was waited for since the last response was encoded: the
    // `Date` cache may be stale (see `encode::with_date`).
    let mut waited_since_encoding = true;
    // No request answered yet: only the first may be HTTP/2's preface.
    let mut first = true;
    loop {
        if transport.read_buf.is_empty() {
            slot = None;
        }
        // The block below ends the life of `head` before the next await:
        // every value alive across an await takes room in this future,
        // which every connection keeps, idle ones too. (The request itself
        // does live across the rare flush before a body is lent; that
        // await's state stays under the head read's, which sizes it.)
        let (exchange, request, declared) = {
            let mut refused = None;
            let Some(head) = read_head(
                &mut transport,
                &mut write_buf,
                &mut head_deadline,
                &ctx,
                &mut refused,
            )
            .await
            else {
                if let Some(err) = refused {
                    if first && config.http2 && is_http2_preface(&transport.read_buf) {
                        // Boxed: the HTTP/2 engine's state stays out of
                        // every HTTP/1.1 connection's future.
                        let Transport {
                            stream, read_buf, ..
                        } = transport;
                        return Box::pin(crate::http2::serve(
                            stream,
                            read_buf,
                            Arc::clone(&handler),
                            ctx,
                        ))
                        .await;
                    }
                    debug!(peer = ?ctx.peer, %err, "refusing request");
                    Box::pin(respond_to_parse_error(
                        &mut transport,
                        &mut write_buf,
                        err,
                        &config,
                    ))
                    .await;
                }
                return;
            };
            transport.begin_body(Decoder::new(head.body), head.expect_continue);
            let exchange = Exchange {
                method_is_head: head.request.method() == Method::HEAD,
                method_is_connect: head.request.method() == Method::CONNECT,
                version: head.request.version(),
                keep_alive: head.keep_alive,
            };
            let declared = match head.body {
                super::parse::BodyKind::Length(n) => Some(n),
                _ => None,
            };
            (exchange, head.request, declared)
        };
        let slot = slot.get_or_insert_with(|| Box::pin(None));
        // Set when the response's body stream reads the request body.
        let mut streamed_body = None;
        let concluded = if transport.decoder.is_pending() {
            // The handler may read the body (and send 100 Continue):
            // earlier responses must reach the socket first.
            if !write_buf.is_empty()
                && Box::pin(flush(&mut transport, &mut write_buf, &config))
                    .await
                    .is_err()
            {
                return;
            }
            let lent = Arc::new(Mutex::new(Some(transport)));
            let body = LentBody {
                transport: Arc::clone(&lent),
                declared,
                timeout: config.body_read_timeout,
            };
            let request = with_body(request, Connection::new(ctx.peer, Some(Box::new(body))));
            start(slot.as_mut(), || handler.call(request));
            let outcome = poll_fn(|cx| poll_handler(slot.as_mut(), cx)).await;
            // A response stream that kept the request body reads it while
            // it is written: the transport stays lent to it (a proxy, an
            // upload transformed on the fly).
            let body_kept = Arc::strong_count(&lent) > 1
                && matches!(&outcome, Ok(response) if matches!(response.body(), ResponseData::Chunked(_)));
            match take_back(&lent) {
                Some(back) => transport = back,
                None => return,
            }
            transport.disarm();
            if body_kept && transport.decoder.is_pending() {
                streamed_body = Some(lent);
            }
            conclude(
                outcome,
                exchange,
                &mut transport,
                &mut write_buf,
                &ctx,
                true,
                streamed_body.is_some(),
            )
        } else {
            start(slot.as_mut(), || handler.call(request));
            // While the handler waits, responses gathered for earlier
            // pipelined requests are written out, so a slow handler does
            // not hold back answers that are ready. The response is
            // encoded as soon as it is there, not moved around first.
            let mut meanwhile = true;
            poll_fn(|cx| {
                let Poll::Ready(outcome) = poll_handler(slot.as_mut(), cx) else {
                    waited_since_encoding = true;
                    if meanwhile {
                        meanwhile = write_meanwhile(&mut transport.stream, &mut write_buf, cx);
                    }
                    return Poll::Pending;
                };
                // Responses answered back to back (pipelined, nothing
                // waited for since the last one was encoded) share one
                // reading of the clock. (An empty buffer: the first of a
                // batch, or one after a read or a flush had to wait.)
                let check_clock = waited_since_encoding || write_buf.is_empty();
                waited_since_encoding = false;
                Poll::Ready(conclude(
                    outcome,
                    exchange,
                    &mut transport,
                    &mut write_buf,
                    &ctx,
                    check_clock,
                    false,
                ))
            })
            .await
        };
        let (rest, mut close_after) = match concluded {
            Concluded::HandOver(response) => {
                Box::pin(hand_over(
                    transport,
                    write_buf,
                    *response,
                    exchange.version,
                    ctx,
                ))
                .await;
                return;
            }
            Concluded::Respond(rest, close) => (rest, close),
        };
        // The rare remainder (large bodies, streams, files) is boxed:
        // inline, its state would size every connection.
        let written = match rest {
            Ok(Rest::Nothing) => Ok(()),
            Ok(rest) => {
                // A stream may run for long and leave its last chunk in the
                // buffer: the next response reads the clock again.
                waited_since_encoding = true;
                match (rest, streamed_body) {
                    (Rest::Chunks(chunks, framing), Some(lent)) => {
                        // Lent again: the stream reads the request body
                        // between the writes of its chunks.
                        *lent.lock().unwrap_or_else(PoisonError::into_inner) = Some(transport);
                        let written = Box::pin(write_chunks(
                            Out::Lent(&lent, Box::pin(tokio::time::sleep(Duration::ZERO))),
                            &mut write_buf,
                            chunks,
                            framing,
                            &config,
                        ))
                        .await;
                        match take_back(&lent) {
                            Some(back) => transport = back,
                            None => return,
                        }
                        transport.disarm();
                        // A stream that stopped at a malformed piece of the
                        // body (and did not pass the error on): what follows
                        // it is not a request.
                        close_after |= matches!(transport.decoder, Decoder::Failed);
                        written
                    }
                    (rest, _) => {
                        Box::pin(write_rest(&mut transport, &mut write_buf, rest, &config)).await
                    }
                }
            }
            Err(err) => Err(err),
        };
        if written.is_err() || close_after {
            // A client that said this request was its last sends nothing
            // after it (RFC 9112 §9.6).
            let last_request = written.is_ok() && !exchange.keep_alive;
            Box::pin(close(&mut transport, &mut write_buf, &config, last_request)).await;
            return;
        }
        if transport.decoder.is_pending() {
            // Answer first, then read past the rest of the body.
            let drained = Box::pin(async {
                flush(&mut transport, &mut write_buf, &config).await.is_ok()
                    && transport
                        .discard_body(config.max_discard, config.body_read_timeout)
                        .await
            })
            .await;
            if !drained {
                Box::pin(close(&mut transport, &mut write_buf, &config, false)).await;
                return;
            }
        }
        // Gather the responses of pipelined requests into one write, but
        // never more than a bounded number of them.
        gathered += 1;
        if transport.read_buf.is_empty()
            || gathered >= MAX_PIPELINED
            || write_buf.len() >= WRITE_BUFFER_FLUSH
        {
            if flush(&mut transport, &mut write_buf, &config)
                .await
                .is_err()
            {
                return;
            }
            gathered = 0;
        }
        head_deadline = None;
        first = false;
    }
}

/// HTTP/2's connection preface (RFC 9113 §3.4), or as much of it as has
/// arrived: the HTTP/1.1 parser refuses its request line, `PRI *
/// HTTP/2.0`, as an unknown or malformed version as soon as it sees
/// `HTTP/2`. A client with prior knowledge that the server speaks HTTP/2;
/// the HTTP/2 engine reads the rest of the preface and checks it whole.
fn is_http2_preface(buf: &[u8]) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let seen = buf.len().min(PREFACE.len());
    seen >= b"PRI * HTTP/2".len() && buf[..seen] == PREFACE[..seen]
}

/// The request with its body.
fn with_body(mut request: Request<Connection>, body: Connection) -> Request<Connection> {
    *request.body_mut() = body;
    request
}

/// Starts the handler: its future is written straight into the slot.
/// A panic while creating it leaves the slot empty, which
/// [`poll_handler`] reports as a panic.
fn start<F>(mut slot: Pin<&mut Option<F>>, call: impl FnOnce() -> F) {
    if catch_unwind(AssertUnwindSafe(|| slot.set(Some(call())))).is_err() {
        slot.set(None);
    }
}

/// Polls the handler's future in its slot, turning a panic into `Err`, and
/// drops the future as soon as it is done.
fn poll_handler<F>(
    mut slot: Pin<&mut Option<F>>,
    cx: &mut Context<'_>,
) -> Poll<Result<Response<ResponseData>, ()>>
where
    F: Future<Output = Response<ResponseData>>,
{
    let Some(fut) = slot.as_mut().as_pin_mut() else {
        return Poll::Ready(Err(()));
    };
    let polled = match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
        Ok(Poll::Pending) => return Poll::Pending,
        Ok(Poll::Ready(response)) => Ok(response),
        Err(_) => Err(()),
    };
    slot.set(None);
    Poll::Ready(polled)
}

/// Writes what it can of `buf` without waiting; false once writing failed
/// (the error surfaces again at the next flush).
fn write_meanwhile<S: AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> bool {
    while !buf.is_empty() {
        match Pin::new(&mut *stream).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) if n > 0 => buf.advance(n),
            Poll::Ready(_) => return false,
            Poll::Pending => break,
        }
    }
    true
}

/// What becomes of a request once its handler is done.
enum Concluded {
    /// A WebSocket or an event stream takes the connection over. (Boxed:
    /// this value is held across the handover's await.)
    HandOver(Box<Response<ResponseData>>),
    /// The response is encoded (as far as it can be without waiting); what
    /// is left to write, and whether the connection closes after it.
    Respond(io::Result<Rest>, bool),
}

/// Turns the handler's outcome into a response in `write_buf` and decides
/// whether the connection goes on. Synchronous: the common response adds
/// no await state to the connection. `check_clock`: the `Date` cache may
/// be stale (see `encode::with_date`).
fn conclude<S: Socket>(
    outcome: Result<Response<ResponseData>, ()>,
    exchange: Exchange,
    transport: &mut Transport<S>,
    write_buf: &mut BytesMut,
    ctx: &ConnContext,
    check_clock: bool,
    body_kept: bool,
) -> Concluded {
    let config = &*ctx.config;
    let (response, mut close) = match outcome {
        // The common response: no tunnel, no hand-over, no interim status.
        Ok(response)
            if !exchange.method_is_connect
                && !response.status().is_informational()
                && match response.body() {
                    ResponseData::Bytes(_) | ResponseData::Chunked(_) | ResponseData::File(_) => {
                        true
                    }
                    ResponseData::ServerSentEvents(_) => exchange.method_is_head,
                    ResponseData::Websocket(_) | ResponseData::Upgrade(_) => false,
                } =>
        {
            (response, false)
        }
        Ok(response) => match unusual(response, exchange, transport, ctx) {
            Unusual::HandOver(response) => return Concluded::HandOver(response),
            Unusual::Respond(response, close) => (response, close),
        },
        Err(()) => {
            error!(peer = ?ctx.peer, "request handler panicked; answering 500");
            (
                plain_response(StatusCode::INTERNAL_SERVER_ERROR, "internal server error"),
                true,
            )
        }
    };
    let body_unread = transport.decoder.is_pending();
    // The response's body is a stream that kept the request body, and it
    // will be written (not for HEAD, 204, 304): it will read the body as
    // it goes. A client waiting for `100 Continue` gets it ahead of the
    // head, and a body too large to discard is no reason to close yet.
    let body_streams = body_kept
        && body_unread
        && !exchange.method_is_head
        && !encode::status_has_no_body(response.status())
        && matches!(response.body(), ResponseData::Chunked(_));
    if body_streams {
        transport.continue_before_response(write_buf);
    }
    // RFC 9110 §10.1.1: a client still waiting for 100 Continue may or may
    // not send its body now, so the stream's next request cannot be found;
    // and half an interim response can never be completed.
    let continue_owed = match transport.continue_state {
        super::io::Continue::Owed(0) => body_unread,
        super::io::Continue::Owed(_) => true,
        super::io::Continue::No => false,
    };
    close |= !exchange.keep_alive
        || ctx.shutdown.is_stopping()
        || matches!(transport.decoder, Decoder::Failed)
        || continue_owed
        // Too much to discard: unless the response's stream reads it.
        || (!body_streams
            && matches!(transport.decoder, Decoder::Length(rest) if rest > config.max_discard));
    let (parts, body) = response.into_parts();
    let rest = encode_response(
        write_buf,
        &parts,
        body,
        exchange.method_is_head,
        exchange.version,
        &mut close,
        check_clock,
    );
    map_give(parts.headers);
    Concluded::Respond(rest, close)
}

/// What [`unusual`] makes of a response.
enum Unusual {
    HandOver(Box<Response<ResponseData>>),
    /// The response to encode, and whether the connection closes after it.
    Respond(Response<ResponseData>, bool),
}

/// The responses `conclude` does not simply encode: a hand-over to a
/// WebSocket, an event stream or an upgrade; what the client gets instead
/// of a response that would break the connection; or a CONNECT's ordinary
/// answer. Kept out of `conclude`, whose common path it would otherwise
/// weigh on.
#[inline(never)]
fn unusual<S: Socket>(
    response: Response<ResponseData>,
    exchange: Exchange,
    transport: &Transport<S>,
    ctx: &ConnContext,
) -> Unusual {
    let upgrade = matches!(response.body(), ResponseData::Upgrade(_));
    let takes_over = upgrade || matches!(response.body(), ResponseData::Websocket(_));
    // An upgrade is a 101 to an HTTP/1.1 request other than CONNECT, or a
    // 2xx to a CONNECT (a tunnel); anything else would leave the client
    // reading the handler's protocol as a response.
    let switches = if exchange.method_is_connect {
        response.status().is_success()
    } else {
        response.status() == StatusCode::SWITCHING_PROTOCOLS
            && exchange.version == Version::HTTP_11
            && response.headers().contains_key(http::header::UPGRADE)
    };
    if upgrade && !switches {
        error!(peer = ?ctx.peer, status = %response.status(), version = ?exchange.version, "an upgrade needs a 101 with an upgrade field to an HTTP/1.1 request, or a 2xx to a CONNECT; answering 500");
        return Unusual::Respond(
            plain_response(StatusCode::INTERNAL_SERVER_ERROR, "internal server error"),
            true,
        );
    }
    // RFC 9110 §9.3.6: a 2xx to CONNECT switches the connection to a
    // tunnel, and the client would send its tunnel's bytes next; only an
    // upgrade opens one (over HTTP/1.1 a WebSocket is a GET, and its 101
    // is no 2xx). First: an event stream must not be handed over.
    if exchange.method_is_connect && response.status().is_success() && !upgrade {
        debug!(peer = ?ctx.peer, "a CONNECT answered without a tunnel; answering 501");
        return Unusual::Respond(
            plain_response(StatusCode::NOT_IMPLEMENTED, "no tunnel is served here"),
            true,
        );
    }
    // The bytes after a WebSocket's head are frames: a body the handler
    // left unread (or a malformed one) would be taken for them, where a
    // proxy in front sees request content (found by a smuggling probe). No
    // WebSocket client sends one; refused, and so for every upgrade.
    if takes_over && !matches!(transport.decoder, Decoder::Done) {
        debug!(peer = ?ctx.peer, "an upgrade with a request body not read; answering 400");
        return Unusual::Respond(
            plain_response(
                StatusCode::BAD_REQUEST,
                "an upgrade request must not have a body",
            ),
            true,
        );
    }
    // WebSockets, upgrades and event streams take the connection over (an
    // event stream answering HEAD is only a head, encoded as usual).
    if takes_over
        || (matches!(response.body(), ResponseData::ServerSentEvents(_))
            && !exchange.method_is_head)
    {
        return Unusual::HandOver(Box::new(response));
    }
    // A 1xx as the final response would desynchronise the client: it waits
    // for the real one (upgrades have their own response body).
    if response.status().is_informational() {
        error!(peer = ?ctx.peer, status = %response.status(), "handler answered with an interim status; answering 500");
        return Unusual::Respond(
            plain_response(StatusCode::INTERNAL_SERVER_ERROR, "internal server error"),
            true,
        );
    }
    // A CONNECT answered otherwise (a 407, a 404): an ordinary response.
    Unusual::Respond(response, false)
}

/// Reads until a complete head is in the buffer. `None`: the client
/// closed, went idle past the keep-alive timeout, or the server is shutting
/// down between requests; or the head is refused, with the reason in
/// `refused` (an out-parameter: a `Result` holding a head would stay in the
/// connection's future across the await that answers the refusal).
async fn read_head<S: Socket>(
    transport: &mut Transport<S>,
    write_buf: &mut BytesMut,
    head_deadline: &mut Option<Instant>,
    ctx: &ConnContext,
    refused: &mut Option<ParseError>,
) -> Option<Head> {
    let config = &*ctx.config;
    // Bytes already known to hold no end of head: a head trickled in byte by
    // byte is not parsed again from the start after every read.
    let mut scanned = 0;
    loop {
        // An empty buffer holds no head to parse, nor a partial one to
        // move out of a large buffer.
        if !transport.read_buf.is_empty() && worth_parsing(&transport.read_buf, scanned, config) {
            match parse_head(
                &mut transport.read_buf,
                config,
                &ctx.scheme,
                &mut transport.host,
                ctx.peer,
                &ctx.identity,
            ) {
                Ok(Some(head)) => return Some(head),
                Ok(None) => {}
                Err(err) => {
                    *refused = Some(err);
                    return None;
                }
            }
            scanned = transport.read_buf.len();
            transport.shrink_for_trickle();
        }
        // Everything buffered has been answered: send it before waiting.
        if flush(transport, write_buf, config).await.is_err() {
            return None;
        }
        let idle = transport.read_buf.is_empty();
        let deadline = match (*head_deadline, idle) {
            (Some(at), _) => Deadline::At(at),
            (None, true) => Deadline::After(config.keep_alive_timeout),
            (None, false) => {
                let at = deadline_after(config.header_read_timeout);
                *head_deadline = Some(at);
                Deadline::At(at)
            }
        };
        let read = if idle {
            match wait_idle(transport, write_buf, deadline, &ctx.shutdown).await {
                // Bytes are waiting on a plain socket: read them now.
                Idle::Readable => transport.read_more(deadline).await,
                Idle::Read(read) => Ok(read),
                Idle::TimedOut => Err(crate::io::TimedOut),
                Idle::Stopping => return None,
            }
        } else {
            transport.read_more(deadline).await
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => return None,
            // The header timeout starts when a head has to be waited for
            // (above), not at every read: most heads arrive whole, and
            // then the clock is not read at all.
            Ok(Ok(_)) => {}
            Err(_) if idle && transport.read_buf.is_empty() && head_deadline.is_none() => {
                trace!(peer = ?ctx.peer, "idle keep-alive connection timed out");
                return None;
            }
            Err(_) if transport.read_buf.is_empty() => return None,
            Err(_) => {
                *refused = Some(ParseError::Timeout);
                return None;
            }
        }
    }
}

/// How an idle wait ended.
enum Idle {
    /// A plain socket has bytes to read (nothing has been read yet).
    Readable,
    /// Another stream read into the buffer.
    Read(io::Result<usize>),
    TimedOut,
    /// The server is shutting down.
    Stopping,
}

/// Waits for the next request between requests: one plain `poll_fn` over
/// the socket, the deadline and shutdown, since every idle connection keeps
/// this state. On a plain socket it waits for readiness holding no buffers
/// at all. Biased: bytes already sent are still read when the server is
/// shutting down; only a silent connection is closed.
async fn wait_idle<S: Socket>(
    transport: &mut Transport<S>,
    write_buf: &mut BytesMut,
    deadline: Deadline,
    shutdown: &StopWatch,
) -> Idle {
    if transport.stream.as_plain().is_some() {
        pool_give(&mut transport.read_buf);
        pool_give(write_buf);
    } else {
        transport.shrink_idle();
    }
    let mut armed = false;
    poll_fn(|cx| {
        let ready = match transport.stream.as_plain() {
            Some(socket) => socket.poll_read_ready(cx).map(|ready| match ready {
                Ok(()) => Idle::Readable,
                Err(err) => Idle::Read(Err(err)),
            }),
            None => transport.poll_read(cx).map(Idle::Read),
        };
        if ready.is_ready() {
            return ready;
        }
        if shutdown.poll_stopped(cx).is_ready() {
            // The shutdown may be seen before the readiness of a request
            // that already arrived: ask the socket itself, so a request
            // sent before the shutdown is still answered.
            let pending = transport.stream.as_plain().is_some_and(|socket| {
                let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
                matches!(socket2::SockRef::from(&socket.as_fd()).peek(&mut probe), Ok(n) if n > 0)
            });
            return Poll::Ready(if pending {
                Idle::Readable
            } else {
                Idle::Stopping
            });
        }
        poll_deadline(&mut transport.timer, &mut armed, deadline, cx).map(|()| Idle::TimedOut)
    })
    .await
}

/// Whether parsing can tell more than last time: the new bytes may end the
/// head, or the buffer has reached a size limit.
fn worth_parsing(buf: &[u8], scanned: usize, config: &Config) -> bool {
    if scanned == 0 || buf.len() >= config.max_head_size {
        return true;
    }
    if buf.len() > config.max_request_target && !buf.contains(&b'\n') {
        return true;
    }
    // An empty line ends the head: LF CRLF, or LF LF (RFC 9112 §2.2).
    let fresh = &buf[scanned.saturating_sub(2)..];
    fresh.windows(2).any(|w| w == b"\n\n") || fresh.windows(3).any(|w| w == b"\n\r\n")
}

/// Hands the connection over to a protocol that runs to its end: a
/// WebSocket (after its `101`) or an event stream (after its head); if
/// that fails before the handover, the connection is closed here.
async fn hand_over<S: Socket>(
    mut transport: Transport<S>,
    mut write_buf: BytesMut,
    response: Response<ResponseData>,
    version: Version,
    ctx: ConnContext,
) {
    let (parts, body) = response.into_parts();
    // RFC 9112 §6.3 (7): an HTTP/1.0 client reads an event stream until close.
    let chunked = version == Version::HTTP_11;
    let (framing, connection) = match &body {
        // The handshake's own `connection: upgrade` goes out as it is.
        ResponseData::Websocket(_) => (Framing::NoBody, None),
        // A 101 says `connection: upgrade`, whatever the handler's said
        // (a `close` there would contradict the switch).
        ResponseData::Upgrade(_) if parts.status == StatusCode::SWITCHING_PROTOCOLS => {
            (Framing::NoBody, Some(&b"upgrade"[..]))
        }
        // A 2xx to CONNECT has no framing fields (RFC 9110 §9.3.6).
        ResponseData::Upgrade(_) => (Framing::NoBody, None),
        ResponseData::ServerSentEvents(_) if chunked => (Framing::Chunked, None),
        ResponseData::ServerSentEvents(_) => {
            (Framing::CloseDelimited, connection_header(true, version))
        }
        _ => return close(&mut transport, &mut write_buf, &ctx.config, false).await,
    };
    if write_buf.capacity() == 0 {
        write_buf = pool_take();
    }
    // What the handler's `connection` field says does not matter: the
    // protocol that takes over runs until one side ends it.
    let _ = encode_head(&mut write_buf, &parts, framing, connection, true);
    if flush(&mut transport, &mut write_buf, &ctx.config)
        .await
        .is_err()
    {
        return close(&mut transport, &mut write_buf, &ctx.config, false).await;
    }
    // Nothing of the exchange is needed any more: the write buffer goes
    // back to the pool and the head is freed, instead of being held for
    // the life of the protocol that takes over.
    drop(parts);
    write_buf.clear();
    pool_give(&mut write_buf);
    let Transport {
        stream, read_buf, ..
    } = transport;
    let handover = crate::io::Handover {
        io: Box::new(stream),
        read_buf,
        shutdown: ctx.shutdown,
        peer: ctx.peer,
        write_timeout: ctx.config.write_timeout,
    };
    match body {
        ResponseData::Websocket(websocket) => websocket.start(handover).await,
        ResponseData::ServerSentEvents(events) => events.start(handover, chunked).await,
        ResponseData::Upgrade(upgrade) => upgrade.start(handover).await,
        _ => {}
    }
}

/// What of a response is left to write once its head (and a small body)
/// is in the write buffer.
enum Rest {
    Nothing,
    /// A body too large to copy: one vectored write with the buffer.
    Bytes(bytes::Bytes),
    /// A chunk stream, chunk-framed (HTTP/1.1), until close (HTTP/1.0) or
    /// as long as the handler's `content-length` says.
    Chunks(ChunkedBody, Framing),
    File(crate::file::FileBody),
}

/// Encodes a response into `write_buf`, as far as it can be without
/// waiting: the head, and a body small enough to copy. `close` is set when
/// the body's framing needs the connection to end (a stream to an HTTP/1.0
/// client). Synchronous, so the common response adds no await state to
/// every request; what needs writing afterwards comes back as [`Rest`].
fn encode_response(
    write_buf: &mut BytesMut,
    parts: &response::Parts,
    body: ResponseData,
    method_is_head: bool,
    version: Version,
    close: &mut bool,
    check_clock: bool,
) -> io::Result<Rest> {
    let no_body = encode::status_has_no_body(parts.status);
    if write_buf.capacity() == 0 {
        *write_buf = pool_take();
    }
    let stream_framing = |close: &mut bool| match (no_body, version) {
        (true, _) => Framing::NoBody,
        (false, Version::HTTP_11) => Framing::Chunked,
        // RFC 9112 §6.3 (7): an HTTP/1.0 client reads until close.
        (false, _) => {
            if !method_is_head {
                *close = true;
            }
            Framing::CloseDelimited
        }
    };
    let (framing, rest) = match body {
        ResponseData::Bytes(bytes) => {
            let framing = if no_body {
                Framing::NoBody
            } else if bytes.is_empty() && method_is_head {
                // A HEAD answered without building the body: the length
                // the handler says its GET would have (RFC 9110 §9.3.2).
                Framing::Length(encode::declared_length(&parts.headers).unwrap_or(0))
            } else {
                Framing::Length(bytes.len() as u64)
            };
            (framing, Rest::Bytes(bytes))
        }
        ResponseData::Chunked(chunks) => {
            // A stream whose length the handler knows (a proxy passing on
            // its upstream's) goes out with it, unframed.
            let framing = match encode::declared_length(&parts.headers) {
                Some(n) if !no_body => Framing::Length(n),
                _ => stream_framing(close),
            };
            (framing, Rest::Chunks(chunks, framing))
        }
        ResponseData::File(file) => {
            let framing = if no_body {
                Framing::NoBody
            } else {
                Framing::Length(file.len())
            };
            (framing, Rest::File(file))
        }
        // Only HEAD gets here: the head of the stream, and no stream.
        ResponseData::ServerSentEvents(_) => (stream_framing(close), Rest::Nothing),
        // Taken by `hand_over` before any response is encoded.
        ResponseData::Websocket(_) | ResponseData::Upgrade(_) => {
            return Err(io::Error::other("an upgrade's body outside an upgrade"));
        }
    };
    let head_at = write_buf.len();
    let connection = connection_header(*close, version);
    if encode_head(write_buf, parts, framing, connection, check_clock) && !*close {
        // The handler asked to close. Its field went out as written unless
        // the engine wrote its own (HTTP/1.0's keep-alive): then the head
        // is written again, saying close.
        *close = true;
        if connection.is_some() {
            write_buf.truncate(head_at);
            let closing = connection_header(true, version);
            let _ = encode_head(write_buf, parts, framing, closing, false);
        }
    }
    if no_body || method_is_head {
        return Ok(Rest::Nothing);
    }
    Ok(match rest {
        Rest::Bytes(bytes) if bytes.len() <= COPY_BODY_MAX => {
            write_buf.extend_from_slice(&bytes);
            Rest::Nothing
        }
        Rest::File(file) if file.len() == 0 => Rest::Nothing,
        rest => rest,
    })
}

/// Writes what [`encode_response`] left: a large body, a stream, a file.
async fn write_rest<S: Socket>(
    transport: &mut Transport<S>,
    write_buf: &mut BytesMut,
    rest: Rest,
    config: &Config,
) -> io::Result<()> {
    match rest {
        Rest::Nothing => Ok(()),
        // Head and body in one vectored write, without copying the body.
        Rest::Bytes(bytes) => {
            transport
                .write_out(&mut (&mut *write_buf).chain(bytes), config.write_timeout)
                .await
        }
        Rest::Chunks(chunks, framing) => {
            write_chunks(Out::Own(transport), write_buf, chunks, framing, config).await
        }
        Rest::File(file) => {
            // On a plain socket the head waits for the file's first bytes
            // and leaves with them (`sendfile` pushes its last piece): a small
            // file goes out in one segment instead of two.
            flush_corked(transport, write_buf, config).await?;
            let Transport { stream, timer, .. } = transport;
            match stream.as_plain() {
                Some(socket) => {
                    file.send_zero_copy(socket, timer, config.write_timeout)
                        .await
                }
                None => file.send_copied(stream, timer, config.write_timeout).await,
            }
        }
    }
}

/// Streams a chunked body: every chunk the stream has ready is gathered,
/// and the buffer is written whenever the stream has to wait. With
/// `Framing::Length` the stream must give exactly that many bytes: what
/// goes beyond is not sent, and a stream that ends short resets the
/// connection, so that the client does not wait for the rest (both are
/// the handler's mistake, logged as a warning).
async fn write_chunks<S: Socket>(
    mut out: Out<'_, S>,
    write_buf: &mut BytesMut,
    mut chunks: ChunkedBody,
    framing: Framing,
    config: &Config,
) -> io::Result<()> {
    let framed = framing == Framing::Chunked;
    let mut left = match framing {
        Framing::Length(n) => Some(n),
        _ => None,
    };
    // A declared length of 0 takes no piece: the stream is only looked at.
    let mut fit = match left {
        Some(0) => chunks.fit(&mut Bytes::new(), &mut 0),
        _ => Fit::More,
    };
    while fit == Fit::More {
        let next = match poll_fn(|cx| Poll::Ready(chunks.poll_chunk(cx))).await {
            Poll::Ready(next) => next,
            Poll::Pending => {
                out.flush(write_buf, config).await?;
                poll_fn(|cx| chunks.poll_chunk(cx)).await
            }
        };
        match next {
            Some(Ok(mut chunk)) => {
                if chunk.is_empty() {
                    continue;
                }
                if let Some(left) = &mut left {
                    fit = chunks.fit(&mut chunk, left);
                }
                if framed {
                    encode_chunk_size(write_buf, chunk.len());
                }
                if chunk.len() <= COPY_BODY_MAX {
                    write_buf.extend_from_slice(&chunk);
                } else {
                    out.write_out(&mut (&mut *write_buf).chain(chunk), config.write_timeout)
                        .await?;
                }
                if framed {
                    write_buf.put_slice(b"\r\n");
                }
                if write_buf.len() >= WRITE_BUFFER_FLUSH {
                    out.flush(write_buf, config).await?;
                }
            }
            Some(Err(err)) => {
                // No last chunk, and a reset rather than a clean close: the
                // client must not take the body as whole, also when the body
                // runs until close (HTTP/1.0).
                debug!(%err, "chunked response stream failed; resetting the connection");
                let _ = out.flush(write_buf, config).await;
                if !out.abort() && !framed && left.is_none() {
                    // A Unix domain socket has no reset, and a body that
                    // runs until close has no end of its own.
                    error!(%err, "a response stream failed on a connection that cannot be reset, with a body that runs until close (HTTP/1.0): the client cannot tell it is incomplete");
                }
                return Err(io::Error::other(err));
            }
            None => {
                if let Some(short @ 1..) = left {
                    let why = ended_short(short);
                    let _ = out.flush(write_buf, config).await;
                    out.abort();
                    return Err(io::Error::other(why));
                }
                if framed {
                    write_buf.put_slice(LAST_CHUNK);
                }
                return Ok(());
            }
        }
    }
    if fit == Fit::Overflowed {
        // The response is whole; the connection closes after it rather
        // than carry on beside a stream left unread.
        out.flush(write_buf, config).await?;
        return Err(io::Error::other(
            "response stream longer than its content-length",
        ));
    }
    Ok(())
}

/// Where a chunked body goes: the connection's transport, or one that
/// stays lent because the body's stream reads the request body.
enum Out<'a, S> {
    Own(&'a mut Transport<S>),
    /// With the timer of its writes.
    Lent(&'a Lent<S>, Pin<Box<tokio::time::Sleep>>),
}

impl<S: Socket> Out<'_, S> {
    async fn write_out<B: Buf>(&mut self, buf: &mut B, timeout: Duration) -> io::Result<()> {
        match self {
            Out::Own(transport) => transport.write_out(buf, timeout).await,
            Out::Lent(lent, timer) => write_out_lent(lent, timer, buf, timeout).await,
        }
    }

    /// [`flush`] through either.
    async fn flush(&mut self, write_buf: &mut BytesMut, config: &Config) -> io::Result<()> {
        if write_buf.is_empty() {
            return Ok(());
        }
        let result = self.write_out(write_buf, config.write_timeout).await;
        write_buf.clear();
        result
    }

    /// See [`Transport::abort`].
    fn abort(&mut self) -> bool {
        match self {
            Out::Own(transport) => transport.abort(),
            Out::Lent(lent, _) => with_lent(lent, |transport| transport.abort()).unwrap_or(true),
        }
    }
}

/// Ends a connection after its last response: reset if the response failed
/// midway; otherwise flush, then close, lingering if the client may still
/// be sending (an unread or broken body, pipelined requests after a close),
/// with a half-close first unless `last_request`: the client said the
/// request just answered was its last.
async fn close<S: Socket>(
    transport: &mut Transport<S>,
    write_buf: &mut BytesMut,
    config: &Config,
    last_request: bool,
) {
    if transport.aborted() {
        return;
    }
    if flush_corked(transport, write_buf, config).await.is_err() {
        return;
    }
    let unread = !transport.read_buf.is_empty()
        || transport.decoder.is_pending()
        || matches!(transport.decoder, Decoder::Failed);
    if unread {
        linger(transport).await;
    } else if last_request && transport.stream.as_plain().is_some_and(no_input_seen) {
        // The client said this request was its last and all of it has been
        // read: nothing more will come, and the close itself sends the
        // corked response with the FIN, a system call fewer per connection
        // (nginx closes the same way, also only when no read event is
        // pending). TLS still needs its close_notify.
    } else {
        // The FIN (and TLS's close_notify) before the close. Not left to
        // the close itself: a client may already have sent more (pipelined
        // after this response), and closing with unread input resets the
        // connection and discards what is still queued to send, the
        // response corked by `flush_corked` included. The shutdown sends it.
        let _ = timed(
            &mut transport.timer,
            Deadline::After(config.write_timeout),
            transport.stream.shutdown(),
        )
        .await;
    }
    // The next connection takes the buffers instead of allocating its own.
    transport.read_buf.clear();
    pool_give(&mut transport.read_buf);
    write_buf.clear();
    pool_give(write_buf);
}

/// The reactor has seen no bytes arrive since the last read came up short
/// (tokio clears a socket's read readiness then): a close now would not
/// meet unread input, which would turn it into a reset. Asks without a
/// system call; a stray byte after the request (an old client's CRLF after
/// a body) takes the half-close path instead.
fn no_input_seen(socket: &dyn Plain) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    socket.poll_read_ready(&mut cx).is_pending()
}

/// Writes the buffer when more is sure to follow at once: the FIN of a
/// closing connection, or a file's bytes. On a plain socket (Linux) the
/// bytes are corked so that they leave with what follows (see
/// [`crate::io::write_corked`]); elsewhere a plain flush.
async fn flush_corked<S: Socket>(
    transport: &mut Transport<S>,
    write_buf: &mut BytesMut,
    config: &Config,
) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(socket) = transport.stream.as_plain() {
        let written = crate::io::write_corked(
            socket,
            write_buf,
            &mut transport.timer,
            config.write_timeout,
        )
        .await;
        write_buf.clear();
        return written;
    }
    flush(transport, write_buf, config).await
}

/// The `connection` header the engine adds, if any.
fn connection_header(close: bool, version: Version) -> Option<&'static [u8]> {
    match (close, version) {
        (true, _) => Some(b"close"),
        (false, Version::HTTP_10) => Some(b"keep-alive"),
        _ => None,
    }
}

async fn flush<S: Socket>(
    transport: &mut Transport<S>,
    write_buf: &mut BytesMut,
    config: &Config,
) -> io::Result<()> {
    if write_buf.is_empty() {
        return Ok(());
    }
    let result = transport.write_out(write_buf, config.write_timeout).await;
    write_buf.clear();
    result
}

async fn respond_to_parse_error<S: Socket>(
    transport: &mut Transport<S>,
    write_buf: &mut BytesMut,
    err: ParseError,
    config: &Config,
) {
    let (parts, _) = plain_response(err.status(), err.as_str()).into_parts();
    // Closing already, whatever the fields say.
    let _ = encode_head(
        write_buf,
        &parts,
        Framing::Length(err.as_str().len() as u64),
        Some(b"close"),
        true,
    );
    write_buf.extend_from_slice(err.as_str().as_bytes());
    if flush(transport, write_buf, config).await.is_ok() {
        linger(transport).await;
    }
}

/// Closes our side, then reads and discards what the client still sends
/// for a short while (RFC 9112 §9.6), so that a client still busy sending
/// gets to read the response instead of a connection reset.
async fn linger<S: Socket>(transport: &mut Transport<S>) {
    let Transport {
        stream,
        timer,
        read_buf,
        ..
    } = transport;
    crate::io::linger_close(stream, read_buf, timer, LINGER_TIME, LINGER_BYTES).await;
}
