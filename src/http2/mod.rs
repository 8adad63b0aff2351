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
use self::io::StreamIo;
use crate::body::{BodySource, Connection};
use crate::builder::Handler;
use crate::client_info::Identity;
use crate::config::{Config, LINGER_TIME};
use crate::file::FileBody;
use crate::h1::dispatch::ConnContext;
use crate::h1::encode::{date_value, declared_length, status_has_no_body};
use crate::h1::parse::is_host;
use crate::io::Prefixed;
use crate::io::{deadline_after, Handover, LazyDeadline, StopWatch};
use crate::response::{ended_short, plain_response, BoxError, ChunkedBody, Fit, ResponseData};
use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use h2::ext::Protocol;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::uri::{Authority, Scheme};
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinSet;
use tracing::{debug, error, trace};

/// Flow-control windows, per stream and per connection: how much a client
/// may send before handlers read it. `h2`'s default of 64 KiB would cap an
/// upload at 64 KiB per round trip; the connection's is four streams'
/// worth, so one handler that reads slowly cannot stall the uploads of the
/// others (hyper gives both 1 MiB).
const STREAM_WINDOW: u32 = 256 * 1024;
const CONNECTION_WINDOW: u32 = 1024 * 1024;

/// A file is read and sent in pieces of at most this size.
const FILE_PIECE: usize = 64 * 1024;

/// Most bytes of a response `h2` buffers per stream beyond what the
/// client's window lets out (its default is 400 KiB): with 200 streams a
/// client that grants windows and then stops reading holds 25 MiB here,
/// not 80.
const SEND_BUFFER: usize = 128 * 1024;

/// How much framing overhead of small DATA frames `h2` holds before the
/// handlers have read them (each frame under 256 bytes costs 256 minus its
/// size) until it closes the connection with `ENHANCE_YOUR_CALM`. Its
/// default, half the connection window, is about 2,000 one-byte frames: a
/// burst of small WebSocket messages from one client (3,000 in a review's
/// test) ended every stream of its connection. Four times that: 8,000
/// frames, about 1 MiB of bookkeeping at most per connection.
const DATA_FRAME_BUDGET: usize = 2 * 1024 * 1024;

/// Once no stream is open, how long closing may take: first for the client
/// to answer the graceful close, then for the last frames to be written.
const CLOSE_TIME: Duration = LINGER_TIME;

/// What every stream of a connection shares.
struct StreamContext {
    peer: Option<SocketAddr>,
    /// The connection's: `https` over TLS, whatever a client's `:scheme`
    /// claims.
    scheme: Scheme,
    config: Arc<Config>,
    /// The client's certificates or credentials, for every stream's
    /// request.
    identity: Identity,
    /// The connection's registration for the server's stop; streams that
    /// outlive their handler (event streams) take one of their own.
    shutdown: StopWatch,
}

