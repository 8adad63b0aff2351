//! The connection's buffered transport: the stream, its read buffer, one
//! reusable timer, and the request-body reading that the handler drives.

use super::decode::{Decoded, Decoder};
use crate::body::{BodySource, ReadError};
use crate::config::READ_CHUNK;
use crate::io::{deadline_after, poll_deadline, poll_write_all, timed, Deadline, TimedOut};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::HeaderMap;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::time::Sleep;

/// Most room made in the read buffer for one read of a request body.
const BODY_READ_MAX: usize = 64 * 1024;

/// The largest read a connection grows to (see [`Transport::read_size`]):
/// a 64 KiB body and its head in one read.
const READ_MAX: usize = 128 * 1024;

/// The interim response sent when a handler first reads a body whose
/// client asked for it (RFC 9110 §10.1.1).
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Whether `100 Continue` is owed to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Continue {
    /// The client did not ask for it, or it has been sent.
    No,
    /// Asked for; this many bytes of it written so far.
    Owed(usize),
}

/// The read side of a connection with the state of the current request's
/// body. It is lent to the handler (behind [`LentBody`]) while a request
/// with a body is being handled, and taken back afterwards, or once the
/// response's body stream that kept the request body has been written.
pub(crate) struct Transport<S> {
    pub stream: S,
    pub read_buf: BytesMut,
    /// One timer per connection, re-armed for each wait instead of
    /// allocating a new one.
    pub timer: Pin<Box<Sleep>>,
    pub decoder: Decoder,
    pub continue_state: Continue,
    /// The timer is armed for the current wait.
    armed: bool,
    /// Bytes read from the socket since the connection opened: what a
    /// discarded body costs is counted in these, not in decoded bytes.
    raw_read: u64,
    /// How much room the next read gets: it starts at 8 KiB, doubles (up
    /// to [`READ_MAX`]) whenever a read fills all the room it had, and
    /// halves after a read that used a quarter of it at most. A client
    /// that sends large requests is then read in one system call per
    /// request instead of two or more, without giving every connection
    /// large buffers: an idle plain-TCP connection holds no buffer at all,
    /// and a head that trickles in is moved to a small one (see
    /// [`Transport::shrink_for_trickle`]).
    read_size: u32,
    /// The response failed midway: close with a reset, never a clean end.
    aborted: bool,
    /// The authority of the last request's `Host` (see `parse_head`).
    pub host: Option<http::uri::Authority>,
}

impl<S: crate::io::Socket> Transport<S> {
    pub(crate) fn new(stream: S) -> Transport<S> {
        Transport {
            stream,
            read_buf: BytesMut::new(),
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            decoder: Decoder::Done,
            continue_state: Continue::No,
            armed: false,
            raw_read: 0,
            read_size: READ_CHUNK as u32,
            aborted: false,
            host: None,
        }
    }

    /// Starts a new request's body.
    pub(crate) fn begin_body(&mut self, decoder: Decoder, expect_continue: bool) {
        self.decoder = decoder;
        self.continue_state = if expect_continue && self.decoder.is_pending() {
            Continue::Owed(0)
        } else {
            Continue::No
        };
        self.armed = false;
    }

