//! What the engines need from a connection's byte stream.

use bytes::{Buf, BytesMut};
use futures_util::task::AtomicWaker;
use std::future::{poll_fn, Future};
use std::os::fd::AsFd;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::{Instant, Sleep};

/// A connection's stream: plain TCP or a Unix domain socket, or TLS over
/// either (`src/tls.rs`), or an HTTP/2 stream (`src/http2/io.rs`).
/// Engines are generic over it; the one thing they ask beyond reading and
/// writing is whether the kernel can write into it directly (files with
/// `sendfile(2)`, readiness without a read).
pub(crate) trait Socket: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The kernel socket underneath when bytes written to it reach the
    /// client as they are, so the kernel may write to it directly.
    fn as_plain(&self) -> Option<&dyn Plain>;

    /// Makes closing the connection send a reset instead of a clean end;
    /// `false` where the stream has no reset (a Unix domain socket), and
    /// the client sees a clean end.
    fn reset_on_close(&self) -> bool;
}

/// What the engines ask of a kernel socket itself: its descriptor and its
/// readiness (the same methods on tokio's `TcpStream` and `UnixStream`).
pub(crate) trait Plain: AsFd + Send + Sync {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>>;
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>>;
    /// Runs a system call, clearing the readiness if it would block.
    fn try_io(
        &self,
        interest: Interest,
        call: &mut dyn FnMut() -> std::io::Result<usize>,
    ) -> std::io::Result<usize>;
}

impl Socket for TcpStream {
    fn as_plain(&self) -> Option<&dyn Plain> {
        Some(self)
    }

    fn reset_on_close(&self) -> bool {
        // SO_LINGER with a zero timeout: close() sends RST.
        socket2::SockRef::from(self)
            .set_linger(Some(Duration::ZERO))
            .is_ok()
    }
}

impl Socket for UnixStream {
    fn as_plain(&self) -> Option<&dyn Plain> {
        Some(self)
    }

    /// A Unix domain socket has no reset: the client sees the end of the
    /// stream. A response cut short is still incomplete by its own framing
    /// (a `content-length` not reached, a chunked body without its last
    /// chunk), except a body that runs until close (HTTP/1.0).
    fn reset_on_close(&self) -> bool {
        false
    }
}

/// An accepted connection's socket, of either kind: one type, so that the
/// engines are compiled once for both (compiled for each, the example's
/// code grew by 9 %, 350 KB).
pub(crate) enum PlainStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// Calls the same method on whichever socket it is.
macro_rules! either {
    ($stream:expr, $socket:ident => $call:expr) => {
        match $stream {
            PlainStream::Tcp($socket) => $call,
            PlainStream::Unix($socket) => $call,
        }
    };
}

impl AsyncRead for PlainStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        either!(self.get_mut(), socket => Pin::new(socket).poll_read(cx, buf))
    }
}

impl AsyncWrite for PlainStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        either!(self.get_mut(), socket => Pin::new(socket).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        either!(self.get_mut(), socket => Pin::new(socket).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        either!(self, socket => socket.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        either!(self.get_mut(), socket => Pin::new(socket).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        either!(self.get_mut(), socket => Pin::new(socket).poll_shutdown(cx))
    }
}

impl Socket for PlainStream {
    fn as_plain(&self) -> Option<&dyn Plain> {
        either!(self, socket => socket.as_plain())
    }

    fn reset_on_close(&self) -> bool {
        either!(self, socket => socket.reset_on_close())
    }
}

/// Both of tokio's stream sockets have these methods of their own.
macro_rules! plain {
    ($socket:ty) => {
        impl Plain for $socket {
            fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
                <$socket>::poll_read_ready(self, cx)
            }

            fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
                <$socket>::poll_write_ready(self, cx)
            }

            fn try_io(
                &self,
                interest: Interest,
                call: &mut dyn FnMut() -> std::io::Result<usize>,
            ) -> std::io::Result<usize> {
                <$socket>::try_io(self, interest, call)
            }
        }
    };
}