impl StreamContext {
    /// A stream handed over to a protocol that runs to its end.
    fn handover(&self, io: StreamIo) -> Handover {
        Handover {
            io: Box::new(io),
            read_buf: BytesMut::new(),
            shutdown: self.shutdown.another(),
            peer: self.peer,
            write_timeout: self.config.write_timeout,
        }
    }
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
        scheme,
        config,
        shutdown,
        identity,
    } = ctx;
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_concurrent_streams(config.http2_max_concurrent_streams)
        .max_send_buffer_size(SEND_BUFFER)
        // WebSockets over HTTP/2 (RFC 8441): browsers use them once the
        // server announces `SETTINGS_ENABLE_CONNECT_PROTOCOL`.
        .enable_connect_protocol()
        .data_frame_budget(DATA_FRAME_BUDGET)
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
    // Keep-alive PINGs, when asked for: one outstanding at a time, and a
    // connection whose client leaves one unanswered until the next is due
    // is gone.
    let mut pings = config
        .http2_keep_alive_interval
        .and_then(|every| Some((connection.ping_pong()?, every)));
    let first_ping = pings.as_ref().map_or(Duration::MAX, |(_, every)| *every);
    let ping_timer = tokio::time::sleep_until(deadline_after(first_ping));
    tokio::pin!(ping_timer);
    let mut awaiting_pong = false;
    let shared = Arc::new(StreamContext {
        peer,
        scheme,
        config,
        identity,
        shutdown,
    });
    let mut streams = JoinSet::new();
    // One timer, polled only while no stream is open: the idle timeout,
    // then the bounds on closing.
    let timer = tokio::time::sleep(keep_alive);
    tokio::pin!(timer);
    let mut state = Closing::Open;
    loop {
        tokio::select! {
            biased;
            () = shared.shutdown.stopped(), if state == Closing::Open => {
                connection.graceful_shutdown();
                state = Closing::GoingAway;
                timer.as_mut().reset(deadline_after(CLOSE_TIME));
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
            () = &mut ping_timer, if pings.is_some() => {
                let Some((pinger, every)) = pings.as_mut() else { break };
                if awaiting_pong || pinger.send_ping(h2::Ping::opaque()).is_err() {
                    debug!(?peer, "HTTP/2 client did not answer a keep-alive PING; closing");
                    break;
                }
                awaiting_pong = true;
                ping_timer.as_mut().reset(deadline_after(*every));
            }
            pong = poll_fn(|cx| match pings.as_mut() {
                Some((pinger, _)) => pinger.poll_pong(cx),
                None => Poll::Pending,
            }), if awaiting_pong => match pong {
                Ok(_) => awaiting_pong = false,
                Err(_) => break,
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {
                if streams.is_empty() {
                    let wait = if state == Closing::Open { keep_alive } else { CLOSE_TIME };
                    timer.as_mut().reset(deadline_after(wait));
                }
            }
            () = &mut timer, if streams.is_empty() => match state {
                Closing::Open => {
                    trace!(?peer, "idle HTTP/2 connection timed out");
                    connection.graceful_shutdown();
                    state = Closing::GoingAway;
                    timer.as_mut().reset(deadline_after(CLOSE_TIME));
                }
                // The client did not complete the graceful close (it
                // answers no PING, reads nothing, or sits in the middle of
                // a header block): close at once, and give up on even that
                // if its frames cannot be written.
                Closing::GoingAway => {
                    debug!(?peer, "HTTP/2 client did not complete the graceful close");
                    connection.abrupt_shutdown(Reason::NO_ERROR);
                    state = Closing::Abrupt;
                    timer.as_mut().reset(deadline_after(CLOSE_TIME));
                }
                Closing::Abrupt => break,
            },
        }
    }
}

/// How far a connection is in closing.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Closing {
    Open,
    /// `GOAWAY` sent: no new streams; the connection ends once the open
    /// ones have and the client has answered the `PING` that follows.
    GoingAway,
    /// Closed without waiting for the client; its frames are being written.
    Abrupt,
}

/// A stream's response handle, shared with its body while a `100
/// Continue` may be owed.
pub(super) struct Respond {
    send: SendResponse<Bytes>,
    /// The client sent `Expect: 100-continue` and has not had its `100`.
    continue_owed: bool,
    /// The final response's head is sent: too late for a `100`.
    final_sent: bool,
}

impl Respond {
    /// Sends the `100 Continue` if it is owed and still can be: not after
    /// the final head, nor on a stream the client has reset (`h2` would
    /// send its HEADERS regardless).
    pub(super) fn send_continue(&mut self, cx: &mut Context<'_>) {
        if self.continue_owed && !self.final_sent && self.send.poll_reset(cx).is_pending() {
            let interim = Response::builder()
                .status(StatusCode::CONTINUE)
                .body(())
                .unwrap_or_default();
            // Fails only once the stream is gone, which its reads find.
            let _ = self.send.send_informational(interim);
        }
        self.continue_owed = false;
    }
}