    /// One read into the read buffer; `Ok(0)` is the end of the stream.
    pub(crate) fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.poll_read_at_least(0, cx)
    }

    /// One read with room for at least `at_least` bytes (and the room the
    /// connection's reads have grown to).
    fn poll_read_at_least(
        &mut self,
        at_least: usize,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        poll_read_buf(
            &mut self.stream,
            &mut self.read_buf,
            &mut self.raw_read,
            &mut self.read_size,
            at_least,
            cx,
        )
    }

    /// Makes the coming close a reset (RFC 9293 abort): a client reading
    /// until close must not mistake a truncated body for a whole one.
    /// `false` where the stream has no reset (a Unix domain socket).
    pub(crate) fn abort(&mut self) -> bool {
        self.aborted = true;
        self.stream.reset_on_close()
    }

    pub(crate) fn aborted(&self) -> bool {
        self.aborted
    }

    /// Forgets a body-read wait that was abandoned (the handler stopped
    /// reading mid-wait), so the next wait arms the timer afresh.
    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }

    /// A head that is still incomplete after a read: if it sits in a large
    /// buffer it fills a quarter of at most (the connection's reads had
    /// grown), moves it to a buffer twice its size (8 KiB at least) and
    /// starts the reads small again. A client that sent large requests and
    /// then trickles a head must not hold 128 KiB for the header timeout.
    /// Heads mostly arrive whole, so this costs nothing then.
    pub(crate) fn shrink_for_trickle(&mut self) {
        let len = self.read_buf.len();
        if len == 0
            || self.read_buf.capacity() <= 2 * READ_CHUNK
            || len > self.read_buf.capacity() / 4
        {
            return;
        }
        self.restart_small((2 * len).max(READ_CHUNK));
    }

    /// Before an idle wait on a stream that keeps its buffer while it waits
    /// (TLS: a plain socket gives its buffers back instead): an empty buffer
    /// grown by large requests goes back to the pool for a small one, and
    /// the reads start small again, so an idle connection holds 8 KiB, not
    /// up to 128 KiB, for its keep-alive timeout.
    pub(crate) fn shrink_idle(&mut self) {
        if self.read_buf.is_empty() && self.read_buf.capacity() > 2 * READ_CHUNK {
            self.restart_small(READ_CHUNK);
        }
    }

    /// Moves what is buffered into a new buffer of `capacity`, gives the
    /// old one to the pool, and starts the reads small again.
    fn restart_small(&mut self, capacity: usize) {
        let mut small = BytesMut::with_capacity(capacity);
        small.extend_from_slice(&self.read_buf);
        let mut large = std::mem::replace(&mut self.read_buf, small);
        large.clear();
        pool_give(&mut large);
        self.read_size = READ_CHUNK as u32;
    }

    /// Reads more bytes, giving up at `deadline`.
    ///
    /// This and [`Transport::write_out`] are plain `poll_fn`s rather than
    /// nested async fns: every connection keeps the state of the wait it is
    /// in, idle ones too, and nesting would multiply it.
    pub(crate) fn read_more(
        &mut self,
        deadline: Deadline,
    ) -> impl Future<Output = Result<io::Result<usize>, TimedOut>> + '_ {
        let mut armed = false;
        poll_fn(move |cx| {
            if let Poll::Ready(read) = self.poll_read(cx) {
                return Poll::Ready(Ok(read));
            }
            poll_deadline(&mut self.timer, &mut armed, deadline, cx).map(|()| Err(TimedOut))
        })
    }

    /// Writes all of `buf` (leaving it empty) and flushes the stream;
    /// `timeout` bounds each stall (see [`crate::io::poll_write_all`]). A
    /// buffer in several pieces (a head chained to a body) goes out with
    /// vectored writes, uncopied.
    pub(crate) fn write_out<'a, B: Buf>(
        &'a mut self,
        buf: &'a mut B,
        timeout: Duration,
    ) -> impl Future<Output = io::Result<()>> + 'a {
        let mut armed = false;
        let Transport { stream, timer, .. } = self;
        poll_fn(move |cx| poll_write_out(stream, timer, &mut armed, buf, timeout, cx))
    }

    /// Puts the `100 Continue` (or what is left of it) that the client
    /// still waits for in `write_buf`, ahead of the response about to be
    /// written there: the response's body stream will read the request
    /// body.
    pub(crate) fn continue_before_response(&mut self, write_buf: &mut BytesMut) {
        if let Continue::Owed(written) = self.continue_state {
            write_buf.put_slice(&CONTINUE[written..]);
            self.continue_state = Continue::No;
        }
    }

    /// The next piece of the request body (at most `max` bytes), sending a
    /// pending `100 Continue` first. Waits at most `timeout` for the client.
    /// `gather`: see [`BodySource::poll_data`].
    pub(crate) fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        gather: bool,
        timeout: Duration,
    ) -> Poll<Result<Option<Bytes>, ReadError>> {
        loop {
            if let Continue::Owed(written) = self.continue_state {
                if !self.decoder.is_pending() {
                    self.continue_state = Continue::No;
                    continue;
                }
                if written == CONTINUE.len() {
                    // Written: make sure it leaves a buffering stream (TLS).
                    match Pin::new(&mut self.stream).poll_flush(cx) {
                        Poll::Ready(Ok(())) => {
                            self.continue_state = Continue::No;
                            continue;
                        }
                        Poll::Ready(Err(_)) => return Poll::Ready(Err(self.fail())),
                        Poll::Pending => return self.wait(cx, timeout),
                    }
                }
                match Pin::new(&mut self.stream).poll_write(cx, &CONTINUE[written..]) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        self.continue_state = Continue::Owed(written + n);
                        self.armed = false;
                        continue;
                    }
                    Poll::Ready(_) => return Poll::Ready(Err(self.fail())),
                    Poll::Pending => return self.wait(cx, timeout),
                }
            }
            // A piece that arrives in several reads is gathered (up to
            // `max` and 64 KiB) before it is handed over, as a reader that
            // asks for `max` bytes expects: a body read whole is then one
            // buffer, not pieces copied together afterwards.
            let gathering = match self.decoder {
                Decoder::Length(rest) if gather => {
                    let piece = rest.min(max as u64).min(BODY_READ_MAX as u64);
                    (self.read_buf.len() as u64) < piece
                }
                _ => false,
            };
            match if gathering {
                Ok(Decoded::NeedMore)
            } else {
                self.decoder.decode(&mut self.read_buf, max)
            } {
                Ok(Decoded::Data(bytes)) => {
                    self.armed = false;
                    return Poll::Ready(Ok(Some(bytes)));
                }
                Ok(Decoded::Done) => return Poll::Ready(Ok(None)),
                Ok(Decoded::NeedMore) => {}
                Err(_) => return Poll::Ready(Err(ReadError::MalformedBody)),
            }
            // A large body is read in large pieces: one system call per
            // 64 KiB instead of one per 8 KiB.
            let want = match self.decoder {
                Decoder::Length(rest) => {
                    usize::try_from(rest).map_or(BODY_READ_MAX, |r| r.min(BODY_READ_MAX))
                }
                Decoder::Chunked(..) => BODY_READ_MAX / 4,
                _ => 0,
            };
            match self.poll_read_at_least(want, cx) {
                Poll::Ready(Ok(n)) if n > 0 => self.armed = false,
                // The client closed (or broke) the connection mid-body.
                Poll::Ready(_) => return Poll::Ready(Err(self.fail())),
                Poll::Pending => return self.wait(cx, timeout),
            }
        }
    }

    fn fail(&mut self) -> ReadError {
        self.decoder = Decoder::Failed;
        ReadError::MalformedBody
    }

    /// Pending, unless the client has been silent for `timeout`.
    fn wait<T>(&mut self, cx: &mut Context<'_>, timeout: Duration) -> Poll<Result<T, ReadError>> {
        match poll_deadline(
            &mut self.timer,
            &mut self.armed,
            Deadline::After(timeout),
            cx,
        ) {
            Poll::Ready(()) => {
                self.decoder = Decoder::Failed;
                Poll::Ready(Err(ReadError::Timeout))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Reads and discards the rest of the body. True when it ended within
    /// `budget` bytes read off the socket (framing, extensions and all) and
    /// within `timeout` in total: a client dripping its body cannot hold
    /// the connection beyond that.
    pub(crate) async fn discard_body(&mut self, budget: u64, timeout: Duration) -> bool {
        if let Decoder::Length(remaining) = self.decoder {
            if remaining > budget {
                return false;
            }
        }
        self.disarm();
        // What is already buffered was read before; count it as well.
        let limit = self
            .raw_read
            .saturating_sub(self.read_buf.len() as u64)
            .saturating_add(budget);
        let deadline = Deadline::At(deadline_after(timeout));
        let mut timer = std::mem::replace(
            &mut self.timer,
            Box::pin(tokio::time::sleep(Duration::ZERO)),
        );
        let drained = timed(&mut timer, deadline, async {
            loop {
                match poll_fn(|cx| self.poll_body(cx, usize::MAX, false, timeout)).await {
                    Ok(Some(_)) if self.raw_read <= limit => {}
                    Ok(None) => return self.raw_read <= limit,
                    Ok(Some(_)) | Err(_) => return false,
                }
            }
        })
        .await;
        self.timer = timer;
        self.disarm();
        drained.unwrap_or(false)
    }
}

/// Buffers kept per worker thread for reuse: an idle keep-alive connection
/// gives its (empty) buffers back and holds none, and the next request takes
/// one without asking the allocator. Bounded, so a burst leaves no hoard.
const POOL_MAX: usize = 256;

/// The largest buffer worth keeping (room for the largest read); larger
/// ones grew for a big head or a pipelined burst and are freed instead.
const POOL_KEEP_MAX: usize = READ_MAX;

/// The most memory the buffers kept per thread may hold together.
const POOL_BYTES_MAX: usize = 4 * 1024 * 1024;

thread_local! {
    static POOL: std::cell::RefCell<Pool> = const {
        std::cell::RefCell::new(Pool { buffers: Vec::new(), bytes: 0 })
    };
}

/// The buffers kept, and their capacity together.
struct Pool {
    buffers: Vec<BytesMut>,
    bytes: usize,
}

/// An empty buffer with room for at least one read.
pub(crate) fn pool_take() -> BytesMut {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let buf = pool.buffers.pop()?;
        pool.bytes -= buf.capacity();
        Some(buf)
    })
    .unwrap_or_else(|| BytesMut::with_capacity(READ_CHUNK))
}

