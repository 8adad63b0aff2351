//! Server-sent events: the WHATWG event-stream format over a chunked (or,
//! for HTTP/1.0, close-delimited) response that stays open.

use crate::body::Connection;
use crate::h1::encode::{encode_chunk_size, LAST_CHUNK};
use crate::io::{timed, write_all_stalled, Deadline, Handover, OutputWake, Socket};
use crate::messages::{Messages, Polled};
use crate::response::ResponseData;
use crate::ws::actor::{Next, SendError};
use bytes::{BufMut, BytesMut};
use http::{header, HeaderValue, Request, Response, StatusCode};
use std::fmt;
use std::future::{poll_fn, Future};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, error};

/// One event of a stream: mist's `SSEEvent`. Build it with [`event`] and
/// the `event_*` functions, or the methods of the same names.
///
/// ```
/// use std::time::Duration;
/// let tick = mist::event("42").id("42").name("tick").retry(Duration::from_secs(1));
/// let same = mist::event_retry(mist::event_name(mist::event_id(mist::event("42"), "42"), "tick"), Duration::from_secs(1));
/// assert_eq!(tick, same);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    data: String,
    id: Option<String>,
    name: Option<String>,
    retry: Option<Duration>,
}

impl SseEvent {
    /// An event carrying `data`; newlines in it become several `data:`
    /// lines, which the browser joins back with `\n`.
    ///
    /// ```
    /// let event = mist::SseEvent::new("line one\nline two");
    /// # let _ = event;
    /// ```
    pub fn new(data: impl Into<String>) -> SseEvent {
        SseEvent {
            data: data.into(),
            id: None,
            name: None,
            retry: None,
        }
    }

    /// Sets the event's `id:` (the browser's `lastEventId`). An id holding
    /// a line break or NUL is refused by [`send_event`].
    ///
    /// ```
    /// let event = mist::SseEvent::new("hi").id("7");
    /// # let _ = event;
    /// ```
    pub fn id(mut self, id: impl Into<String>) -> SseEvent {
        self.id = Some(id.into());
        self
    }

    /// Sets the event's `event:` name (the browser dispatches it under that
    /// type). A name holding a line break is refused by [`send_event`].
    ///
    /// ```
    /// let event = mist::SseEvent::new("hi").name("greeting");
    /// # let _ = event;
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> SseEvent {
        self.name = Some(name.into());
        self
    }

    /// Sets `retry:`, the reconnection delay the browser should use.
    ///
    /// ```
    /// let event = mist::SseEvent::new("hi").retry(std::time::Duration::from_millis(500));
    /// # let _ = event;
    /// ```
    pub fn retry(mut self, retry: Duration) -> SseEvent {
        self.retry = Some(retry);
        self
    }

    /// Writes the event in the event-stream format (WHATWG HTML §9.2.6).
    fn encode(&self, dst: &mut BytesMut) -> Result<(), SendError> {
        let breaks = |s: &str| s.contains(['\n', '\r']);
        if self.name.as_deref().is_some_and(breaks)
            || self
                .id
                .as_deref()
                .is_some_and(|id| breaks(id) || id.contains('\0'))
        {
            return Err(SendError::InvalidEvent);
        }
        if let Some(name) = &self.name {
            put_field(dst, "event", name.as_bytes());
        }
        if let Some(id) = &self.id {
            put_field(dst, "id", id.as_bytes());
        }
        if let Some(retry) = self.retry {
            put_field(
                dst,
                "retry",
                itoa::Buffer::new().format(retry.as_millis()).as_bytes(),
            );
        }
        // Lines end in CRLF, LF or CR; each becomes its own `data:` field.
        let mut rest = self.data.as_bytes();
        while let Some(at) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            put_field(dst, "data", &rest[..at]);
            let crlf = rest[at] == b'\r' && rest.get(at + 1) == Some(&b'\n');
            rest = &rest[at + 1 + usize::from(crlf)..];
        }
        put_field(dst, "data", rest);
        dst.put_u8(b'\n');
        Ok(())
    }
}

fn put_field(dst: &mut BytesMut, name: &str, value: &[u8]) {
    dst.put_slice(name.as_bytes());
    dst.put_slice(b": ");
    dst.put_slice(value);
    dst.put_u8(b'\n');
}

/// An event carrying `data`: mist's `event`.
///
/// ```
/// let event = mist::event("hello");
/// # let _ = event;
/// ```
pub fn event(data: impl Into<String>) -> SseEvent {
    SseEvent::new(data)
}

