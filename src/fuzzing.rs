//! Entry points for fuzzing the code that reads a client's bytes: request
//! heads, request bodies, the WebSocket upgrade, WebSocket frames and
//! compressed messages. Not part of the API: compiled for this crate's
//! tests and with the `fuzzing` feature, for the targets in `fuzz/`.
//!
//! Each entry point checks more than "no panic": the same bytes must give
//! the same requests, bodies and messages however they are split into
//! reads, since a client (or the network) chooses the split.

use crate::config::Config;
use crate::h1::decode::{Decoded, Decoder};
use crate::h1::parse::{parse_head, BodyKind};
use crate::ws::deflate::DeflateConfig;
use crate::ws::message::{Incoming, MessageDecoder};
use crate::ws::{DeflateParams, Limits};
use bytes::BytesMut;
use http::uri::Authority;
use http::uri::Scheme;

/// What the HTTP/1.1 side made of a client's bytes.
#[derive(Debug, PartialEq)]
enum Http1Event {
    Head {
        method: http::Method,
        uri: http::Uri,
        version: http::Version,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
        body: BodyKind,
        keep_alive: bool,
        expect_continue: bool,
        upgrade: bool,
    },
    Body(Vec<u8>),
    /// The input ended with a head or body incomplete.
    NeedMore,
    /// A head or body was refused: the connection is closed.
    Refused,
}

/// Where one connection's parse stands between reads.
struct Http1 {
    config: Config,
    host: Option<Authority>,
    buf: BytesMut,
    decoder: Option<Decoder>,
    /// At most this many body bytes per decode, as a handler's pulls.
    pull: usize,
    events: Vec<Http1Event>,
    ended: bool,
}

impl Http1 {
    fn new(pull: usize) -> Http1 {
        // Small limits, so that the fuzzer reaches them.
        let config = Config {
            max_head_size: 2048,
            max_request_target: 512,
            max_headers: 16,
            ..Config::default()
        };
        Http1 {
            config,
            host: None,
            buf: BytesMut::new(),
            decoder: None,
            pull,
            events: Vec::new(),
            ended: false,
        }
    }

    /// Takes what the bytes read so far allow, as the engine does after
    /// each read.
    fn advance(&mut self) {
        while !self.ended {
            if let Some(decoder) = self.decoder.as_mut() {
                match decoder.decode(&mut self.buf, self.pull) {
                    Ok(Decoded::Data(data)) => {
                        assert!(!data.is_empty() && data.len() <= self.pull);
                        // Pieces of one body are one event: how they were
                        // cut depends on the reads.
                        match self.events.last_mut() {
                            Some(Http1Event::Body(body)) => body.extend_from_slice(&data),
                            _ => self.events.push(Http1Event::Body(data.to_vec())),
                        }
                    }
                    Ok(Decoded::Done) => self.decoder = None,
                    Ok(Decoded::NeedMore) => return,
                    Err(_) => self.refuse(),
                }
                continue;
            }
            match parse_head(
                &mut self.buf,
                &self.config,
                &Scheme::HTTP,
                &mut self.host,
                None,
                &crate::client_info::Identity::default(),
            ) {
                Ok(Some(head)) => {
                    let upgrade = crate::ws::handshake::accept(
                        &head.request,
                        Some(&DeflateConfig::default()),
                    )
                    .is_ok();
                    let (parts, _) = head.request.into_parts();
                    assert!(parts.headers.len() <= self.config.max_headers);
                    self.events.push(Http1Event::Head {
                        method: parts.method,
                        uri: parts.uri,
                        version: parts.version,
                        headers: parts
                            .headers
                            .iter()
                            .map(|(name, value)| (name.clone(), value.clone()))
                            .collect(),
                        body: head.body,
                        keep_alive: head.keep_alive,
                        expect_continue: head.expect_continue,
                        upgrade,
                    });
                    if head.body != BodyKind::Empty {
                        self.decoder = Some(Decoder::new(head.body));
                    }
                }
                Ok(None) => return,
                Err(_) => self.refuse(),
            }
        }
    }

    fn refuse(&mut self) {
        self.events.push(Http1Event::Refused);
        self.ended = true;
    }

    fn finish(mut self) -> Vec<Http1Event> {
        if !self.ended && (!self.buf.is_empty() || self.decoder.is_some()) {
            self.events.push(Http1Event::NeedMore);
        }
        self.events
    }
}

