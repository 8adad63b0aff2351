//! The public WebSocket API and the connection loop that runs it: mist's
//! actor shape (a state, a handler per message, an optional channel of the
//! application's own messages) on one task per connection.

use super::{
    handshake, CloseCode, DeflateConfig, DeflateParams, Incoming, Limits, MessageDecoder,
    MessageEncoder,
};
use crate::body::Connection;
use crate::io::{
    deadline_after, poll_deadline, timed, write_all_stalled, Deadline, Handover, OutputWake, Socket,
};
use crate::messages::{Messages, Polled};
use crate::response::ResponseData;
use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use std::fmt;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, error};

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Most bytes read and dropped while closing.
const LINGER_BYTES: u64 = 1024 * 1024;

/// A message delivered to a WebSocket handler: mist's `WebsocketMessage`.
///
/// ```
/// use mist::WebsocketMessage;
///
/// fn describe(message: &WebsocketMessage<u32>) -> String {
///     match message {
///         WebsocketMessage::Text(text) => format!("text {text:?}"),
///         WebsocketMessage::Binary(data) => format!("{} bytes", data.len()),
///         WebsocketMessage::Custom(n) => format!("a message of ours: {n}"),
///         WebsocketMessage::Closed | WebsocketMessage::Shutdown => "the end".to_string(),
///     }
/// }
/// assert_eq!(describe(&WebsocketMessage::Custom(7)), "a message of ours: 7");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebsocketMessage<Custom> {
    /// A text message from the client.
    Text(String),
    /// A binary message from the client.
    Binary(Bytes),
    /// The client closed the connection (or it broke); `on_close` follows.
    Closed,
    /// The server is shutting down; the connection closes after this.
    Shutdown,
    /// A message of the application's own, from the source `on_init` (or
    /// a [`Next::ContinueWith`]) gave.
    Custom(Custom),
}

/// What a WebSocket handler or a server-sent events loop wants next:
/// mist's `actor.Next`.
///
/// Handlers and loops are synchronous: they run on the connection's task
/// between two messages. Work that has to wait (a database, another
/// service) goes to a task of its own that reports back as a custom
/// message, through a channel whose receiver `on_init` (or `init`)
/// returned or `ContinueWith` installs; a WebSocket task can also send
/// frames itself with a [`WebsocketSender`].
///
/// ```
/// use mist::{Next, WebsocketMessage};
/// use tokio::sync::mpsc;
///
/// // A WebSocket handler: "stop" closes, "subscribe" switches the source
/// // of custom messages to a new channel fed by a task.
/// fn handler(
///     _state: &mut (),
///     _conn: &mist::WebsocketConnection,
///     message: WebsocketMessage<String>,
/// ) -> Next<String> {
///     match message {
///         WebsocketMessage::Text(text) if text == "stop" => Next::Stop,
///         WebsocketMessage::Text(text) if text == "subscribe" => {
///             let (tx, rx) = mpsc::channel(16);
///             tokio::spawn(async move {
///                 let _ = tx.send("the answer the task waited for".to_string()).await;
///             });
///             Next::ContinueWith(rx.into())
///         }
///         _ => Next::Continue,
///     }
/// }
/// # let _ = handler;
/// ```
#[derive(Debug)]
pub enum Next<Custom> {
    /// Keep going.
    Continue,
    /// Keep going, receiving custom messages from this source from now on
    /// (`Next::ContinueWith(rx.into())` for a channel `rx`); the old
    /// source is dropped.
    ContinueWith(Messages<Custom>),
    /// End normally: a WebSocket closes with close code 1000; an event
    /// stream ends cleanly (the last chunk over HTTP/1.1, the end of the
    /// stream over HTTP/2).
    Stop,
    /// End with an error: a WebSocket closes with close code 1011 and
    /// this reason; an event stream is cut off without a clean end (a
    /// reset), so the client can tell, and the reason is logged at debug
    /// level.
    AbnormalStop(String),
}