/// Gives an empty buffer back; leaves `buf` without an allocation.
pub(crate) fn pool_give(buf: &mut BytesMut) {
    if !buf.is_empty() || buf.capacity() == 0 {
        return;
    }
    let mut buf = std::mem::take(buf);
    // Reclaims the whole allocation (the room of the bytes already split
    // off too) when nothing split off still shares it: the pool then
    // counts every byte it holds. A buffer still shared (a request's header
    // values kept by a handler) counts only its own room; if that is small,
    // it is not worth keeping.
    if !buf.try_reclaim(buf.capacity() + 1) && buf.capacity() < READ_CHUNK {
        return;
    }
    if buf.capacity() > POOL_KEEP_MAX {
        return;
    }
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.buffers.len() < POOL_MAX && pool.bytes + buf.capacity() <= POOL_BYTES_MAX {
            pool.bytes += buf.capacity();
            pool.buffers.push(buf);
        }
    });
}

/// Header maps kept per worker thread for reuse: the map of a response the
/// engine has written becomes the map of the next request it parses, which
/// saves two allocations and two frees per request. Bounded like the buffer
/// pool, and only small maps are kept.
const MAP_POOL_MAX: usize = 64;

/// The largest map (in headers) worth keeping.
const MAP_KEEP_MAX: usize = 64;

