//! A request body read from an HTTP/2 stream.

use super::{lock, SharedRespond};
use crate::body::{BodySource, ReadError};
use crate::io::{poll_deadline, Deadline};
use bytes::{Bytes, BytesMut};
use h2::RecvStream;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;

/// Most bytes a gathered piece waits for (as for HTTP/1.1).
const GATHER_MAX: usize = 64 * 1024;

/// The body of one stream's request. Flow-control capacity is given back
/// as each DATA frame is taken from `h2`, so the client can send on while
/// the handler reads; what it may send ahead is bounded by the stream's
/// window.
pub(super) struct H2Body {
    recv: RecvStream,
    declared: Option<u64>,
    /// Bytes of a declared length not given out yet.
    remaining: Option<u64>,
    /// The rest of a DATA frame larger than the piece asked for.
    pending: Bytes,
    /// A gathered piece being put together across waits.
    gathered: BytesMut,
    /// The stream's response, while a `100 Continue` may be owed: sent
    /// when the body is first read, unless the response went first.
    continue_to: Option<SharedRespond>,
    timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl H2Body {
    pub(super) fn new(
        recv: RecvStream,
        declared: Option<u64>,
        continue_to: Option<SharedRespond>,
        timeout: Duration,
    ) -> H2Body {
        H2Body {
            recv,
            declared,
            remaining: declared,
            pending: Bytes::new(),
            gathered: BytesMut::new(),
            continue_to,
            timeout,
            timer: None,
            armed: false,
        }
    }

    fn give(&mut self, piece: Bytes) -> Poll<Result<Option<Bytes>, ReadError>> {
        if let Some(remaining) = &mut self.remaining {
            *remaining = remaining.saturating_sub(piece.len() as u64);
        }
        Poll::Ready(Ok(Some(piece)))
    }
}

impl BodySource for H2Body {
    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        gather: bool,
    ) -> Poll<Result<Option<Bytes>, ReadError>> {
        if let Some(respond) = self.continue_to.take() {
            lock(&respond).send_continue(cx);
        }
        let max = max.max(1);
        // A gathered piece waits for this much (never more than `max`).
        let target = match (gather, self.remaining) {
            (true, Some(remaining)) => (max.min(GATHER_MAX) as u64).min(remaining).max(1) as usize,
            _ => 1,
        };
        loop {
            // What is held already may be enough: `max` can differ from
            // the call that gathered it (a read given up and another made).
            if !self.gathered.is_empty() && self.gathered.len() >= target {
                let piece = self.gathered.split_to(max.min(self.gathered.len()));
                return self.give(piece.freeze());
            }
            if !self.pending.is_empty() {
                if self.gathered.is_empty() && self.pending.len() >= target {
                    // The common case: a slice of the frame, no copy.
                    let piece = self.pending.split_to(max.min(self.pending.len()));
                    return self.give(piece);
                }
                let room = max.saturating_sub(self.gathered.len());
                let take = room.min(self.pending.len());
                self.gathered
                    .extend_from_slice(&self.pending.split_to(take));
                continue;
            }
            match self.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    // Only fails once the stream is gone.
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.armed = false;
                    self.pending = data;
                }
                // A reset by the client, a length that does not match
                // `content-length`, or the connection's end.
                Poll::Ready(Some(Err(_))) => return Poll::Ready(Err(ReadError::MalformedBody)),
                Poll::Ready(None) if self.gathered.is_empty() => return Poll::Ready(Ok(None)),
                Poll::Ready(None) => {
                    let piece = self.gathered.split_to(max.min(self.gathered.len()));
                    return self.give(piece.freeze());
                }
                Poll::Pending => {
                    let timer = self
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(Duration::ZERO)));
                    let deadline = Deadline::After(self.timeout);
                    if poll_deadline(timer, &mut self.armed, deadline, cx).is_ready() {
                        return Poll::Ready(Err(ReadError::Timeout));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn declared_length(&self) -> Option<u64> {
        self.declared
    }
}