/// Why a WebSocket frame or a server-sent event could not be sent.
///
/// ```no_run
/// use mist::{Next, SendError};
///
/// fn relay(conn: &mist::WebsocketConnection, text: &str) -> Next<()> {
///     match mist::send_text_frame(conn, text) {
///         Ok(()) => Next::Continue,
///         // The client is gone: nothing more to do.
///         Err(SendError::Closed) => Next::Stop,
///         // A client that does not read: drop it rather than buffer more.
///         Err(SendError::Full) => Next::AbnormalStop("client too slow".into()),
///         Err(other) => Next::AbnormalStop(other.to_string()),
///     }
/// }
/// # let _ = relay;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The connection is closed or closing.
    Closed,
    /// More than the configured output is already waiting for a client that
    /// does not read: the frame was not queued.
    Full,
    /// A server-sent event whose id or name holds a line break (it would
    /// corrupt the stream): not sent.
    InvalidEvent,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Closed => "the connection is closed",
            SendError::Full => "too much output is waiting for the client",
            SendError::InvalidEvent => "an event id or name holds a line break",
        })
    }
}

impl std::error::Error for SendError {}

/// Settings of one WebSocket endpoint; see [`websocket_with_options`].
///
/// ```
/// let options = mist::WebsocketOptions::default()
///     .max_message_size(1 << 20)
///     .compression(false);
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub struct WebsocketOptions {
    limits: Limits,
    compression: bool,
    close_timeout: Duration,
    max_pending: usize,
    /// `None`: the server's ([`Builder::write_timeout`]).
    ///
    /// [`Builder::write_timeout`]: crate::Builder::write_timeout
    write_timeout: Option<Duration>,
    ping_interval: Duration,
    pong_timeout: Duration,
}

impl Default for WebsocketOptions {
    fn default() -> Self {
        WebsocketOptions {
            limits: Limits::default(),
            compression: true,
            close_timeout: Duration::from_secs(5),
            max_pending: 16 * 1024 * 1024,
            write_timeout: None,
            ping_interval: Duration::from_secs(30),
            pong_timeout: Duration::from_secs(30),
        }
    }
}

impl WebsocketOptions {
    /// Largest message accepted from a client, counted after decompression
    /// (no zip bombs). Larger ones close the connection with 1009. Default
    /// 16 MiB.
    ///
    /// ```
    /// let options = mist::WebsocketOptions::default().max_message_size(64 * 1024);
    /// # let _ = options;
    /// ```
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.limits.max_message_size = bytes;
        self.limits.max_frame_size = bytes;
        self
    }

    /// Accept `permessage-deflate` (RFC 7692) when the client offers it.
    /// Default on.
    ///
    /// ```
    /// let options = mist::WebsocketOptions::default().compression(false);
    /// # let _ = options;
    /// ```
    pub fn compression(mut self, enabled: bool) -> Self {
        self.compression = enabled;
        self
    }

    /// How long the server waits for the client's answer to its close frame
    /// before closing the TCP connection anyway. Default 5 s.
    ///
    /// ```
    /// let options = mist::WebsocketOptions::default().close_timeout(std::time::Duration::from_secs(1));
    /// # let _ = options;
    /// ```
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// How often the server checks that a client is alive: when nothing at
    /// all (no message, no pong) has arrived during a whole interval, a
    /// ping goes out, so after one to two intervals of silence. Browsers
    /// and WebSocket libraries answer pings by themselves. `Duration::MAX`
    /// turns pings and the idle close off. Default 30 s.
    ///
    /// A dead client (a vanished laptop, a dropped NAT mapping) sends no
    /// FIN: without this, its connection would be held until the server
    /// stops.
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = mist::WebsocketOptions::default()
    ///     .ping_interval(Duration::from_secs(10))
    ///     .pong_timeout(Duration::from_secs(5));
    /// # let _ = options;
    /// ```
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval;
        self
    }

    /// How long the server waits, after a ping, to hear anything from the
    /// client before it closes the connection with 1001 (going away); the
    /// handler gets [`WebsocketMessage::Closed`]. So a silent client is let
    /// go between `ping_interval + pong_timeout` and `2 × ping_interval +
    /// pong_timeout` after it last spoke. Default 30 s.
    ///
    /// ```
    /// let options = mist::WebsocketOptions::default().pong_timeout(std::time::Duration::from_secs(10));
    /// # let _ = options;
    /// ```
    pub fn pong_timeout(mut self, timeout: Duration) -> Self {
        self.pong_timeout = timeout;
        self
    }

    /// Most bytes of frames waiting to be written before sends fail with
    /// [`SendError::Full`]. Default 16 MiB.
    ///
    /// ```
    /// let options = mist::WebsocketOptions::default().max_pending_output(1 << 20);
    /// # let _ = options;
    /// ```
    pub fn max_pending_output(mut self, bytes: usize) -> Self {
        self.max_pending = bytes;
        self
    }

    /// How long a write may wait for a client that accepts no more bytes
    /// before the connection is dropped (the handler gets
    /// [`WebsocketMessage::Closed`]). Default: the server's
    /// [`Builder::write_timeout`](crate::Builder::write_timeout).
    ///
    /// ```
    /// let options = mist::WebsocketOptions::default().write_timeout(std::time::Duration::from_secs(5));
    /// # let _ = options;
    /// ```
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = Some(timeout);
        self
    }
}

