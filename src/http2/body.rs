//! A request body read from an HTTP/2 stream.

use super::{lock, SharedRespond};
use crate::body::{BodySource, ReadError};
use crate::io::LazyDeadline;
use bytes::{Bytes, BytesMut};
use h2::RecvStream;
use std::task::{Context, Poll};
use std::time::Duration;

/// Most bytes a gathered piece waits for (as for HTTP/1.1).
const GATHER_MAX: usize = 64 * 1024;

/// The body of one stream's request. Flow-control capacity is given back
/// as each DATA frame is taken from `h2`, so the client can send on while
/// the handler reads; what it may send ahead is bounded by the stream's
/// window.
pub(super) struct H2Body {
    recv: RecvStream,
    declared: Option<u64>,
    pieces: Pieces,
    /// The stream's response, while a `100 Continue` may be owed: sent
    /// when the body is first read, unless the response went first.
    continue_to: Option<SharedRespond>,
    /// The body read timeout, between DATA frames.
    timeout: Duration,
    deadline: LazyDeadline,
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
            pieces: Pieces::new(declared),
            continue_to,
            timeout,
            deadline: LazyDeadline::default(),
        }
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
        loop {
            if let Some(piece) = self.pieces.take(max, gather) {
                return Poll::Ready(Ok(Some(piece)));
            }
            match self.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    // Only fails once the stream is gone.
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.deadline.progress();
                    self.pieces.push(data);
                }
                // A reset by the client, a length that does not match
                // `content-length`, or the connection's end.
                Poll::Ready(Some(Err(_))) => return Poll::Ready(Err(ReadError::MalformedBody)),
                Poll::Ready(None) => return Poll::Ready(Ok(self.pieces.finish(max))),
                Poll::Pending => {
                    return match self.deadline.poll(self.timeout, cx) {
                        Poll::Ready(()) => Poll::Ready(Err(ReadError::Timeout)),
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    }

    fn declared_length(&self) -> Option<u64> {
        self.declared
    }
}

/// Cuts the DATA frames `h2` gives into the pieces the handler asks for.
/// No I/O, so that every way of splitting can be tested.
struct Pieces {
    /// Bytes of a declared length not given out yet.
    remaining: Option<u64>,
    /// The rest of a DATA frame larger than the piece asked for.
    pending: Bytes,
    /// A gathered piece being put together across waits.
    gathered: BytesMut,
}

impl Pieces {
    fn new(declared: Option<u64>) -> Pieces {
        Pieces {
            remaining: declared,
            pending: Bytes::new(),
            gathered: BytesMut::new(),
        }
    }

    /// A piece of at most `max` bytes (at least 1) from what is held, or
    /// `None` if more must arrive first. `gather`: a body of declared
    /// length waits for `max` bytes (at most 64 KiB) or its rest;
    /// otherwise any byte held is a piece. What is held may exceed `max`
    /// when this call's `max` is smaller than the one that gathered it (a
    /// read given up and another made).
    fn take(&mut self, max: usize, gather: bool) -> Option<Bytes> {
        let max = max.max(1);
        let target = match (gather, self.remaining) {
            (true, Some(remaining)) => (max.min(GATHER_MAX) as u64).min(remaining).max(1) as usize,
            _ => 1,
        };
        loop {
            if !self.gathered.is_empty() && self.gathered.len() >= target {
                let piece = self.gathered.split_to(max.min(self.gathered.len()));
                return Some(self.give(piece.freeze()));
            }
            if self.pending.is_empty() {
                return None;
            }
            if self.gathered.is_empty() && self.pending.len() >= target {
                // The common case: a slice of the frame, no copy.
                let piece = self.pending.split_to(max.min(self.pending.len()));
                return Some(self.give(piece));
            }
            let take = max
                .saturating_sub(self.gathered.len())
                .min(self.pending.len());
            self.gathered
                .extend_from_slice(&self.pending.split_to(take));
        }
    }

    /// A frame from `h2`; only once what came before is taken (`take`
    /// returned `None`).
    fn push(&mut self, frame: Bytes) {
        debug_assert!(self.pending.is_empty());
        self.pending = frame;
    }

    /// The body ended: what is still gathered, at most `max` bytes a
    /// piece, then `None`.
    fn finish(&mut self, max: usize) -> Option<Bytes> {
        if self.gathered.is_empty() {
            return None;
        }
        let piece = self.gathered.split_to(max.max(1).min(self.gathered.len()));
        Some(self.give(piece.freeze()))
    }

    fn give(&mut self, piece: Bytes) -> Bytes {
        if let Some(remaining) = &mut self.remaining {
            *remaining = remaining.saturating_sub(piece.len() as u64);
        }
        piece
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator: the tests need variety, not quality.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// Bodies cut into random frames, read with random sizes (shrinking
    /// and growing between calls, and reads given up while they wait) in
    /// both modes: every byte comes out once, in order; no piece is empty
    /// or over its `max`; a gathered piece of a declared length is at
    /// least what it waited for (`max`, at most 64 KiB, or the rest)
    /// unless the body ended first; and no read waits while it holds what
    /// it would have to give.
    #[test]
    fn every_split_gives_the_body_back_in_pieces_as_asked() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..1_000 {
            let len = rng.below(150_000);
            let body: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let declared = (round % 3 != 0).then_some(len as u64);
            let mut frames = Vec::new();
            let mut at = 0;
            while at < len {
                let n = (rng.below(20_000) + 1).min(len - at);
                frames.push(Bytes::copy_from_slice(&body[at..at + n]));
                at += n;
                // Empty DATA frames happen too.
                if rng.below(10) == 0 {
                    frames.push(Bytes::new());
                }
            }
            let mut frames = frames.into_iter();
            let mut pieces = Pieces::new(declared);
            let mut out = Vec::new();
            let mut ended = false;
            // Bytes pushed so far: what `Pieces` holds is `pushed - out`.
            let mut pushed = 0;
            loop {
                let max = [1, 7, 100, 1000, 16_384, 60_000, 100_000][rng.below(7)];
                let gather = rng.below(2) == 0;
                let remaining = len - out.len();
                let piece = loop {
                    if let Some(piece) = pieces.take(max, gather) {
                        break Some(piece);
                    }
                    // Nothing yet: only a gathered read of a declared
                    // length may wait while it holds bytes, and only fewer
                    // than it waits for.
                    let held = pushed - out.len();
                    if gather && declared.is_some() {
                        let target = max.min(GATHER_MAX).min(remaining).max(1);
                        assert!(held < target, "round {round}: holds {held} of {target}");
                    } else {
                        assert_eq!(held, 0, "round {round}: holds bytes back");
                    }
                    // A read given up while it waited (a timeout around
                    // `consume`): the next asks another size.
                    if rng.below(4) == 0 {
                        break None;
                    }
                    match frames.next() {
                        Some(frame) => {
                            pushed += frame.len();
                            pieces.push(frame);
                        }
                        None => {
                            ended = true;
                            break pieces.finish(max);
                        }
                    }
                };
                let Some(piece) = piece else {
                    if ended {
                        break;
                    }
                    continue;
                };
                assert!(!piece.is_empty() && piece.len() <= max, "round {round}");
                if gather && declared.is_some() && !ended {
                    let target = max.min(GATHER_MAX).min(remaining);
                    assert!(
                        piece.len() >= target,
                        "round {round}: {} < {target}",
                        piece.len()
                    );
                }
                out.extend_from_slice(&piece);
            }
            assert!(out == body, "round {round}: the body differs");
        }
    }
}