pub(super) type SharedRespond = Arc<Mutex<Respond>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs one stream: the handler (dropped if the client resets the stream
/// first), then its response.
async fn serve_stream<H: Handler<Connection>>(
    request: Request<RecvStream>,
    send: SendResponse<Bytes>,
    handler: Arc<H>,
    shared: Arc<StreamContext>,
) {
    let respond = Arc::new(Mutex::new(Respond {
        send,
        continue_owed: false,
        final_sent: false,
    }));
    let method_is_head = request.method() == Method::HEAD;
    let connect = request.method() == Method::CONNECT;
    // A CONNECT opens a tunnel (a WebSocket's extended CONNECT, RFC 8441,
    // or a plain one for `ResponseData::upgrade`): the client's side of
    // the stream is not a body but the tunnel's input, kept for the
    // response that may take it.
    let mut tunnel = None;
    let response = match to_request(request, &respond, &shared, &mut tunnel) {
        Err((status, why)) => plain_response(status, why),
        Ok(request) => {
            let handled = async {
                match catch_unwind(AssertUnwindSafe(|| handler.call(request))) {
                    Ok(future) => AssertUnwindSafe(future).catch_unwind().await.ok(),
                    Err(_) => None,
                }
            };
            let reset = poll_fn(|cx| lock(&respond).send.poll_reset(cx));
            tokio::select! {
                biased;
                handled = handled => handled.unwrap_or_else(|| {
                    error!(peer = ?shared.peer, "request handler panicked; answering 500");
                    plain_response(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
                }),
                _ = reset => {
                    trace!(peer = ?shared.peer, "stream reset before its response");
                    return;
                }
            }
        }
    };
    let request = Exchange {
        method_is_head,
        connect,
        tunnel,
    };
    send_response(response, &respond, request, &shared).await;
}

/// The handler's request, or the error status for one over a limit.
///
/// As HTTP/1.1 would have it: the URI's scheme is the connection's, its
/// authority from `Host` when `:authority` is missing, and the cookie
/// crumbs a browser splits a `cookie` field into are one field again
/// (RFC 9113 §8.2.3).
fn to_request(
    request: Request<RecvStream>,
    respond: &SharedRespond,
    shared: &StreamContext,
    tunnel: &mut Option<RecvStream>,
) -> Result<Request<Connection>, (StatusCode, &'static str)> {
    let config = &shared.config;
    let (mut parts, recv) = request.into_parts();
    let target = parts.uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target > config.max_request_target {
        return Err((StatusCode::URI_TOO_LONG, "request target too long"));
    }
    join_cookies(&mut parts.headers);
    if parts.headers.len() > config.max_headers {
        return Err((
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "too many header fields",
        ));
    }
    check_target(&parts, &shared.scheme)?;
    shared.identity.insert_into(&mut parts.extensions);
    let connect = parts.method == Method::CONNECT;
    // A plain CONNECT keeps its authority-form target, as over HTTP/1.1.
    if !connect && (parts.uri.scheme() != Some(&shared.scheme) || parts.uri.authority().is_none()) {
        parts.uri = with_origin(&parts.uri, &shared.scheme, &parts.headers)
            .ok_or((StatusCode::BAD_REQUEST, "invalid :authority or host"))?;
    }
    if let Some(protocol) = parts.extensions.get::<Protocol>() {
        // An extended CONNECT (RFC 8441): the only protocol served this
        // way is a WebSocket, and its stream must stay open for it.
        if !protocol.as_str().eq_ignore_ascii_case("websocket") {
            return Err((
                StatusCode::NOT_IMPLEMENTED,
                "no tunnel but websocket is served",
            ));
        }
        if recv.is_end_stream() {
            return Err((
                StatusCode::BAD_REQUEST,
                "a websocket connect ended its stream",
            ));
        }
        // (`h2` allows `:protocol` on CONNECT only.)
        parts.uri = with_origin(&parts.uri, &shared.scheme, &parts.headers)
            .ok_or((StatusCode::BAD_REQUEST, "invalid :authority or host"))?;
        // The GET it stands for, so that one route serves WebSockets over
        // both protocols; `websocket` knows it by its `:protocol`.
        parts.method = Method::GET;
        *tunnel = Some(recv);
        return Ok(Request::from_parts(
            parts,
            Connection::new(shared.peer, None),
        ));
    }
    // A plain CONNECT's stream is a tunnel's, should the handler open one
    // (`ResponseData::upgrade`), not a body.
    if connect {
        *tunnel = Some(recv);
        return Ok(Request::from_parts(
            parts,
            Connection::new(shared.peer, None),
        ));
    }
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
        let continue_to = expects_continue.then(|| {
            lock(respond).continue_owed = true;
            Arc::clone(respond)
        });
        let body = H2Body::new(recv, declared, continue_to, config.body_read_timeout);
        Some(Box::new(body) as Box<dyn BodySource>)
    };
    Ok(Request::from_parts(
        parts,
        Connection::new(shared.peer, body),
    ))
}

/// What `h2` lets through that mist's HTTP/1.1 parser refuses, since a
/// proxy that passes the request on over HTTP/1.1 could read it otherwise
/// (found by a probe, as for HTTP/1.1): a `:path` missing or not in
/// origin form (`*` only for OPTIONS), an `:authority` or `Host` with
/// userinfo, a port that is no number or no host, a `Host` that names
/// another host than `:authority` (RFC 9113 §8.3.1), two `Host` fields,
/// and field values with whitespace at either end (§8.2.1). (A fragment
/// in `:path` cannot be seen: `h2` gives the request with the `http`
/// crate's URI, which has dropped it.)
fn check_target(
    parts: &http::request::Parts,
    scheme: &Scheme,
) -> Result<(), (StatusCode, &'static str)> {
    let malformed = |why| Err((StatusCode::BAD_REQUEST, why));
    let connect = parts.method == Method::CONNECT;
    let extended = parts.extensions.get::<Protocol>().is_some();
    match parts.uri.path_and_query().map(|path| path.as_str()) {
        // A plain CONNECT has none (`h2` checks that), and its authority
        // has a port (RFC 9113 §8.5).
        None if connect && !extended => {
            if parts.uri.port().is_none() {
                return malformed("a CONNECT without a port");
            }
        }
        None => return malformed("missing :path"),
        Some("*") if parts.method == Method::OPTIONS => {}
        Some(path) if path.starts_with('/') => {}
        Some(_) => return malformed("invalid :path"),
    }
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return malformed("more than one host field");
    }
    match (parts.uri.authority(), host) {
        (Some(authority), _) if !is_host(authority.as_str().as_bytes()) => {
            return malformed("invalid :authority")
        }
        (Some(authority), Some(host))
            if !same_host(authority.as_str().as_bytes(), host.as_bytes(), scheme) =>
        {
            return malformed("host differs from :authority")
        }
        (None, Some(host)) if !is_host(host.as_bytes()) => return malformed("invalid host"),
        (None, _) if connect => return malformed("a CONNECT without :authority"),
        _ => {}
    }
    let padded = |value: &HeaderValue| {
        let bytes = value.as_bytes();
        [bytes.first(), bytes.last()]
            .into_iter()
            .flatten()
            .any(|&b| b == b' ' || b == b'\t')
    };
    if parts.headers.values().any(padded) {
        return malformed("a field value starts or ends with whitespace");
    }
    Ok(())
}