/// Frames waiting to go out, shared by the connection and its senders.
struct Outgoing {
    encoder: MessageEncoder,
    buf: BytesMut,
    /// No more data frames: a close frame has been queued or the
    /// connection is gone.
    closed: bool,
}

struct Shared {
    out: Mutex<Outgoing>,
    /// Wakes the connection for frames other tasks queue.
    wake: OutputWake,
    max_pending: usize,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Outgoing> {
        self.out.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn send(
        &self,
        encode: impl FnOnce(&mut MessageEncoder, &mut BytesMut),
    ) -> Result<(), SendError> {
        let mut out = self.lock();
        if out.closed {
            return Err(SendError::Closed);
        }
        if out.buf.len() > self.max_pending {
            return Err(SendError::Full);
        }
        let Outgoing { encoder, buf, .. } = &mut *out;
        encode(encoder, buf);
        let needs_wake = self.wake.needs_wake();
        drop(out);
        if needs_wake {
            self.wake.wake();
        }
        Ok(())
    }
}

/// The connection a WebSocket handler talks through: mist's
/// `WebsocketConnection`. Frames sent through it are queued and written by
/// the connection's task as soon as the handler returns.
///
/// ```no_run
/// use mist::{Next, WebsocketConnection, WebsocketMessage};
///
/// fn echo(_state: &mut (), conn: &WebsocketConnection, msg: WebsocketMessage<()>) -> Next<()> {
///     if let WebsocketMessage::Text(text) = msg {
///         let _ = mist::send_text_frame(conn, &text);
///     }
///     Next::Continue
/// }
/// ```
pub struct WebsocketConnection {
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
}

impl WebsocketConnection {
    /// A handle other tasks can use to send frames on this connection.
    ///
    /// ```no_run
    /// # fn f(conn: &mist::WebsocketConnection) {
    /// let sender = conn.sender();
    /// tokio::spawn(async move {
    ///     let _ = sender.send_text("from another task");
    /// });
    /// # }
    /// ```
    pub fn sender(&self) -> WebsocketSender {
        WebsocketSender {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The client's address, as [`get_client_info`](crate::get_client_info)
    /// gives it for HTTP requests.
    ///
    /// ```no_run
    /// # fn f(conn: &mist::WebsocketConnection) {
    /// if let Some(addr) = conn.peer_addr() {
    ///     println!("client at {addr}");
    /// }
    /// # }
    /// ```
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer
    }
}

impl fmt::Debug for WebsocketConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebsocketConnection")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// A cloneable handle that sends frames on a WebSocket connection from any
/// task; see [`WebsocketConnection::sender`].
///
/// ```no_run
/// # fn f(sender: mist::WebsocketSender) {
/// let copy = sender.clone();
/// let _ = copy.send_binary(&[1, 2, 3]);
/// # }
/// ```
#[derive(Clone)]
pub struct WebsocketSender {
    shared: Arc<Shared>,
}

impl WebsocketSender {
    /// Queues a text message.
    ///
    /// ```no_run
    /// # fn f(sender: mist::WebsocketSender) {
    /// if sender.send_text("tick").is_err() {
    ///     println!("the client has gone");
    /// }
    /// # }
    /// ```
    pub fn send_text(&self, text: &str) -> Result<(), SendError> {
        self.shared.send(|enc, buf| enc.text(text, buf))
    }