/// Sets an event's id: mist's `event_id`.
///
/// ```
/// let event = mist::event_id(mist::event("hello"), "1");
/// # let _ = event;
/// ```
pub fn event_id(event: SseEvent, id: impl Into<String>) -> SseEvent {
    event.id(id)
}

/// Sets an event's name: mist's `event_name`.
///
/// ```
/// let event = mist::event_name(mist::event("hello"), "greeting");
/// # let _ = event;
/// ```
pub fn event_name(event: SseEvent, name: impl Into<String>) -> SseEvent {
    event.name(name)
}

/// Sets an event's reconnection delay: mist's `event_retry`.
///
/// ```
/// let event = mist::event_retry(mist::event("hello"), std::time::Duration::from_secs(3));
/// # let _ = event;
/// ```
pub fn event_retry(event: SseEvent, retry: Duration) -> SseEvent {
    event.retry(retry)
}

/// Settings of an event stream; see [`server_sent_events_with_options`].
///
/// ```
/// let options = mist::SseOptions::default().keep_alive(std::time::Duration::from_secs(15));
/// # let _ = options;
/// ```
#[derive(Debug, Clone)]
pub struct SseOptions {
    keep_alive: Option<Duration>,
    max_pending: usize,
    /// `None`: the server's ([`Builder::write_timeout`]).
    ///
    /// [`Builder::write_timeout`]: crate::Builder::write_timeout
    write_timeout: Option<Duration>,
}

impl Default for SseOptions {
    fn default() -> Self {
        SseOptions {
            keep_alive: None,
            max_pending: 4 * 1024 * 1024,
            write_timeout: None,
        }
    }
}

impl SseOptions {
    /// Sends a comment line after this long without an event, so that
    /// proxies do not cut an idle stream. Default: none.
    ///
    /// ```
    /// let options = mist::SseOptions::default().keep_alive(std::time::Duration::from_secs(20));
    /// # let _ = options;
    /// ```
    pub fn keep_alive(mut self, every: Duration) -> Self {
        self.keep_alive = Some(every);
        self
    }

    /// Most bytes of events waiting for a slow client before
    /// [`send_event`] fails with [`SendError::Full`]. Default 4 MiB.
    ///
    /// ```
    /// let options = mist::SseOptions::default().max_pending_output(64 * 1024);
    /// # let _ = options;
    /// ```
    pub fn max_pending_output(mut self, bytes: usize) -> Self {
        self.max_pending = bytes;
        self
    }

    /// How long a write may wait for a client that accepts no more bytes
    /// before the stream is dropped. Default: the server's
    /// [`Builder::write_timeout`](crate::Builder::write_timeout).
    ///
    /// ```
    /// let options = mist::SseOptions::default().write_timeout(std::time::Duration::from_secs(5));
    /// # let _ = options;
    /// ```
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = Some(timeout);
        self
    }
}

struct Shared {
    out: Mutex<Out>,
    /// Wakes the stream for events other tasks queue.
    wake: OutputWake,
    max_pending: usize,
}

struct Out {
    buf: BytesMut,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Out> {
        self.out.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The stream a loop sends events on: mist's `SSEConnection`.
///
/// ```no_run
/// # fn f(conn: &mist::SseConnection) {
/// mist::send_event(conn, mist::event("update")).ok();
/// # }
/// ```
#[derive(Clone)]
pub struct SseConnection {
    shared: Arc<Shared>,
}

impl fmt::Debug for SseConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseConnection").finish_non_exhaustive()
    }
}

/// Sends an event: mist's `send_event`. An error once the client has gone,
/// for an id or name holding a line break, or when too much is waiting.
///
/// ```no_run
/// # fn f(conn: &mist::SseConnection) {
/// if mist::send_event(conn, mist::event("tick").id("1")).is_err() {
///     println!("the client left");
/// }
/// # }
/// ```
pub fn send_event(conn: &SseConnection, event: SseEvent) -> Result<(), SendError> {
    let mut out = conn.shared.lock();
    if out.closed {
        return Err(SendError::Closed);
    }
    if out.buf.len() > conn.shared.max_pending {
        return Err(SendError::Full);
    }
    let mark = out.buf.len();
    if let Err(err) = event.encode(&mut out.buf) {
        out.buf.truncate(mark);
        return Err(err);
    }
    let needs_wake = conn.shared.wake.needs_wake();
    drop(out);
    if needs_wake {
        conn.shared.wake.wake();
    }
    Ok(())
}

