//! One HTTP/2 stream seen as a socket by the protocols that take a
//! response over.

use super::poll_capacity;
use crate::io::{Plain, Socket};
use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One HTTP/2 stream as a socket, for the protocols that take a response
/// over: writes become DATA frames as the client's flow-control window
/// allows (a client that grants none stalls the writer, whose write
/// timeout then ends the stream), and shutting down ends the stream.
/// Reads take the client's DATA frames when the stream is a tunnel (a
/// WebSocket's extended CONNECT), giving the window back as they go, and
/// end where the client ends its side; on an event stream, whose client
/// sends nothing, a read ends (with no bytes) when the client resets the
/// stream: it left. Dropped before its end, the stream ends as a TCP
/// connection closed without a shutdown would: with `END_STREAM`, the
/// FIN's equivalent (RFC 8441 §5). It is reset instead with
/// `INTERNAL_ERROR` after [`Socket::reset_on_close`] (where a socket would
/// send RST) or when dropped by a panic, and with `CANCEL` when dropped
/// while a write waited for the client's window: its end would queue
/// behind bytes the client does not take, and hold the stream open for as
/// long as it does not.
pub(super) struct StreamIo {
    send: SendStream<Bytes>,
    /// The client's side of a tunnel, until it ends.
    recv: Option<RecvStream>,
    /// The rest of a DATA frame larger than the last read.
    pending: Bytes,
    /// An error met after a read had bytes already: the next read's.
    failed_read: Option<h2::Error>,
    ended: bool,
    failed: AtomicBool,
    /// The last write waited for the client's flow-control window.
    write_waiting: bool,
}

impl StreamIo {
    /// `recv`: the client's side, for a tunnel (a WebSocket); `None` for
    /// an event stream, whose client sends nothing.
    pub(super) fn new(send: SendStream<Bytes>, recv: Option<RecvStream>) -> StreamIo {
        StreamIo {
            send,
            recv,
            pending: Bytes::new(),
            failed_read: None,
            ended: false,
            failed: AtomicBool::new(false),
            write_waiting: false,
        }
    }
}

impl AsyncWrite for StreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.ended {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        this.send.reserve_capacity(buf.len());
        let polled = poll_capacity(&mut this.send, cx);
        this.write_waiting = polled.is_pending();
        match polled {
            Poll::Ready(Ok(granted)) => {
                let n = granted.min(buf.len());
                this.send
                    .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                    .map_err(io::Error::other)?;
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(_)) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Frames go out as the connection's task writes them.
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.ended {
            this.ended = true;
            this.send
                .send_data(Bytes::new(), true)
                .map_err(io::Error::other)?;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for StreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(err) = this.failed_read.take() {
            return Poll::Ready(Err(io::Error::other(err)));
        }
        let Some(recv) = &mut this.recv else {
            // A reset, or the connection's end: no bytes, the end of input.
            return this.send.poll_reset(cx).map(|_| Ok(()));
        };
        // Every frame that is ready and fits: a burst of small messages
        // leaves `h2`'s buffers as fast as it came (see DATA_FRAME_BUDGET).
        let mut read_any = false;
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending.split_to(n));
                read_any = true;
                if buf.remaining() == 0 {
                    return Poll::Ready(Ok(()));
                }
            }
            match recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    // Only fails once the stream is gone.
                    let _ = recv.flow_control().release_capacity(data.len());
                    this.pending = data;
                }
                Poll::Ready(Some(Err(err))) if read_any => {
                    // The bytes first; the error at the next read.
                    this.failed_read = Some(err);
                    return Poll::Ready(Ok(()));
                }
                Poll::Ready(None) | Poll::Pending if read_any => return Poll::Ready(Ok(())),
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Err(io::Error::other(err))),
                // The client ended its side: the end of input.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Socket for StreamIo {
    fn as_plain(&self) -> Option<&dyn Plain> {
        None
    }

    fn reset_on_close(&self) -> bool {
        self.failed.store(true, Ordering::Relaxed);
        true
    }
}

impl Drop for StreamIo {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        // Dropped while unwinding: a socket would only close, but a clean
        // end here would pass for a whole response. (The application's
        // callbacks and message sources are caught before; this is for a
        // panic of mist's own.)
        if self.failed.load(Ordering::Relaxed) || std::thread::panicking() {
            self.send.send_reset(Reason::INTERNAL_ERROR);
        } else if self.write_waiting || self.send.send_data(Bytes::new(), true).is_err() {
            // Already reset by the client, or the connection is gone.
            self.send.send_reset(Reason::CANCEL);
        }
    }
}