    /// Queues a binary message.
    ///
    /// ```no_run
    /// # fn f(sender: mist::WebsocketSender) {
    /// let _ = sender.send_binary(b"\x00\x01");
    /// # }
    /// ```
    pub fn send_binary(&self, data: &[u8]) -> Result<(), SendError> {
        self.shared.send(|enc, buf| enc.binary(data, buf))
    }

    /// True once the connection is closed or closing.
    ///
    /// ```no_run
    /// # fn f(sender: mist::WebsocketSender) {
    /// if sender.is_closed() { return; }
    /// # }
    /// ```
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }
}

impl fmt::Debug for WebsocketSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebsocketSender").finish_non_exhaustive()
    }
}

/// Sends a text message: mist's `send_text_frame`. An error, never a panic,
/// once the client has gone.
///
/// ```no_run
/// # fn f(conn: &mist::WebsocketConnection) {
/// mist::send_text_frame(conn, "hello").ok();
/// # }
/// ```
pub fn send_text_frame(conn: &WebsocketConnection, text: &str) -> Result<(), SendError> {
    conn.shared.send(|enc, buf| enc.text(text, buf))
}

/// Sends a binary message: mist's `send_binary_frame`.
///
/// ```no_run
/// # fn f(conn: &mist::WebsocketConnection) {
/// mist::send_binary_frame(conn, &[0xde, 0xad]).ok();
/// # }
/// ```
pub fn send_binary_frame(conn: &WebsocketConnection, data: &[u8]) -> Result<(), SendError> {
    conn.shared.send(|enc, buf| enc.binary(data, buf))
}

type Runner = Box<dyn FnOnce(Handover) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The body of a `101 Switching Protocols` response made by [`websocket`]:
/// the engine hands the connection to it once the response is written.
/// Handlers do not make one themselves; they return what [`websocket`]
/// gives, and can tell it by the body's variant:
///
/// ```no_run
/// use http::{Request, Response};
/// use mist::{Connection, Next, ResponseData};
///
/// async fn chat(req: Request<Connection>) -> Response<ResponseData> {
///     let response = mist::websocket(
///         req,
///         |_conn| ((), mist::Messages::none()),
///         |_state, _conn, _message| Next::Continue,
///         |_state| {},
///     );
///     if !matches!(response.body(), ResponseData::Websocket(_)) {
///         eprintln!("not a WebSocket upgrade: {}", response.status()); // 400
///     }
///     response
/// }
/// ```
pub struct WebsocketUpgrade {
    run: Runner,
}

impl fmt::Debug for WebsocketUpgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebsocketUpgrade(..)")
    }
}

impl WebsocketUpgrade {
    pub(crate) fn start(self, upgraded: Handover) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        (self.run)(upgraded)
    }
}