thread_local! {
    static MAPS: std::cell::RefCell<Vec<HeaderMap>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An empty header map with room for `headers` fields: a kept one if it
/// is large enough (growing one would cost more than a new one: the
/// allocations, and the frees of the old room), or a new one.
pub(crate) fn map_take(headers: usize) -> HeaderMap {
    let kept = MAPS.with(|pool| {
        let mut pool = pool.borrow_mut();
        match pool.last() {
            Some(map) if map.capacity() >= headers => pool.pop(),
            _ => None,
        }
    });
    // A request with more fields than a map may hold is refused earlier
    // (`max_headers` is at most 512); this cannot fail.
    kept.unwrap_or_else(|| HeaderMap::try_with_capacity(headers).unwrap_or_default())
}

/// Gives a map back for [`map_take`] (emptied here).
pub(crate) fn map_give(mut map: HeaderMap) {
    // `len` counts every value (repeated fields live in a second vector,
    // which `capacity` does not count): either can grow large.
    if map.capacity() == 0 || map.capacity() > MAP_KEEP_MAX || map.len() > MAP_KEEP_MAX {
        return;
    }
    map.clear();
    MAPS.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < MAP_POOL_MAX {
            pool.push(map);
        }
    });
}

/// One read from `stream` into `buf`, counted in `raw_read`, with room for
/// `read_size` bytes (adapted to what the read brings, see
/// [`Transport::read_size`]) and at least `at_least`.
fn poll_read_buf<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    raw_read: &mut u64,
    read_size: &mut u32,
    at_least: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    let size = *read_size as usize;
    if buf.capacity() == 0 {
        *buf = pool_take();
    }
    let room = buf.capacity() - buf.len();
    if room < at_least || room < size / 4 || (size > READ_CHUNK && room < size) {
        buf.reserve(size.max(at_least));
    }
    let room = buf.capacity() - buf.len();
    // `read_buf` keeps no state between polls, so polling a fresh one each
    // time is equivalent to keeping it.
    let read = pin!(stream.read_buf(buf)).poll(cx);
    if let Poll::Ready(Ok(n)) = read {
        *raw_read += n as u64;
        if n == room && size < READ_MAX {
            *read_size *= 2;
        } else if n <= size / 4 && size > READ_CHUNK {
            *read_size /= 2;
        }
    }
    read
}