type Runner = Box<dyn FnOnce(Handover, bool) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// The body of an event-stream response made by [`server_sent_events`]:
/// the engine hands the connection to it once the head is written.
/// Handlers do not make one themselves; they return what
/// [`server_sent_events`] gives, and can tell it by the body's variant (a
/// failed `init` gives a 500 with a plain body instead):
///
/// ```no_run
/// use http::{Request, Response};
/// use mist::{Connection, Next, ResponseData};
/// use tokio::sync::mpsc;
///
/// async fn events(req: Request<Connection>) -> Response<ResponseData> {
///     let response = mist::server_sent_events(
///         req,
///         Response::new(()),
///         || Ok::<_, std::convert::Infallible>(((), mpsc::channel::<String>(8).1)),
///         |_message, _conn, _state| Next::Continue,
///     );
///     assert!(matches!(response.body(), ResponseData::ServerSentEvents(_)));
///     response
/// }
/// ```
pub struct SseStream {
    run: Runner,
}

impl SseStream {
    /// `chunked`: HTTP/1.1 chunked framing; otherwise the stream runs until
    /// the connection closes (HTTP/1.0).
    pub(crate) fn start(
        self,
        handover: Handover,
        chunked: bool,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        (self.run)(handover, chunked)
    }
}

impl fmt::Debug for SseStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SseStream(..)")
    }
}

/// Sets up a server-sent events stream: mist's `server_sent_events`.
///
/// `init` runs now: it returns the loop's state and the source of the
/// messages that drive the stream (anything that becomes [`Messages`]: a
/// tokio `mpsc` or `broadcast` receiver, or any stream through
/// [`Messages::from_stream`]), or an error, in which case the client gets
/// a 500 and nothing starts. The initial response's status and headers go
/// out with `content-type: text/event-stream` and `cache-control: no-cache`
/// (its body is ignored). Then `loop_` runs for every message, sending
/// events with [`send_event`]; it takes `(message, connection, state)`,
/// as mist's does, the other way round from a
/// [`websocket`](crate::websocket) handler's `(state, connection,
/// message)`. The stream ends cleanly when the loop stops or its source
/// ends; it ends at once, and the loop's task with it, when the client
/// leaves; it is cut off without a clean end (a reset) when the loop or
/// its source panics, or the loop answers [`Next::AbnormalStop`].
///
/// A feed that every client sees is a `broadcast` channel, with each
/// stream subscribed: no task per client, and a client that falls behind
/// misses the oldest events instead of holding the others up:
///
/// ```no_run
/// use http::{Request, Response};
/// use mist::{Connection, Next, ResponseData};
/// use std::sync::LazyLock;
/// use tokio::sync::broadcast;
///
/// // Whoever sends on PRICES reaches every open stream.
/// static PRICES: LazyLock<broadcast::Sender<u32>> =
///     LazyLock::new(|| broadcast::channel(64).0);
///
/// async fn prices(req: Request<Connection>) -> Response<ResponseData> {
///     mist::server_sent_events(
///         req,
///         Response::new(()),
///         || Ok::<_, std::convert::Infallible>(((), PRICES.subscribe())),
///         |price, conn, _state| match mist::send_event(conn, mist::event(price.to_string())) {
///             Ok(()) => Next::Continue,
///             Err(_) => Next::Stop,
///         },
///     )
/// }
/// ```
///
/// A stream of its own, fed by a task:
///
/// ```no_run
/// use http::{Request, Response};
/// use mist::{Connection, Next, ResponseData};
/// use tokio::sync::mpsc;
///
/// async fn clock(req: Request<Connection>) -> Response<ResponseData> {
///     mist::server_sent_events(
///         req,
///         Response::new(()),
///         || {
///             let (tx, rx) = mpsc::channel(8);
///             tokio::spawn(async move {
///                 for i in 1..=3u32 {
///                     if tx.send(i).await.is_err() { break; }
///                     tokio::time::sleep(std::time::Duration::from_secs(1)).await;
///                 }
///             });
///             Ok::<_, std::convert::Infallible>(((), rx))
///         },
///         |i, conn, _state| match mist::send_event(conn, mist::event(i.to_string()).id(i.to_string())) {
///             Ok(()) => Next::Continue,
///             Err(_) => Next::Stop,
///         },
///     )
/// }
/// ```
pub fn server_sent_events<B, State, Message, Source, Init, E, Loop>(
    request: Request<Connection>,
    initial_response: Response<B>,
    init: Init,
    loop_: Loop,
) -> Response<ResponseData>
where
    State: Send + 'static,
    Message: Send + 'static,
    Source: Into<Messages<Message>>,
    Init: FnOnce() -> Result<(State, Source), E>,
    E: fmt::Display,
    Loop: FnMut(Message, &SseConnection, &mut State) -> Next<Message> + Send + 'static,
{
    server_sent_events_with_options(
        request,
        SseOptions::default(),
        initial_response,
        init,
        loop_,
    )
}