plain!(TcpStream);
plain!(UnixStream);

/// A stream whose first bytes were already read (the preface the HTTP/1.1
/// parser saw before HTTP/2 took over, what a client sent right behind an
/// upgrade): they are read again first.
pub(crate) struct Prefixed<S> {
    prefix: BytesMut,
    inner: S,
}

impl<S> Prefixed<S> {
    pub(crate) fn new(prefix: BytesMut, inner: S) -> Prefixed<S> {
        // An empty buffer would keep its allocation (shared with a
        // request's head) for the stream's life.
        let prefix = if prefix.is_empty() {
            BytesMut::new()
        } else {
            prefix
        };
        Prefixed { prefix, inner }
    }

    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix[..n]);
        this.prefix.advance(n);
        if this.prefix.is_empty() {
            // The engine's buffer is not kept for the stream's life.
            this.prefix = BytesMut::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The server's stop signal: a flag, and the wakers of the connections
/// that wait for it.
///
/// Each connection registers once, when it starts ([`Shutdown::watch`]),
/// and then only stores its task's waker in its own slot whenever it
/// waits: no lock and nothing shared is touched per request. (A `Notify`
/// registration per idle wait took a lock that every connection of every
/// worker shared, twice per keep-alive request: 267 user-space instructions
/// of about 10,900, and contention on a machine with many cores; a `watch`
/// channel before it cost more.) The registry is sharded so that
/// connections starting on different workers rarely meet on a lock.
#[derive(Clone, Default)]
pub(crate) struct Shutdown(Arc<ShutdownState>);

/// Shards of the registry of waiting connections.
const STOP_SHARDS: usize = 16;

#[derive(Default)]
struct ShutdownState {
    stopping: AtomicBool,
    /// Spreads new connections over the shards.
    next: AtomicUsize,
    shards: [Mutex<WakerSlots>; STOP_SHARDS],
}

/// One shard: the connections' waker slots, with the free places reused.
#[derive(Default)]
struct WakerSlots {
    slots: Vec<Option<Arc<AtomicWaker>>>,
    free: Vec<usize>,
}

impl Shutdown {
    /// Starts the shutdown and wakes every connection that waits for it.
    pub(crate) fn stop(&self) {
        self.0.stopping.store(true, Ordering::SeqCst);
        for shard in &self.0.shards {
            let shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            for waker in shard.slots.iter().flatten() {
                waker.wake();
            }
        }
    }

    /// A connection's registration: how it learns of the stop.
    pub(crate) fn watch(&self) -> StopWatch {
        let shard = self.0.next.fetch_add(1, Ordering::Relaxed) % STOP_SHARDS;
        let waker = Arc::new(AtomicWaker::new());
        let mut slots = self.0.shards[shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let index = match slots.free.pop() {
            Some(index) => {
                slots.slots[index] = Some(Arc::clone(&waker));
                index
            }
            None => {
                slots.slots.push(Some(Arc::clone(&waker)));
                slots.slots.len() - 1
            }
        };
        drop(slots);
        StopWatch {
            state: Arc::clone(&self.0),
            waker,
            shard,
            index,
        }
    }
}

/// One connection's view of the server's stop signal (see [`Shutdown`]);
/// dropping it takes the connection out of the registry.
pub(crate) struct StopWatch {
    state: Arc<ShutdownState>,
    waker: Arc<AtomicWaker>,
    shard: usize,
    index: usize,
}

impl StopWatch {
    /// Whether the server is shutting down.
    pub(crate) fn is_stopping(&self) -> bool {
        self.state.stopping.load(Ordering::SeqCst)
    }

    /// Ready once the server is shutting down; otherwise the task is woken
    /// when it does.
    pub(crate) fn poll_stopped(&self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if self.is_stopping() {
            return Poll::Ready(());
        }
        // Stored before the flag is read again: a stop in between either
        // sees this waker or is seen by the read.
        self.waker.register(cx.waker());
        if self.is_stopping() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Completes once the server is shutting down.
    pub(crate) async fn stopped(&self) {
        poll_fn(|cx| self.poll_stopped(cx)).await
    }

    /// A registration of its own for another task of the same connection
    /// (an HTTP/2 stream that outlives its handler).
    pub(crate) fn another(&self) -> StopWatch {
        Shutdown(Arc::clone(&self.state)).watch()
    }
}

impl Drop for StopWatch {
    fn drop(&mut self) {
        let mut slots = self.state.shards[self.shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        slots.slots[self.index] = None;
        slots.free.push(self.index);
    }
}

/// `now + timeout`, saturating: `Duration::MAX` means "practically never"
/// rather than an overflow panic.
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// When a timed operation gives up.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Deadline {
    /// This long after the operation first has to wait.
    After(Duration),
    /// At this instant.
    At(Instant),
}

impl Deadline {
    fn instant(self) -> Instant {
        match self {
            Deadline::After(d) => deadline_after(d),
            Deadline::At(at) => at,
        }
    }
}

/// Polls `timer` as the deadline of one wait: set on the wait's first poll
/// (`armed` remembers it), so waits that never block touch no timer.
/// Clearing `armed` on progress makes the deadline a stall limit.
pub(crate) fn poll_deadline(
    timer: &mut Pin<Box<Sleep>>,
    armed: &mut bool,
    deadline: Deadline,
    cx: &mut std::task::Context<'_>,
) -> Poll<()> {
    if !*armed {
        timer.as_mut().reset(deadline.instant());
        *armed = true;
    }
    timer.as_mut().poll(cx)
}

/// A stall limit whose timer is made only when something first has to
/// wait: a response or body that never waits allocates none. Each wait
/// may last `timeout` from its first `Pending`; [`LazyDeadline::progress`]
/// starts the next.
#[derive(Default)]
pub(crate) struct LazyDeadline {
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl LazyDeadline {
    /// Ready once the current wait has lasted `timeout`.
    pub(crate) fn poll(&mut self, timeout: Duration, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::ZERO)));
        poll_deadline(timer, &mut self.armed, Deadline::After(timeout), cx)
    }

    /// Something moved: the next wait starts its own clock.
    pub(crate) fn progress(&mut self) {
        self.armed = false;
    }
}

/// A timed operation did not finish in time.
#[derive(Debug)]
pub(crate) struct TimedOut;

/// Runs `fut` against `timer`. The timer is only touched when `fut` has to
/// wait, so operations that complete at once cost no timer update.
pub(crate) async fn timed<F: Future>(
    timer: &mut Pin<Box<Sleep>>,
    deadline: Deadline,
    fut: F,
) -> Result<F::Output, TimedOut> {
    let mut fut = pin!(fut);
    let mut armed = false;
    poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        poll_deadline(timer, &mut armed, deadline, cx).map(|()| Err(TimedOut))
    })
    .await
}