/// Feeds `data` to one connection's HTTP/1.1 parsing: request heads, their
/// bodies (`Content-Length` and chunked), and the WebSocket upgrade check
/// on each request. The first byte picks the size of the reads and of the
/// handler's pulls; the rest is what the client sent.
///
/// Panics if the bytes in one piece and the bytes in reads of that size
/// give different requests or bodies (see [`assert_same`]).
pub fn http1(data: &[u8]) {
    let Some((&knobs, input)) = data.split_first() else {
        return;
    };
    let read = usize::from(knobs & 0x1f) + 1;
    let pull = [1, 7, 64, 4096][usize::from(knobs >> 6)];
    let parse = |reads: &mut dyn Iterator<Item = &[u8]>| {
        let mut connection = Http1::new(pull);
        for bytes in reads {
            connection.buf.extend_from_slice(bytes);
            connection.advance();
        }
        connection.finish()
    };
    let whole = parse(&mut std::iter::once(input));
    let pieces = parse(&mut input.chunks(read));
    assert_same(&whole, &pieces, |e| matches!(e, Http1Event::Refused));
}

/// Feeds `data` to a WebSocket connection's message decoder, as client
/// frames. The first byte picks `permessage-deflate` (and its context
/// takeover and window) and the size of the reads; the rest is what the
/// client sent.
///
/// Panics if reads of that size give different messages than one read.
pub fn websocket(data: &[u8]) {
    let Some((&knobs, input)) = data.split_first() else {
        return;
    };
    let deflate = (knobs & 1 == 1).then_some(DeflateParams {
        server_no_context_takeover: false,
        client_no_context_takeover: knobs & 2 == 2,
        server_max_window_bits: 15,
        client_max_window_bits: if knobs & 4 == 4 { 9 } else { 15 },
        level: 1,
    });
    let read = usize::from(knobs >> 3) + 1;
    // Small limits, so that the fuzzer reaches them (also by inflating).
    let limits = Limits {
        max_message_size: 4096,
        max_frame_size: 1024,
    };
    let decode = |reads: &mut dyn Iterator<Item = &[u8]>| {
        let mut decoder = MessageDecoder::new(limits, deflate.as_ref());
        let mut buf = BytesMut::new();
        let mut messages = Vec::new();
        for bytes in reads {
            buf.extend_from_slice(bytes);
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(message)) => messages.push(Ok(message)),
                    Ok(None) => break,
                    Err(err) => {
                        messages.push(Err(err));
                        return messages;
                    }
                }
            }
        }
        messages
    };
    let whole = decode(&mut std::iter::once(input));
    let pieces = decode(&mut input.chunks(read));
    for message in whole.iter().flatten() {
        let len = match message {
            Incoming::Text(text) => text.len(),
            Incoming::Binary(data) => data.len(),
            _ => 0,
        };
        assert!(len <= limits.max_message_size, "a message over the limit");
    }
    assert_same(&whole, &pieces, Result::is_err);
}