/// A transport lent to the handler for the length of one request.
pub(crate) type Lent<S> = Arc<Mutex<Option<Transport<S>>>>;

/// Takes a lent transport back; `None` if it was lost.
pub(crate) fn take_back<S>(lent: &Lent<S>) -> Option<Transport<S>> {
    lent.lock().unwrap_or_else(PoisonError::into_inner).take()
}

/// One poll of [`Transport::write_out`].
fn poll_write_out<S: crate::io::Socket, B: Buf>(
    stream: &mut S,
    timer: &mut Pin<Box<Sleep>>,
    armed: &mut bool,
    buf: &mut B,
    timeout: Duration,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    poll_write_all(buf, timer, armed, timeout, cx, |buf, cx| {
        if !buf.has_remaining() {
            return Pin::new(&mut *stream).poll_flush(cx).map_ok(|()| None);
        }
        let mut slices = [IoSlice::new(&[]); 4];
        let count = buf.chunks_vectored(&mut slices);
        Pin::new(&mut *stream)
            .poll_write_vectored(cx, &slices[..count])
            .map_ok(Some)
    })
}

/// [`Transport::write_out`] on a transport that stays lent: the response's
/// body stream reads the request body through it between writes (on this
/// task, or on another that the handler gave the body to). It is locked
/// for each poll only, never across a wait, and the write's deadline runs
/// on `timer`, the writer's own: the transport's timer belongs to the body
/// reads, which may wait at the same time.
pub(crate) fn write_out_lent<'a, S: crate::io::Socket, B: Buf>(
    lent: &'a Lent<S>,
    timer: &'a mut Pin<Box<Sleep>>,
    buf: &'a mut B,
    timeout: Duration,
) -> impl Future<Output = io::Result<()>> + 'a {
    let mut armed = false;
    poll_fn(move |cx| {
        let mut guard = lent.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(transport) = guard.as_mut() else {
            return Poll::Ready(Err(io::Error::other("the connection was lost")));
        };
        poll_write_out(&mut transport.stream, timer, &mut armed, buf, timeout, cx)
    })
}

/// Runs `f` on a transport that stays lent; `None` if it was lost.
pub(crate) fn with_lent<S, T>(lent: &Lent<S>, f: impl FnOnce(&mut Transport<S>) -> T) -> Option<T> {
    lent.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_mut()
        .map(f)
}

/// The request body as the handler sees it: reads go through the lent
/// transport, and fail once the server has taken it back (the body was
/// kept past the response, other than by the response's own stream).
pub(crate) struct LentBody<S> {
    pub transport: Lent<S>,
    pub declared: Option<u64>,
    pub timeout: Duration,
}