/// Upgrades a request to a WebSocket: mist's `websocket`, with the
/// defaults of [`WebsocketOptions`].
///
/// Validates the upgrade (GET, `Upgrade: websocket`, a `Connection` header
/// with `upgrade`, `Sec-WebSocket-Version: 13`, a valid key) and answers
/// `101`; a malformed upgrade gets `400` with an empty body and nothing
/// starts. Then, on the connection's own task:
/// - `on_init` makes the state and, optionally, a source of custom messages
///   (anything that becomes [`Messages`]: a tokio `mpsc` or `broadcast`
///   receiver, or a stream); they reach `handler` as
///   [`WebsocketMessage::Custom`];
/// - `handler` runs for every message, with the state by `&mut` (so it
///   survives a panic and reaches `on_close`);
/// - `on_close` runs exactly once, however the connection ends.
///
/// Pings are answered, fragmented messages reassembled, text checked as
/// UTF-8, and `permessage-deflate` accepted when offered. A panicking
/// handler, or source of custom messages, closes the connection with
/// 1011; the server carries on.
///
/// Over HTTP/2 ([`Builder::with_http2`](crate::Builder::with_http2)) the
/// same call takes a browser's extended CONNECT (RFC 8441), which the
/// handler sees as a `GET` with version `HTTP/2.0`, and answers `200`; the
/// WebSocket then runs on that one stream.
///
/// ```no_run
/// use http::{Request, Response};
/// use mist::{Connection, Next, ResponseData, WebsocketMessage};
///
/// async fn ws(req: Request<Connection>) -> Response<ResponseData> {
///     mist::websocket(
///         req,
///         |_conn| (0u64, None::<mist::Messages<()>>),
///         |count, conn, msg| {
///             match msg {
///                 WebsocketMessage::Text(text) => {
///                     *count += 1;
///                     let _ = mist::send_text_frame(conn, &format!("{count}: {text}"));
///                 }
///                 WebsocketMessage::Binary(data) => {
///                     let _ = mist::send_binary_frame(conn, &data);
///                 }
///                 _ => {}
///             }
///             Next::Continue
///         },
///         |count| println!("closed after {count} messages"),
///     )
/// }
/// ```
pub fn websocket<State, Custom, Source, Init, Handler, Close>(
    request: Request<Connection>,
    on_init: Init,
    handler: Handler,
    on_close: Close,
) -> Response<ResponseData>
where
    State: Send + 'static,
    Custom: Send + 'static,
    Source: Into<Messages<Custom>> + 'static,
    Init: FnOnce(&WebsocketConnection) -> (State, Option<Source>) + Send + 'static,
    Handler: FnMut(&mut State, &WebsocketConnection, WebsocketMessage<Custom>) -> Next<Custom>
        + Send
        + 'static,
    Close: FnOnce(State) + Send + 'static,
{
    websocket_with_options(
        request,
        WebsocketOptions::default(),
        on_init,
        handler,
        on_close,
    )
}

/// [`websocket`] with settings: message size limit, compression, timeouts.
///
/// ```no_run
/// use http::{Request, Response};
/// use mist::{Connection, Next, ResponseData, WebsocketOptions};
///
/// async fn ws(req: Request<Connection>) -> Response<ResponseData> {
///     let options = WebsocketOptions::default().max_message_size(64 * 1024);
///     mist::websocket_with_options(
///         req,
///         options,
///         |_conn| ((), None::<mist::Messages<()>>),
///         |_state, _conn, _msg| Next::Continue,
///         |_state| {},
///     )
/// }
/// ```
pub fn websocket_with_options<State, Custom, Source, Init, Handler, Close>(
    request: Request<Connection>,
    options: WebsocketOptions,
    on_init: Init,
    handler: Handler,
    on_close: Close,
) -> Response<ResponseData>
where
    State: Send + 'static,
    Custom: Send + 'static,
    Source: Into<Messages<Custom>> + 'static,
    Init: FnOnce(&WebsocketConnection) -> (State, Option<Source>) + Send + 'static,
    Handler: FnMut(&mut State, &WebsocketConnection, WebsocketMessage<Custom>) -> Next<Custom>
        + Send
        + 'static,
    Close: FnOnce(State) + Send + 'static,
{
    let deflate = options.compression.then(DeflateConfig::default);
    let accepted = match handshake::accept(&request, deflate.as_ref()) {
        Ok(accepted) => accepted,
        Err(err) => {
            debug!(%err, "refusing WebSocket upgrade");
            // mist answers a malformed upgrade with an empty 400; a version
            // we do not speak also names the one we do (RFC 6455 §4.4).
            let mut response = Response::new(ResponseData::empty());
            *response.status_mut() = err.status();
            if let Some((name, value)) = err.version_header() {
                response.headers_mut().insert(name, value);
            }
            return response;
        }
    };
    let params = accepted.deflate;
    let run: Runner = Box::new(move |upgraded: Handover| {
        Box::pin(run(upgraded, options, params, on_init, handler, on_close))
    });
    accepted.response(ResponseData::Websocket(WebsocketUpgrade { run }))
}