/// [`server_sent_events`] with settings: a keep-alive comment, the output
/// bound.
///
/// ```no_run
/// use http::{Request, Response};
/// use mist::{Connection, Next, ResponseData, SseOptions};
/// use std::time::Duration;
///
/// async fn feed(req: Request<Connection>) -> Response<ResponseData> {
///     mist::server_sent_events_with_options(
///         req,
///         SseOptions::default().keep_alive(Duration::from_secs(15)),
///         Response::new(()),
///         || Ok::<_, String>(((), tokio::sync::mpsc::channel::<String>(8).1)),
///         |_message, _conn, _state| Next::Continue,
///     )
/// }
/// ```
pub fn server_sent_events_with_options<B, State, Message, Source, Init, E, Loop>(
    request: Request<Connection>,
    options: SseOptions,
    initial_response: Response<B>,
    init: Init,
    loop_: Loop,
) -> Response<ResponseData>
where
    State: Send + 'static,
    Message: Send + 'static,
    Source: Into<Messages<Message>>,
    Init: FnOnce() -> Result<(State, Source), E>,
    E: fmt::Display,
    Loop: FnMut(Message, &SseConnection, &mut State) -> Next<Message> + Send + 'static,
{
    drop(request);
    let (state, messages) = match init() {
        Ok(started) => started,
        Err(err) => {
            error!(%err, "server-sent events init failed; answering 500");
            let mut response = Response::new(ResponseData::empty());
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            return response;
        }
    };
    let (mut parts, _) = initial_response.into_parts();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    parts
        .headers
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    let messages: Messages<Message> = messages.into();
    let run: Runner = Box::new(move |handover, chunked| {
        Box::pin(run(handover, chunked, options, state, messages, loop_))
    });
    Response::from_parts(parts, ResponseData::ServerSentEvents(SseStream { run }))
}

/// How a stream ended.
enum End {
    /// The loop stopped or its channel closed, or the server shuts down:
    /// finish the body properly.
    Done,
    /// The loop failed (abnormal stop, panic): reset, so the client does
    /// not take the stream as complete.
    Failed,
    /// The client left.
    Gone,
}

enum Event<M> {
    Message(Polled<M>),
    Woken,
    KeepAlive,
    ClientRead(std::io::Result<usize>),
    Shutdown,
}

async fn run<State, Message, Loop>(
    handover: Handover,
    chunked: bool,
    options: SseOptions,
    mut state: State,
    mut messages: Messages<Message>,
    mut loop_: Loop,
) where
    Loop: FnMut(Message, &SseConnection, &mut State) -> Next<Message>,
{
    let Handover {
        mut io,
        mut read_buf,
        shutdown,
        write_timeout,
        ..
    } = handover;
    let write_timeout = options.write_timeout.unwrap_or(write_timeout);
    let shared = Arc::new(Shared {
        out: Mutex::new(Out {
            buf: BytesMut::new(),
            closed: false,
        }),
        wake: OutputWake::default(),
        max_pending: options.max_pending,
    });
    let conn = SseConnection {
        shared: Arc::clone(&shared),
    };
    let mut writer = Writer {
        wire: BytesMut::new(),
        timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        chunked,
        timeout: write_timeout,
    };
    let mut keep_alive = Box::pin(tokio::time::sleep(
        options.keep_alive.unwrap_or(Duration::MAX),
    ));
    let end = loop {
        if writer.flush(&mut io, &shared).await.is_err() {
            break End::Gone;
        }
        if let Some(every) = options.keep_alive {
            keep_alive.as_mut().reset(crate::io::deadline_after(every));
        }
        read_buf.clear();
        read_buf.reserve(512);
        let event = {
            let mut read = pin!(io.read_buf(&mut read_buf));
            poll_fn(|cx| {
                // First: a stream whose application never stops sending
                // must still end at a graceful stop, not at its grace.
                if shutdown.poll_stopped(cx).is_ready() {
                    return Poll::Ready(Event::Shutdown);
                }
                if let Poll::Ready(message) = messages.poll_next(cx) {
                    return Poll::Ready(Event::Message(message));
                }
                if shared.wake.poll_queued(cx).is_ready() {
                    return Poll::Ready(Event::Woken);
                }
                // The client sends nothing on an event stream: a read only
                // ends when it leaves, which must end the loop at once.
                if let Poll::Ready(read) = read.as_mut().poll(cx) {
                    return Poll::Ready(Event::ClientRead(read));
                }
                if keep_alive.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::KeepAlive);
                }
                Poll::Pending
            })
            .await
        };
        match event {
            Event::Message(Polled::Message(message)) => {
                shared.wake.callback_starts();
                match catch_unwind(AssertUnwindSafe(|| loop_(message, &conn, &mut state))) {
                    Ok(Next::Continue) => {}
                    Ok(Next::ContinueWith(channel)) => messages = channel,
                    Ok(Next::Stop) => break End::Done,
                    Ok(Next::AbnormalStop(reason)) => {
                        debug!(%reason, "server-sent events loop stopped abnormally");
                        break End::Failed;
                    }
                    Err(_) => {
                        error!("server-sent events loop panicked; resetting the stream");
                        break End::Failed;
                    }
                }
            }
            Event::Message(Polled::Ended) | Event::Shutdown => break End::Done,
            Event::Message(Polled::Panicked) => {
                error!("server-sent events message source panicked; resetting the stream");
                break End::Failed;
            }
            Event::Woken => {}
            Event::KeepAlive => shared.lock().buf.put_slice(b": keep-alive\n\n"),
            Event::ClientRead(Ok(n)) if n > 0 => {}
            Event::ClientRead(_) => break End::Gone,
        }
    };
    shared.lock().closed = true;
    match end {
        End::Gone => {}
        End::Failed => {
            io.reset_on_close();
        }
        End::Done => {
            if writer.flush(&mut io, &shared).await.is_ok() {
                let finish = async {
                    if chunked {
                        io.write_all(LAST_CHUNK).await?;
                    }
                    io.flush().await?;
                    io.shutdown().await
                };
                let deadline = Deadline::After(write_timeout);
                let _ = timed(&mut writer.timer, deadline, finish).await;
            }
        }
    }
}

