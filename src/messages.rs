//! Where a WebSocket's or an event stream's loop gets its messages: mist's
//! `Selector`, which in Rust is a channel or a stream.

use futures_core::Stream;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, mpsc};
use tracing::debug;

/// The messages that drive a loop: the custom messages of a
/// [`websocket`](crate::websocket) handler, or the messages of a
/// [`server_sent_events`](crate::server_sent_events) loop.
///
/// Made from any of tokio's channels with `.into()` (or returned as they
/// are wherever a function takes `impl Into<Messages<M>>`), or from any
/// [`Stream`] with [`Messages::from_stream`]. The loop ends its source's
/// part when the source ends: a closed channel, a finished stream.
///
/// A [`broadcast::Receiver`] suits a fan-out: one sender, every client's
/// loop subscribed, with no task in between. A loop that falls more than
/// the channel's capacity behind misses the oldest messages and goes on
/// with the ones still there, as a slow client of a busy feed should; use
/// [`Messages::from_stream`] with a stream of your own to see the lag.
/// Each subscriber receives its own clone of every message: make it cheap
/// to clone (`Arc<str>`, `Bytes`) when there are many subscribers.
///
/// ```
/// use mist::Messages;
/// use tokio::sync::{broadcast, mpsc};
///
/// let (_tx, rx) = mpsc::channel::<String>(16);
/// let from_channel: Messages<String> = rx.into();
///
/// let (feed, _) = broadcast::channel::<String>(64);
/// let from_feed: Messages<String> = feed.subscribe().into();
///
/// // Any stream, here one from the `futures-util` crate.
/// let numbers = Messages::from_stream(futures_util::stream::iter(1..=3));
/// # let _ = (from_channel, from_feed, numbers);
/// ```
pub struct Messages<M> {
    source: Source<M>,
}

enum Source<M> {
    Bounded(mpsc::Receiver<M>),
    Unbounded(mpsc::UnboundedReceiver<M>),
    /// Any stream, boxed once; a broadcast receiver is one too.
    Stream(Pin<Box<dyn Stream<Item = M> + Send>>),
}

impl Messages<std::convert::Infallible> {
    /// No source of custom messages, for a WebSocket's `on_init` that
    /// needs none: the custom message type is then `Infallible`, which the
    /// compiler could not guess from a bare `None`.
    ///
    /// ```no_run
    /// use http::{Request, Response};
    /// use mist::{Connection, Messages, Next, ResponseData, WebsocketMessage};
    ///
    /// async fn echo(req: Request<Connection>) -> Response<ResponseData> {
    ///     mist::websocket(
    ///         req,
    ///         |_conn| ((), Messages::none()),
    ///         |_state, conn, message| {
    ///             if let WebsocketMessage::Text(text) = message {
    ///                 let _ = mist::send_text_frame(conn, &text);
    ///             }
    ///             Next::Continue
    ///         },
    ///         |_state| {},
    ///     )
    /// }
    /// ```
    pub fn none() -> Option<Messages<std::convert::Infallible>> {
        None
    }
}

impl<M> Messages<M> {
    /// Messages from any stream. It is polled on the connection's task,
    /// within tokio's cooperative budget, so a stream that is always ready
    /// cannot keep the task from yielding. A stream that panics ends its
    /// connection as a panicking handler would: a WebSocket closes with
    /// 1011, an event stream is cut off without a clean end.
    ///
    /// ```
    /// use mist::Messages;
    /// use std::time::Duration;
    ///
    /// // Ten ticks, a second apart (`unfold` is the `futures-util` crate's).
    /// let ticks = futures_util::stream::unfold(1u32, |i| async move {
    ///     if i > 1 {
    ///         tokio::time::sleep(Duration::from_secs(1)).await;
    ///     }
    ///     (i <= 10).then_some((i, i + 1))
    /// });
    /// let messages = Messages::from_stream(ticks);
    /// # let _ = messages;
    /// ```
    pub fn from_stream<S>(stream: S) -> Messages<M>
    where
        S: Stream<Item = M> + Send + 'static,
    {
        Messages {
            source: Source::Stream(Box::pin(stream)),
        }
    }

    /// The next message. A stream of the application's that panics is
    /// reported as such (the loop then ends as for a panicking handler),
    /// and must not be polled again.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Polled<M>> {
        let next = match &mut self.source {
            Source::Bounded(rx) => rx.poll_recv(cx),
            Source::Unbounded(rx) => rx.poll_recv(cx),
            Source::Stream(stream) => {
                let coop = std::task::ready!(tokio::task::coop::poll_proceed(cx));
                let Ok(next) = catch_unwind(AssertUnwindSafe(|| stream.as_mut().poll_next(cx)))
                else {
                    return Poll::Ready(Polled::Panicked);
                };
                if next.is_ready() {
                    coop.made_progress();
                }
                next
            }
        };
        next.map(|next| next.map_or(Polled::Ended, Polled::Message))
    }
}

/// What a poll of a [`Messages`] source gave.
pub(crate) enum Polled<M> {
    Message(M),
    /// The source has ended (every sender dropped, the stream done).
    Ended,
    /// The application's stream panicked.
    Panicked,
}

impl<M> From<mpsc::Receiver<M>> for Messages<M> {
    fn from(rx: mpsc::Receiver<M>) -> Messages<M> {
        Messages {
            source: Source::Bounded(rx),
        }
    }
}

impl<M> From<mpsc::UnboundedReceiver<M>> for Messages<M> {
    fn from(rx: mpsc::UnboundedReceiver<M>) -> Messages<M> {
        Messages {
            source: Source::Unbounded(rx),
        }
    }
}

/// Every message sent after the receiver subscribed; a loop that falls
/// behind skips what the channel no longer holds (see [`Messages`]).
impl<M> From<broadcast::Receiver<M>> for Messages<M>
where
    M: Clone + Send + 'static,
{
    fn from(rx: broadcast::Receiver<M>) -> Messages<M> {
        // The receive future lives inside the stream: no allocation per
        // message, one for the stream.
        Messages::from_stream(futures_util::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(message) => return Some((message, rx)),
                    Err(RecvError::Lagged(missed)) => {
                        debug!(missed, "a loop fell behind its broadcast channel");
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        }))
    }
}

impl<M> fmt::Debug for Messages<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.source {
            Source::Bounded(_) => "Messages(mpsc::Receiver)",
            Source::Unbounded(_) => "Messages(mpsc::UnboundedReceiver)",
            Source::Stream(_) => "Messages(Stream)",
        })
    }
}