impl<S: crate::io::Socket> BodySource for LentBody<S> {
    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        gather: bool,
    ) -> Poll<Result<Option<Bytes>, ReadError>> {
        let mut guard = self
            .transport
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match guard.as_mut() {
            Some(transport) => transport.poll_body(cx, max, gather, self.timeout),
            None => {
                tracing::warn!(
                    "request body read after the handler returned its response; \
                     read the body before returning (the connection has moved on)"
                );
                Poll::Ready(Err(ReadError::MalformedBody))
            }
        }
    }

    fn declared_length(&self) -> Option<u64> {
        self.declared
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// One read with the room `poll_read_buf` makes.
    async fn read_once<S: tokio::io::AsyncRead + Unpin>(
        stream: &mut S,
        buf: &mut BytesMut,
        read_size: &mut u32,
    ) -> usize {
        let mut raw = 0;
        poll_fn(|cx| poll_read_buf(stream, buf, &mut raw, read_size, 0, cx))
            .await
            .unwrap()
    }

    /// Reads that fill their room double the next one, up to `READ_MAX`;
    /// small reads shrink it back.
    #[tokio::test]
    async fn read_size_follows_the_client() {
        let (mut client, mut server) = tokio::io::duplex(1 << 20);
        let mut buf = BytesMut::new();
        let mut size = READ_CHUNK as u32;
        // 8 + 16 + 32 + 64 + 128 + 128 KiB: six reads that fill their room.
        client.write_all(&vec![b'x'; 376 * 1024]).await.unwrap();
        let mut sizes = Vec::new();
        for _ in 0..6 {
            let n = read_once(&mut server, &mut buf, &mut size).await;
            buf.clear();
            sizes.push((n, size as usize));
        }
        assert_eq!(sizes[0], (READ_CHUNK, 2 * READ_CHUNK));
        assert_eq!(sizes[1].1, 4 * READ_CHUNK);
        assert_eq!(sizes[4], (READ_MAX, READ_MAX));
        assert_eq!(sizes[5], (READ_MAX, READ_MAX));

        let mut small = Vec::new();
        for _ in 0..5 {
            client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
            read_once(&mut server, &mut buf, &mut size).await;
            buf.clear();
            small.push(size as usize);
        }
        assert_eq!(small[0], READ_MAX / 2);
        assert_eq!(*small.last().unwrap(), READ_CHUNK);
    }

    /// The pool counts the whole allocation of a buffer whose bytes were
    /// split off and dropped, not just the room left after them.
    #[test]
    fn pool_counts_the_room_of_split_off_bytes() {
        let mut buf = BytesMut::with_capacity(READ_MAX);
        buf.resize(120 * 1024, b'x');
        drop(buf.split_to(120 * 1024).freeze());
        assert_eq!(buf.capacity(), 8 * 1024);
        let before = POOL.with(|pool| pool.borrow().bytes);
        pool_give(&mut buf);
        let after = POOL.with(|pool| pool.borrow().bytes);
        assert_eq!(after - before, READ_MAX);
        assert_eq!(pool_take().capacity(), READ_MAX);
    }

    /// A partial head in a grown buffer moves to a small one, and the
    /// connection's reads start small again; so does an idle TLS
    /// connection's empty buffer.
    #[tokio::test]
    async fn trickled_head_leaves_its_large_buffer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let mut transport = Transport::new(stream);
        transport.read_buf = BytesMut::with_capacity(READ_MAX);
        transport
            .read_buf
            .extend_from_slice(b"GET / HTTP/1.1\r\nHo");
        transport.read_size = READ_MAX as u32;
        transport.shrink_for_trickle();
        assert_eq!(&transport.read_buf[..], b"GET / HTTP/1.1\r\nHo");
        assert!(transport.read_buf.capacity() <= READ_CHUNK);
        assert_eq!(transport.read_size, READ_CHUNK as u32);

        // Between requests the buffer is empty: no head trickles, and a
        // client that sends large requests keeps its large reads (shrinking
        // here cost an 8 KiB read and a second `recvfrom` per 64 KiB echo).
        transport.read_buf = BytesMut::with_capacity(READ_MAX);
        transport.read_size = READ_MAX as u32;
        transport.shrink_for_trickle();
        assert_eq!(transport.read_buf.capacity(), READ_MAX);
        assert_eq!(transport.read_size, READ_MAX as u32);

        // A larger partial head (5 KiB) moves too, to room twice its size.
        transport.read_buf = BytesMut::with_capacity(READ_MAX);
        transport.read_buf.extend_from_slice(&[b'x'; 5 * 1024]);
        transport.shrink_for_trickle();
        assert_eq!(transport.read_buf.len(), 5 * 1024);
        assert!(transport.read_buf.capacity() <= 2 * READ_CHUNK);
        assert_eq!(transport.read_size, READ_CHUNK as u32);

        // Idle, a stream that keeps its buffer (TLS) keeps a small one.
        transport.read_buf = BytesMut::with_capacity(READ_MAX);
        transport.read_size = READ_MAX as u32;
        transport.shrink_idle();
        assert!(transport.read_buf.capacity() <= READ_CHUNK);
        assert_eq!(transport.read_size, READ_CHUNK as u32);
    }
}