/// How a connection that writes what is queued for it (a WebSocket, an
/// event stream) learns that there is something to write.
///
/// What the connection's own callback queues needs no wake: the flush
/// follows as soon as it returns. What another task queues wakes the
/// connection with a flag and an [`AtomicWaker`], no lock. The protocol,
/// with the connection's output behind a mutex:
/// - the connection calls [`OutputWake::callback_starts`] before its
///   callback, and [`OutputWake::flush_starts`] under the output lock
///   when it takes what is queued;
/// - a sender calls [`OutputWake::needs_wake`] under the same lock after
///   queueing, and [`OutputWake::wake`] after releasing it if so.
///
/// A sender then either queued before that flush took the output or sees
/// the flag cleared. (A `Notify` woken by every send left a permit behind
/// the callback's own sends: an empty second turn of the loop per message.)
#[derive(Default)]
pub(crate) struct OutputWake {
    waker: AtomicWaker,
    /// Another task queued output since the connection last looked.
    queued: AtomicBool,
    /// The connection's own callback is running.
    in_callback: AtomicBool,
}

impl OutputWake {
    #[inline]
    pub(crate) fn callback_starts(&self) {
        self.in_callback.store(true, Ordering::Relaxed);
    }

    /// Called with the output lock held.
    #[inline]
    pub(crate) fn flush_starts(&self) {
        self.in_callback.store(false, Ordering::Relaxed);
    }