/// The largest flush buffer a stream keeps between flushes.
const WIRE_KEEP_MAX: usize = 64 * 1024;

/// How a stream's events go out: the chunk a flush writes is put together
/// in `wire`, kept for the stream's life (a flush allocates nothing), and
/// every write is bounded by `timeout` on the one timer.
struct Writer {
    wire: BytesMut,
    timer: Pin<Box<tokio::time::Sleep>>,
    /// HTTP/1.1 chunked framing; otherwise the stream runs until close.
    chunked: bool,
    timeout: Duration,
}

impl Writer {
    /// Writes what is queued: one chunk per flush on a chunked stream.
    async fn flush(&mut self, io: &mut Box<dyn Socket>, shared: &Shared) -> std::io::Result<()> {
        let Writer {
            wire,
            timer,
            chunked,
            timeout,
        } = self;
        // Taken whole under the lock (no copy there: senders wait on it),
        // framed outside it. Once the copy is dropped, the senders' buffer
        // gets its room back without allocating.
        let pending = {
            let mut out = shared.lock();
            shared.wake.flush_starts();
            if out.buf.is_empty() {
                return Ok(());
            }
            out.buf.split()
        };
        wire.clear();
        if *chunked {
            encode_chunk_size(wire, pending.len());
        }
        wire.extend_from_slice(&pending);
        drop(pending);
        if *chunked {
            wire.put_slice(b"\r\n");
        }
        let written = write_all_stalled(io, wire, timer, *timeout).await;
        // A backlog once flushed is not kept for the stream's life.
        if wire.capacity() > WIRE_KEEP_MAX {
            *wire = BytesMut::new();
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(event: SseEvent) -> String {
        let mut dst = BytesMut::new();
        event.encode(&mut dst).unwrap();
        String::from_utf8(dst.to_vec()).unwrap()
    }

    #[test]
    fn fields_and_multiline_data() {
        let text = encoded(
            SseEvent::new("a\nb\r\nc\rd")
                .id("7")
                .name("tick")
                .retry(Duration::from_secs(1)),
        );
        assert_eq!(
            text,
            "event: tick\nid: 7\nretry: 1000\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(encoded(SseEvent::new("")), "data: \n\n");
    }

    #[test]
    fn line_breaks_in_id_or_name_are_refused() {
        let mut dst = BytesMut::new();
        assert_eq!(
            SseEvent::new("x").id("1\n2").encode(&mut dst),
            Err(SendError::InvalidEvent)
        );
        assert_eq!(
            SseEvent::new("x").name("a\rb").encode(&mut dst),
            Err(SendError::InvalidEvent)
        );
        assert_eq!(
            SseEvent::new("x").id("nul\0").encode(&mut dst),
            Err(SendError::InvalidEvent)
        );
    }
}