/// Whether two authorities name the same host: letters' case aside, and a
/// port that is the scheme's default written or not.
fn same_host(a: &[u8], b: &[u8], scheme: &Scheme) -> bool {
    let default: &[u8] = if *scheme == Scheme::HTTPS {
        b":443"
    } else {
        b":80"
    };
    let a = a.strip_suffix(default).unwrap_or(a);
    let b = b.strip_suffix(default).unwrap_or(b);
    a.eq_ignore_ascii_case(b)
}

/// Joins several `cookie` fields into one, `; `-separated.
fn join_cookies(headers: &mut HeaderMap) {
    let mut crumbs = headers.get_all(header::COOKIE).iter();
    let (Some(_), Some(_)) = (crumbs.next(), crumbs.next()) else {
        return;
    };
    let mut joined = Vec::new();
    for crumb in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(crumb.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

/// `uri` with the connection's scheme, and an authority from `Host` if it
/// has none; `None` if there is no valid authority at all.
fn with_origin(uri: &Uri, scheme: &Scheme, headers: &HeaderMap) -> Option<Uri> {
    let authority = match uri.authority() {
        Some(authority) => authority.clone(),
        None => {
            let host = headers.get(header::HOST)?;
            Authority::try_from(host.as_bytes()).ok()?
        }
    };
    let mut parts = uri.clone().into_parts();
    parts.scheme = Some(scheme.clone());
    parts.authority = Some(authority);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    Uri::from_parts(parts).ok()
}

/// Header fields that name HTTP/1.1 connection features: forbidden in
/// HTTP/2 (RFC 9113 §8.2.2), so a handler's are dropped (with the fields
/// `connection` names).
fn is_connection_field(name: &header::HeaderName) -> bool {
    [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TE,
    ]
    .contains(name)
        || matches!(name.as_str(), "keep-alive" | "proxy-connection")
}

/// The head's fields as HTTP/2 wants them: no connection fields, a
/// `date`, and `content-length` the engine's (the body's real size, when
/// known). One pass over the fields finds what is there: most heads need
/// no removal, and a lookup per field that might be costs a hash each.
fn prepare_head(headers: &mut HeaderMap, length: Option<u64>) {
    let (mut has_date, mut has_length, mut has_connection_fields) = (false, false, false);
    for name in headers.keys() {
        has_date |= name == header::DATE;
        has_length |= name == header::CONTENT_LENGTH;
        has_connection_fields |= is_connection_field(name);
    }
    if has_connection_fields {
        if let Some(connection) = headers.remove(header::CONNECTION) {
            for name in connection.as_bytes().split(|&b| b == b',') {
                if let Ok(name) = header::HeaderName::from_bytes(name.trim_ascii()) {
                    headers.remove(name);
                }
            }
        }
        let found: Vec<_> = headers
            .keys()
            .filter(|n| is_connection_field(n))
            .cloned()
            .collect();
        for name in found {
            headers.remove(name);
        }
        // `connection` may have named `date` too.
        has_date = headers.contains_key(header::DATE);
    }
    if !has_date {
        headers.insert(header::DATE, date_value());
    }
    match length {
        Some(n) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        None if has_length => {
            headers.remove(header::CONTENT_LENGTH);
        }
        None => {}
    }
}

/// What `send_response` needs of the request.
struct Exchange {
    method_is_head: bool,
    /// A CONNECT, plain or extended: a 2xx to it opens a tunnel.
    connect: bool,
    /// The client's side of a CONNECT's stream (plain, or a WebSocket's
    /// extended one).
    tunnel: Option<RecvStream>,
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
    respond: &SharedRespond,
    request: Exchange,
    shared: &StreamContext,
) {
    let Exchange {
        method_is_head,
        connect,
        tunnel,
    } = request;
    let mut response = response;
    let websocket = matches!(response.body(), ResponseData::Websocket(_));
    let upgrade = matches!(response.body(), ResponseData::Upgrade(_));
    // What the client sends on a tunnel the response does not take is
    // dropped now: `h2` discards it and gives its window back.
    let tunnel = if websocket || upgrade { tunnel } else { None };
    if (websocket && (tunnel.is_none() || response.status() != StatusCode::OK))
        || (upgrade && (tunnel.is_none() || !response.status().is_success()))
        || response.status().is_informational()
    {
        // `websocket` answers an extended CONNECT with a 200 and refuses
        // every other HTTP/2 request, so only a handler that built such a
        // response itself gets here; an upgrade is a tunnel here, opened
        // by a 2xx to a CONNECT (HTTP/2 has no 101).
        error!(peer = ?shared.peer, status = %response.status(), "a handler answered an HTTP/2 request with a WebSocket or an upgrade it did not ask for, or an interim status; answering 500");
        response = plain_response(StatusCode::INTERNAL_SERVER_ERROR, "internal server error");
    } else if connect && !websocket && !upgrade && response.status().is_success() {
        // A 2xx to a CONNECT says the tunnel is open (RFC 9110 §9.3.6,
        // RFC 8441 §5), and a browser would take it as an open WebSocket;
        // only a WebSocket or an upgrade opens one.
        debug!(peer = ?shared.peer, status = %response.status(), "a CONNECT answered without a WebSocket or an upgrade; answering 501");
        response = plain_response(StatusCode::NOT_IMPLEMENTED, "no tunnel is served here");
    }
    let (mut parts, body) = response.into_parts();
    let no_body = status_has_no_body(parts.status);
    let length = match &body {
        // A HEAD answered without building the body: the length the
        // handler says its GET would have (RFC 9110 §9.3.2).
        ResponseData::Bytes(bytes) if bytes.is_empty() && method_is_head => {
            Some(declared_length(&parts.headers).unwrap_or(0))
        }
        ResponseData::Bytes(bytes) => Some(bytes.len() as u64),
        ResponseData::File(file) => Some(file.len()),
        // A stream whose length the handler knows.
        ResponseData::Chunked(_) => declared_length(&parts.headers),
        _ => None,
    };
    prepare_head(&mut parts.headers, length.filter(|_| !no_body));
    // A tunnel's stream stays open, also after a 204.
    let ends_here = !matches!(body, ResponseData::Upgrade(_))
        && (no_body || method_is_head || length == Some(0));
    let stream_length = length.filter(|_| matches!(body, ResponseData::Chunked(_)));
    let head = Response::from_parts(parts, ());
    let sent = {
        let mut respond = lock(respond);
        // A stream that may read the request body while it is written
        // gets the owed `100` ahead of the head, as over HTTP/1.1.
        if matches!(body, ResponseData::Chunked(_)) && !ends_here {
            let waker = std::task::Waker::noop();
            respond.send_continue(&mut Context::from_waker(waker));
        }
        respond.final_sent = true;
        let sent = respond.send.send_response(head, ends_here);
        if sent.is_err() {
            respond.send.send_reset(Reason::INTERNAL_ERROR);
        }
        sent
    };
    let mut stream = match sent {
        Ok(stream) => stream,
        Err(err) if err.is_reset() || err.is_go_away() || err.is_io() => {
            debug!(peer = ?shared.peer, %err, "HTTP/2 response not sent: the stream is gone");
            return;
        }
        Err(err) => {
            // The handler's head broke a rule of HTTP/2 that the engine
            // does not mend.
            error!(peer = ?shared.peer, %err, "HTTP/2 response head refused; stream reset");
            return;
        }
    };
    if ends_here {
        return;
    }
    let mut stall = Stall {
        deadline: LazyDeadline::default(),
        timeout: shared.config.write_timeout,
    };
    let sent = match body {
        ResponseData::Bytes(bytes) => send_data(&mut stream, &mut stall, bytes, true).await,
        ResponseData::Chunked(chunks) => {
            send_chunks(&mut stream, &mut stall, chunks, stream_length).await
        }
        ResponseData::File(file) => send_file(&mut stream, &mut stall, file).await,
        // The protocols that take the stream over, as they take an
        // HTTP/1.1 connection over.
        ResponseData::ServerSentEvents(events) => {
            let io = StreamIo::new(stream, None);
            return events.start(shared.handover(io), false).await;
        }
        ResponseData::Websocket(websocket) => {
            let io = StreamIo::new(stream, tunnel);
            return websocket.start(shared.handover(io)).await;
        }
        ResponseData::Upgrade(upgrade) => {
            let io = StreamIo::new(stream, tunnel);
            return upgrade.start(shared.handover(io)).await;
        }
    };
    if let Err(Failure::Failed(err)) = sent {
        debug!(peer = ?shared.peer, %err, "HTTP/2 response failed; resetting the stream");
        stream.send_reset(Reason::INTERNAL_ERROR);
    }
}

/// The write timeout of one response: how long the client may grant no
/// flow-control window.
struct Stall {
    deadline: LazyDeadline,
    timeout: Duration,
}

impl Stall {
    /// Waits for `poll`; fails if it makes the response wait longer than
    /// the write timeout.
    async fn wait<T>(
        &mut self,
        mut poll: impl FnMut(&mut Context<'_>) -> Poll<Result<T, Failure>>,
    ) -> Result<T, Failure> {
        self.deadline.progress();
        poll_fn(|cx| {
            if let Poll::Ready(done) = poll(cx) {
                return Poll::Ready(done);
            }
            self.deadline.poll(self.timeout, cx).map(|()| {
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
/// client the body is incomplete. With the length the handler declared,
/// the stream must give exactly that many bytes: what goes beyond is not
/// sent, and a stream that ends short is reset (the handler's mistake,
/// logged as a warning), as over HTTP/1.1.
async fn send_chunks(
    stream: &mut SendStream<Bytes>,
    stall: &mut Stall,
    mut chunks: ChunkedBody,
    mut left: Option<u64>,
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
            Some(Ok(mut chunk)) => {
                let fit = match &mut left {
                    Some(left) => chunks.fit(&mut chunk, left),
                    None => Fit::More,
                };
                // The declared length reached: the stream ends here,
                // without waiting for the handler's stream to end.
                let last = fit != Fit::More;
                send_data(stream, stall, chunk, last).await?;
                if last {
                    return Ok(());
                }
            }
            Some(Err(err)) => return Err(Failure::Failed(err)),
            None => match left {
                Some(short @ 1..) => return Err(Failure::Failed(ended_short(short).into())),
                _ => return send_data(stream, stall, Bytes::new(), true).await,
            },
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