    /// Called with the output lock held, after queueing.
    #[inline]
    pub(crate) fn needs_wake(&self) -> bool {
        !self.in_callback.load(Ordering::Relaxed)
    }

    /// Called after releasing the output lock.
    #[inline]
    pub(crate) fn wake(&self) {
        self.queued.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Ready when another task queued output since the last look.
    #[inline]
    pub(crate) fn poll_queued(&self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        // Registered before looking, so that output queued in between
        // still wakes the task.
        self.waker.register(cx.waker());
        if self.queued.swap(false, Ordering::Acquire) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// A connection the HTTP/1.1 engine hands over after writing a response
/// head, to a protocol that then runs to the end of the connection
/// (WebSocket, server-sent events). Boxed as `dyn Socket`, so one loop
/// serves TCP and TLS alike.
pub(crate) struct Handover {
    pub io: Box<dyn Socket>,
    /// Bytes the client sent past its request, already read.
    pub read_buf: bytes::BytesMut,
    /// The server's stop signal.
    pub shutdown: StopWatch,
    pub peer: Option<std::net::SocketAddr>,
    /// The server's write timeout ([`Builder::write_timeout`]), for
    /// options that do not set their own.
    ///
    /// [`Builder::write_timeout`]: crate::Builder::write_timeout
    pub write_timeout: std::time::Duration,
}

/// Closes our side of a connection, then reads and discards what the peer
/// still sends, up to `max_bytes` and for at most `time` (RFC 9112 §9.6
/// "lingering close"), so that a peer still busy sending reads our last
/// words (an error response, a close frame) instead of a reset.
pub(crate) async fn linger_close<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
    io: &mut S,
    scratch: &mut bytes::BytesMut,
    timer: &mut Pin<Box<Sleep>>,
    time: Duration,
    max_bytes: u64,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let drain = async {
        io.shutdown().await.ok()?;
        let mut total = 0u64;
        while total < max_bytes {
            scratch.clear();
            scratch.reserve(4096);
            match io.read_buf(scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n as u64,
            }
        }
        Some(())
    };
    let _ = timed(timer, Deadline::After(time), drain).await;
}

/// Drives the writes of `buf` until it is empty and `step` says so.
/// `step` makes one attempt without waiting: the bytes it wrote, or `None`
/// once `buf` is empty and the stream flushed. `timeout` bounds each
/// stall, not the whole write (progress re-arms it), so a slow but steady
/// download is never cut off.
pub(crate) fn poll_write_all<B: bytes::Buf>(
    buf: &mut B,
    timer: &mut Pin<Box<Sleep>>,
    armed: &mut bool,
    timeout: Duration,
    cx: &mut std::task::Context<'_>,
    mut step: impl FnMut(&mut B, &mut std::task::Context<'_>) -> Poll<std::io::Result<Option<usize>>>,
) -> Poll<std::io::Result<()>> {
    loop {
        match step(buf, cx) {
            Poll::Ready(Ok(None)) => return Poll::Ready(Ok(())),
            Poll::Ready(Ok(Some(0))) => {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()))
            }
            Poll::Ready(Ok(Some(n))) => {
                buf.advance(n);
                *armed = false;
            }
            Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
            Poll::Pending => {
                return poll_deadline(timer, armed, Deadline::After(timeout), cx)
                    .map(|()| Err(std::io::ErrorKind::TimedOut.into()))
            }
        }
    }
}

/// Writes all of `buf` to `io` and flushes it, with `timeout` bounding
/// each stall rather than the whole write: a slow but steady client gets
/// a large backlog whole, as it gets a large body
/// ([`Builder::write_timeout`](crate::Builder::write_timeout)).
pub(crate) async fn write_all_stalled<W: AsyncWrite + Unpin + ?Sized>(
    io: &mut W,
    mut buf: &[u8],
    timer: &mut Pin<Box<Sleep>>,
    timeout: Duration,
) -> std::io::Result<()> {
    let mut armed = false;
    poll_fn(|cx| {
        poll_write_all(&mut buf, timer, &mut armed, timeout, cx, |buf, cx| {
            if buf.is_empty() {
                return Pin::new(&mut *io).poll_flush(cx).map_ok(|()| None);
            }
            Pin::new(&mut *io).poll_write(cx, buf).map_ok(Some)
        })
    })
    .await
}

/// Writes `buf` with `MSG_MORE`: the bytes stay queued until what follows
/// them pushes them out in the same segments. Used for a connection's
/// last bytes, so that the FIN of the shutdown that must follow is set on
/// the queued segment instead of sent in one of its own, and for the head
/// of a file response, which then leaves with the file's first bytes
/// instead of in a segment of its own. One packet (and the peer's work for
/// it) less each time. What follows must come: the bytes wait for it.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) async fn write_corked(
    socket: &dyn Plain,
    buf: &mut bytes::BytesMut,
    timer: &mut Pin<Box<Sleep>>,
    timeout: Duration,
) -> std::io::Result<()> {
    use rustix::net::SendFlags;
    let mut armed = false;
    poll_fn(|cx| {
        poll_write_all(buf, timer, &mut armed, timeout, cx, |buf, cx| loop {
            if buf.is_empty() {
                return Poll::Ready(Ok(None));
            }
            let sent = socket.try_io(Interest::WRITABLE, &mut || {
                rustix::net::send(socket.as_fd(), buf, SendFlags::MORE | SendFlags::NOSIGNAL)
                    .map_err(std::io::Error::from)
            });
            match sent {
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                    // Readiness was cleared: wait for it (or go round
                    // again if it is already back).
                    std::task::ready!(socket.poll_write_ready(cx))?;
                }
                sent => return Poll::Ready(sent.map(Some)),
            }
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection waiting for the stop is woken by it, one that starts
    /// after it sees it at once, and a finished connection's place in the
    /// registry is reused.
    #[tokio::test]
    async fn stop_wakes_every_watcher() {
        let shutdown = Shutdown::default();
        let watchers: Vec<_> = (0..40).map(|_| shutdown.watch()).collect();
        let waiting: Vec<_> = watchers
            .into_iter()
            .map(|watch| tokio::spawn(async move { watch.stopped().await }))
            .collect();
        let slots = |shutdown: &Shutdown| -> usize {
            shutdown
                .0
                .shards
                .iter()
                .map(|s| s.lock().unwrap().slots.len())
                .sum()
        };
        // One finished connection per shard, then as many new ones.
        drop(
            (0..STOP_SHARDS)
                .map(|_| shutdown.watch())
                .collect::<Vec<_>>(),
        );
        let before = slots(&shutdown);
        let again: Vec<_> = (0..STOP_SHARDS).map(|_| shutdown.watch()).collect();
        assert_eq!(slots(&shutdown), before, "freed places are reused");
        drop(again);
        tokio::task::yield_now().await;
        assert!(!shutdown.watch().is_stopping());
        shutdown.stop();
        for task in waiting {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("woken by the stop")
                .unwrap();
        }
        let late = shutdown.watch();
        assert!(late.is_stopping());
        tokio::time::timeout(Duration::from_secs(10), late.stopped())
            .await
            .unwrap();
    }
}