/// Calls `on_close` with the state when dropped: exactly once, whether the
/// loop ends, a handler panics, or the task is aborted at shutdown.
struct CloseGuard<State, Close: FnOnce(State)> {
    state: Option<State>,
    on_close: Option<Close>,
}

impl<State, Close: FnOnce(State)> Drop for CloseGuard<State, Close> {
    fn drop(&mut self) {
        if let (Some(state), Some(on_close)) = (self.state.take(), self.on_close.take()) {
            if catch_unwind(AssertUnwindSafe(|| on_close(state))).is_err() {
                error!("WebSocket on_close panicked");
            }
        }
    }
}

/// How the loop ended, which decides the closing steps.
enum End {
    /// The client sent a close frame: it was echoed; close TCP now.
    ClientClosed,
    /// The server sent a close frame: wait for the client's, then close.
    ServerClosed,
    /// The client broke the protocol: close frame sent; close TCP now.
    Failed,
    /// The connection is gone (EOF, I/O error, timeout).
    Gone,
}

async fn run<State, Custom, Source, Init, Handler, Close>(
    upgraded: Handover,
    options: WebsocketOptions,
    deflate: Option<DeflateParams>,
    on_init: Init,
    mut handler: Handler,
    on_close: Close,
) where
    Source: Into<Messages<Custom>>,
    Init: FnOnce(&WebsocketConnection) -> (State, Option<Source>),
    Handler: FnMut(&mut State, &WebsocketConnection, WebsocketMessage<Custom>) -> Next<Custom>,
    Close: FnOnce(State),
{
    let Handover {
        mut io,
        mut read_buf,
        shutdown,
        peer,
        write_timeout,
    } = upgraded;
    let write_timeout = options.write_timeout.unwrap_or(write_timeout);
    let shared = Arc::new(Shared {
        out: Mutex::new(Outgoing {
            encoder: MessageEncoder::new(deflate.as_ref()),
            buf: BytesMut::new(),
            closed: false,
        }),
        wake: OutputWake::default(),
        max_pending: options.max_pending,
    });
    let conn = WebsocketConnection {
        shared: Arc::clone(&shared),
        peer,
    };
    let mut decoder = MessageDecoder::new(options.limits, deflate.as_ref());
    // One timer for every write and the close handshake of the connection.
    let mut timer = Box::pin(tokio::time::sleep(Duration::ZERO));
    let init = catch_unwind(AssertUnwindSafe(|| on_init(&conn)))
        .map(|(state, source)| (state, source.map(Into::<Messages<Custom>>::into)));
    let (state, mut custom) = match init {
        Ok(init) => init,
        Err(_) => {
            error!("WebSocket on_init panicked; closing with 1011");
            queue_close(&shared, CloseCode::INTERNAL_ERROR, "internal error");
            let _ = flush(&mut io, &shared, &mut timer, write_timeout).await;
            return;
        }
    };
    let mut guard = CloseGuard {
        state: Some(state),
        on_close: Some(on_close),
    };
    let mut deliver =
        |message: WebsocketMessage<Custom>, custom: &mut Option<Messages<Custom>>| -> Option<End> {
            let state = guard.state.as_mut()?;
            shared.wake.callback_starts();
            match catch_unwind(AssertUnwindSafe(|| handler(state, &conn, message))) {
                Ok(Next::Continue) => None,
                Ok(Next::ContinueWith(source)) => {
                    *custom = Some(source);
                    None
                }
                Ok(Next::Stop) => {
                    queue_close(&shared, CloseCode::NORMAL, "");
                    Some(End::ServerClosed)
                }
                Ok(Next::AbnormalStop(reason)) => {
                    queue_close(&shared, CloseCode::INTERNAL_ERROR, &reason);
                    Some(End::ServerClosed)
                }
                Err(_) => {
                    error!("WebSocket handler panicked; closing with 1011");
                    queue_close(&shared, CloseCode::INTERNAL_ERROR, "internal error");
                    Some(End::ServerClosed)
                }
            }
        };

    // Silence detection (`WebsocketOptions::ping_interval`): a read only
    // sets `heard`; the clock is read when the timer fires, once an
    // interval, not once a message.
    let mut heard = false;
    let mut pinged = false;
    let mut due = deadline_after(options.ping_interval);

    let end = 'outer: loop {
        // Everything already read: whole messages go to the handler.
        loop {
            let incoming = match decoder.decode(&mut read_buf) {
                Ok(Some(incoming)) => incoming,
                Ok(None) => break,
                Err(err) => {
                    debug!(%err, "closing a WebSocket that broke the protocol");
                    queue_close(&shared, err.close_code(), err.as_str());
                    let _ = deliver(WebsocketMessage::Closed, &mut custom);
                    break 'outer End::Failed;
                }
            };
            let ended = match incoming {
                Incoming::Text(text) => deliver(WebsocketMessage::Text(text), &mut custom),
                Incoming::Binary(data) => deliver(WebsocketMessage::Binary(data), &mut custom),
                // RFC 6455 §5.5.2: a pong with the ping's payload.
                Incoming::Ping(payload) => {
                    queue_control(&shared, |encoder, buf| {
                        let _ = encoder.pong(&payload, buf);
                    });
                    None
                }
                Incoming::Pong(_) => None,
                // RFC 6455 §5.5.1: echo the status code, then the server
                // closes the TCP connection first (§7.1.1).
                Incoming::Close(frame) => {
                    let code = frame.map(|f| f.code);
                    {
                        let mut out = shared.lock();
                        if !out.closed {
                            out.closed = true;
                            let Outgoing { encoder, buf, .. } = &mut *out;
                            encoder.close(code.map(|c| (c, "")), buf);
                        }
                    }
                    let _ = deliver(WebsocketMessage::Closed, &mut custom);
                    break 'outer End::ClientClosed;
                }
            };
            if let Some(end) = ended {
                break 'outer end;
            }
        }
        if flush(&mut io, &shared, &mut timer, write_timeout)
            .await
            .is_err()
        {
            let _ = deliver(WebsocketMessage::Closed, &mut custom);
            break End::Gone;
        }
        // Wait for the client, a custom message, a sender, or shutdown.
        if read_buf.capacity() - read_buf.len() < READ_CHUNK / 4 {
            read_buf.reserve(READ_CHUNK);
        }
        let event = {
            let mut read = pin!(io.read_buf(&mut read_buf));
            let mut armed = false;
            poll_fn(|cx| {
                // First: a client (or an application) that never stops
                // sending must still be closed at a graceful stop, with a
                // 1001, not aborted when the grace runs out.
                if shutdown.poll_stopped(cx).is_ready() {
                    return Poll::Ready(Event::Shutdown);
                }
                if let Poll::Ready(read) = read.as_mut().poll(cx) {
                    return Poll::Ready(Event::Read(read));
                }
                // Before the application's events, which could otherwise
                // keep it from ever being seen.
                if poll_deadline(&mut timer, &mut armed, Deadline::At(due), cx).is_ready() {
                    return Poll::Ready(Event::Tick);
                }
                if let Some(source) = custom.as_mut() {
                    if let Poll::Ready(message) = source.poll_next(cx) {
                        return Poll::Ready(Event::Custom(message));
                    }
                }
                if shared.wake.poll_queued(cx).is_ready() {
                    return Poll::Ready(Event::Woken);
                }
                Poll::Pending
            })
            .await
        };
        match event {
            Event::Read(Ok(n)) if n > 0 => heard = true,
            Event::Tick if heard => {
                heard = false;
                pinged = false;
                due = deadline_after(options.ping_interval);
            }
            Event::Tick if !pinged => {
                queue_control(&shared, |encoder, buf| {
                    let _ = encoder.ping(b"", buf);
                });
                pinged = true;
                due = deadline_after(options.pong_timeout);
            }
            Event::Tick => {
                debug!(
                    ?peer,
                    "closing a WebSocket whose client stopped answering pings"
                );
                let _ = deliver(WebsocketMessage::Closed, &mut custom);
                queue_close(&shared, CloseCode::GOING_AWAY, "idle");
                break End::ServerClosed;
            }
            Event::Read(_) => {
                let _ = deliver(WebsocketMessage::Closed, &mut custom);
                break End::Gone;
            }
            Event::Custom(Polled::Message(message)) => {
                if let Some(end) = deliver(WebsocketMessage::Custom(message), &mut custom) {
                    break end;
                }
            }
            // The application dropped its sender: no more custom messages.
            Event::Custom(Polled::Ended) => custom = None,
            Event::Custom(Polled::Panicked) => {
                error!("WebSocket message source panicked; closing with 1011");
                queue_close(&shared, CloseCode::INTERNAL_ERROR, "internal error");
                break End::ServerClosed;
            }
            Event::Woken => {}
            Event::Shutdown => {
                let _ = deliver(WebsocketMessage::Shutdown, &mut custom);
                queue_close(&shared, CloseCode::GOING_AWAY, "server shutting down");
                break End::ServerClosed;
            }
        }
    };
    shared.lock().closed = true;

    // The closing handshake (RFC 6455 §7).
    match end {
        End::Gone => {}
        End::ClientClosed | End::Failed => {
            if flush(&mut io, &shared, &mut timer, write_timeout)
                .await
                .is_ok()
            {
                // Drain briefly, so the close frame is read rather than lost to a reset.
                crate::io::linger_close(
                    &mut io,
                    &mut read_buf,
                    &mut timer,
                    options.close_timeout,
                    LINGER_BYTES,
                )
                .await;
            }
        }
        End::ServerClosed => {
            if flush(&mut io, &shared, &mut timer, write_timeout)
                .await
                .is_ok()
            {
                // Read (and drop) until the client's close frame, bounded.
                let answer = async {
                    loop {
                        match decoder.decode(&mut read_buf) {
                            Ok(Some(Incoming::Close(_))) | Err(_) => return,
                            Ok(Some(_)) => continue,
                            Ok(None) => {}
                        }
                        read_buf.reserve(READ_CHUNK);
                        match io.read_buf(&mut read_buf).await {
                            Ok(n) if n > 0 => {}
                            _ => return,
                        }
                    }
                };
                let _ = timed(
                    &mut timer,
                    Deadline::At(deadline_after(options.close_timeout)),
                    answer,
                )
                .await;
                let _ = timed(
                    &mut timer,
                    Deadline::After(options.close_timeout),
                    io.shutdown(),
                )
                .await;
            }
        }
    }
    drop(guard);
}