/// The events of the input read whole and in pieces agree: the same ones
/// in the same order, except that both may end in a refusal of different
/// kinds, at the same point (a partial head or frame can be seen to be
/// broken before it is complete, with another error).
fn assert_same<E: std::fmt::Debug + PartialEq>(
    whole: &[E],
    pieces: &[E],
    refused: impl Fn(&E) -> bool,
) {
    let agreed = whole.iter().zip(pieces).take_while(|(a, b)| a == b).count();
    if agreed == whole.len() && agreed == pieces.len() {
        return;
    }
    let (rest_whole, rest_pieces) = (&whole[agreed..], &pieces[agreed..]);
    let refused_differently = rest_whole.len() == 1
        && rest_pieces.len() == 1
        && refused(&rest_whole[0])
        && refused(&rest_pieces[0]);
    assert!(
        refused_differently,
        "read whole: {whole:?}\nread in pieces: {pieces:?}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small, fixed pseudo-random sequence (xorshift), so that a failure
    /// here is the same on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Valid inputs with random damage: bytes flipped, inserted, removed,
    /// runs duplicated, pieces of other seeds spliced in.
    fn mutate(rng: &mut Rng, seeds: &[&[u8]]) -> Vec<u8> {
        let mut data = seeds[rng.below(seeds.len())].to_vec();
        for _ in 0..rng.below(6) {
            let at = rng.below(data.len() + 1);
            match rng.below(5) {
                0 if at < data.len() => data[at] = rng.next() as u8,
                1 => data.insert(at, b"\r\n :;,\t0xfF\x80-\"="[rng.below(15)]),
                2 if at < data.len() => {
                    data.remove(at);
                }
                3 => {
                    let end = (at + rng.below(16)).min(data.len());
                    let run = data[at..end].to_vec();
                    data.splice(at..at, run);
                }
                _ => {
                    let other = seeds[rng.below(seeds.len())];
                    let from = rng.below(other.len());
                    let end = (from + rng.below(32)).min(other.len());
                    data.splice(at..at, other[from..end].iter().copied());
                }
            }
        }
        data
    }

    const HTTP1_SEEDS: &[&[u8]] = &[
        b"\x00GET /hello HTTP/1.1\r\nHost: a\r\n\r\nGET /b?x=1 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"\x05POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.0\r\n\r\n",
        b"\x42POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\n",
        b"\x83GET /ws HTTP/1.1\r\nHost: a:1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, permessage-deflate; server_no_context_takeover\r\n\r\n",
        b"\x11OPTIONS * HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nokCONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        b"\x1fGET http://b:8/p HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\nX: \xff\r\n\r\n",
    ];

    /// Masked client frames (key 1, 2, 3, 4): text, binary, fragments with
    /// a ping between, a close; and compressed ones ("Hello" from RFC
    /// 7692 §7.2.3.1, with and without the shared window).
    const WS_SEEDS: &[&[u8]] = &[
        b"\x00\x81\x85\x01\x02\x03\x04\x69\x67\x6f\x68\x6e\x82\x82\x01\x02\x03\x04\x01\x03",
        b"\x08\x01\x83\x01\x02\x03\x04\x60\x60\x60\x89\x81\x01\x02\x03\x04\x71\x80\x83\x01\x02\x03\x04\x65\x67\x65\x88\x82\x01\x02\x03\x04\x02\xea",
        b"\x01\xc1\x87\x01\x02\x03\x04\xf3\x4a\xce\xcd\xc8\x05\x03\xc1\x85\x01\x02\x03\x04\xf3\x02\x12\x04\x01",
        b"\x03\xc1\x87\x01\x02\x03\x04\xf3\x4a\xce\xcd\xc8\x05\x03\xc1\x87\x01\x02\x03\x04\xf3\x4a\xce\xcd\xc8\x05\x03\x88\x80\x01\x02\x03\x04",
    ];

    /// `target` on each seed, then on 20,000 of their mutations.
    fn run_mutations(seeds: &[&[u8]], start: u64, target: fn(&[u8])) {
        let mut rng = Rng(start);
        for seed in seeds {
            target(seed);
        }
        for _ in 0..20_000 {
            target(&mutate(&mut rng, seeds));
        }
    }

    #[test]
    fn http1_inputs_read_whole_or_in_pieces_agree() {
        run_mutations(HTTP1_SEEDS, 0x9E37_79B9_7F4A_7C15, http1);
    }

    #[test]
    fn websocket_inputs_read_whole_or_in_pieces_agree() {
        run_mutations(WS_SEEDS, 0xC2B2_AE3D_27D4_EB4F, websocket);
    }

    /// The seeds themselves parse into what they say: a check that the
    /// harness reaches past the first refusal.
    #[test]
    fn seeds_are_valid() {
        let mut whole = Http1::new(4096);
        whole.buf.extend_from_slice(&HTTP1_SEEDS[2][1..]);
        whole.advance();
        let events = whole.finish();
        assert!(matches!(
            events[0],
            Http1Event::Head {
                body: BodyKind::Chunked,
                ..
            }
        ));
        assert_eq!(events[1], Http1Event::Body(b"hello".to_vec()));
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn websocket_seeds_are_valid() {
        let messages = |seed: &[u8]| {
            let deflate = (seed[0] & 1 == 1).then_some(DeflateParams {
                server_no_context_takeover: false,
                client_no_context_takeover: seed[0] & 2 == 2,
                server_max_window_bits: 15,
                client_max_window_bits: 15,
                level: 1,
            });
            let mut decoder = MessageDecoder::new(Limits::default(), deflate.as_ref());
            let mut buf = BytesMut::from(&seed[1..]);
            std::iter::from_fn(|| decoder.decode(&mut buf).unwrap()).collect::<Vec<_>>()
        };
        let hello = Incoming::Text("Hello".into());
        assert_eq!(messages(WS_SEEDS[2]), [hello.clone(), hello.clone()]);
        assert_eq!(messages(WS_SEEDS[3])[..2], [hello.clone(), hello]);
        assert_eq!(messages(WS_SEEDS[1])[1], Incoming::Text("abcdef".into()));
    }
}