enum Event<Custom> {
    Read(std::io::Result<usize>),
    Custom(Polled<Custom>),
    Woken,
    Shutdown,
    /// The silence timer fired.
    Tick,
}

/// Queues a control frame (a ping or a pong) unless a close frame went
/// first. Not bounded by `max_pending`: control frames are tiny, and a pong
/// owed must not be refused.
fn queue_control(shared: &Shared, encode: impl FnOnce(&mut MessageEncoder, &mut BytesMut)) {
    let mut out = shared.lock();
    if out.closed {
        return;
    }
    let Outgoing { encoder, buf, .. } = &mut *out;
    encode(encoder, buf);
}

/// Queues a close frame; nothing is sent after it.
fn queue_close(shared: &Shared, code: CloseCode, reason: &str) {
    let mut out = shared.lock();
    if out.closed {
        return;
    }
    out.closed = true;
    let Outgoing { encoder, buf, .. } = &mut *out;
    encoder.close(Some((code, reason)), buf);
}

/// Writes every queued frame.
async fn flush(
    io: &mut Box<dyn Socket>,
    shared: &Shared,
    timer: &mut Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
) -> std::io::Result<()> {
    loop {
        let pending = {
            let mut out = shared.lock();
            shared.wake.flush_starts();
            if out.buf.is_empty() {
                break;
            }
            out.buf.split().freeze()
        };
        write_all_stalled(io, &pending, timer, timeout).await?;
    }
    Ok(())
}
