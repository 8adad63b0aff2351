//! Messages on top of frames (RFC 6455 §5.4-§5.6, RFC 7692 §6): the
//! decoder reassembles fragmented client messages, with control frames
//! interleaved, validates and inflates them; the encoder writes whole
//! server messages and control frames. No I/O.

use super::close::{encode_close_payload, parse_close};
use super::deflate::{Deflater, Inflater};
use super::frame::{
    encode_frame, header_bytes, FrameDecoder, OpCode, MAX_CONTROL_PAYLOAD, MAX_SERVER_HEADER_LEN,
};
use super::utf8::Utf8Validator;
use super::{CloseCode, CloseFrame, DeflateParams, Limits, ProtocolError};
use bytes::{Bytes, BytesMut};

/// What a client sent: a whole message or a control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// A text message, valid UTF-8.
    Text(String),
    /// A binary message.
    Binary(Bytes),
    /// A ping: answer with a pong carrying the same payload (RFC 6455 §5.5.2).
    Ping(Bytes),
    /// A pong, solicited or not (RFC 6455 §5.5.3).
    Pong(Bytes),
    /// The client starts or answers the closing handshake (RFC 6455
    /// §5.5.1); `None` when its close frame had no status code. Nothing
    /// more is decoded after it.
    Close(Option<CloseFrame>),
}

/// A data message being reassembled.
#[derive(Debug)]
struct Partial {
    text: bool,
    /// RSV1 was set on its first frame (RFC 7692 §6.1).
    compressed: bool,
    /// The payload so far, inflated if compressed.
    data: BytesMut,
}

/// Where the decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Decoding.
    Open,
    /// A close frame was received: nothing after it is read (RFC 6455 §5.5.1).
    Closed,
    /// The connection failed: the same error again.
    Failed(ProtocolError),
}

/// Decodes client messages from the bytes read from the socket.
#[derive(Debug)]
pub(crate) struct MessageDecoder {
    frames: FrameDecoder,
    limits: Limits,
    /// Present when permessage-deflate was negotiated.
    inflater: Option<Inflater>,
    message: Option<Partial>,
    /// Validates the text message in progress.
    utf8: Utf8Validator,
    /// Payload bytes of the frame being received that `utf8` has seen.
    checked: usize,
    state: State,
}

impl MessageDecoder {
    /// A decoder for one connection; `deflate` is what the handshake agreed.
    pub(crate) fn new(limits: Limits, deflate: Option<&DeflateParams>) -> MessageDecoder {
        MessageDecoder {
            frames: FrameDecoder::new(deflate.is_some()),
            limits,
            inflater: deflate.map(Inflater::new),
            message: None,
            utf8: Utf8Validator::new(),
            checked: 0,
            state: State::Open,
        }
    }

    /// Takes the next message or control frame from the front of `buf`;
    /// `None` when more bytes are needed, or after a close frame.
    ///
    /// Call it again until it returns `None` before reading more: several
    /// frames may be buffered. After an error, fail the connection with
    /// [`ProtocolError::close_code`]; later calls return the same error.
    /// Even when it returns `None`, a text frame still arriving has been
    /// validated so far, and a frame that breaks the fragmentation rules
    /// has been rejected from its header.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, ProtocolError> {
        match self.state {
            State::Open => {}
            State::Closed => return Ok(None),
            State::Failed(err) => return Err(err),
        }
        let result = self.decode_open(buf);
        match &result {
            Err(err) => self.state = State::Failed(*err),
            Ok(Some(Incoming::Close(_))) => self.state = State::Closed,
            Ok(_) => {}
        }
        result
    }

    fn decode_open(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, ProtocolError> {
        loop {
            let Some(frame) = self.frames.decode(buf, self.frame_limit())? else {
                self.check_partial_frame(buf)?;
                return Ok(None);
            };
            let checked = std::mem::take(&mut self.checked);
            match frame.opcode {
                // RFC 6455 §5.5: control frames may come between fragments.
                OpCode::Ping => return Ok(Some(Incoming::Ping(frame.payload.freeze()))),
                OpCode::Pong => return Ok(Some(Incoming::Pong(frame.payload.freeze()))),
                OpCode::Close => return Ok(Some(Incoming::Close(parse_close(&frame.payload)?))),
                OpCode::Text | OpCode::Binary => {
                    // RFC 6455 §5.4: fragments of one message are not interleaved with another.
                    if self.message.is_some() {
                        return Err(ProtocolError::ExpectedContinuation);
                    }
                    let text = frame.opcode == OpCode::Text;
                    if frame.fin && !frame.rsv1 {
                        // A whole uncompressed message in one frame: the common case.
                        self.utf8.reset();
                        return Ok(Some(if text {
                            Incoming::Text(into_string(frame.payload)?)
                        } else {
                            Incoming::Binary(frame.payload.freeze())
                        }));
                    }
                    self.message = Some(Partial {
                        text,
                        compressed: frame.rsv1,
                        data: BytesMut::new(),
                    });
                }
                OpCode::Continuation => {
                    // RFC 6455 §5.4: a continuation frame continues a started message.
                    if self.message.is_none() {
                        return Err(ProtocolError::UnexpectedContinuation);
                    }
                }
            }
            if let Some(message) = self.append(frame.payload, checked, frame.fin)? {
                return Ok(Some(message));
            }
        }
    }

    /// The largest data frame payload accepted next, known before its
    /// header is read: an uncompressed message may only grow to the message
    /// limit; compressed frames are limited on their inflated size as they
    /// inflate.
    fn frame_limit(&self) -> usize {
        let max_message = self.limits.max_message_size;
        let max_frame = self.limits.max_frame_size.min(max_message);
        match &self.message {
            Some(m) if !m.compressed => max_frame.min(max_message.saturating_sub(m.data.len())),
            _ => max_frame,
        }
    }

    /// Checks a frame whose payload is still arriving: its opcode against
    /// the message in progress, and, for uncompressed text, the UTF-8
    /// received so far, so the connection fails without waiting for the
    /// rest.
    fn check_partial_frame(&mut self, buf: &BytesMut) -> Result<(), ProtocolError> {
        let Some((header, so_far)) = self.frames.partial(buf) else {
            return Ok(());
        };
        let text = match (header.opcode, &self.message) {
            // RFC 6455 §5.4: no new message inside a fragmented one.
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                return Err(ProtocolError::ExpectedContinuation)
            }
            // RFC 6455 §5.4: no continuation without a message.
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text, None) => !header.rsv1,
            (OpCode::Continuation, Some(m)) => m.text && !m.compressed,
            _ => false,
        };
        if text && so_far.len() > self.checked {
            // RFC 6455 §8.1: fail on invalid UTF-8 as soon as it is certain.
            self.utf8
                .feed(&so_far[self.checked..], false)
                .map_err(|_| ProtocolError::InvalidUtf8)?;
            self.checked = so_far.len();
        }
        Ok(())
    }

    /// Adds a frame's payload to the message in progress; the message when
    /// `fin` completes it.
    fn append(
        &mut self,
        payload: BytesMut,
        checked: usize,
        fin: bool,
    ) -> Result<Option<Incoming>, ProtocolError> {
        let max = self.limits.max_message_size;
        let Some(message) = self.message.as_mut() else {
            return Err(ProtocolError::UnexpectedContinuation);
        };
        if message.compressed {
            // The frame decoder only lets RSV1 through when deflate was negotiated.
            let inflater = self.inflater.as_mut().ok_or(ProtocolError::ReservedBits)?;
            let before = message.data.len();
            // RFC 7692 §6.2: inflate the concatenated payloads of all frames.
            inflater.inflate(&payload, &mut message.data, max)?;
            if fin {
                inflater.finish(&mut message.data, max)?;
            }
            if message.text {
                self.utf8
                    .feed(&message.data[before..], fin)
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
        } else {
            if message.text {
                self.utf8
                    .feed(payload.get(checked..).unwrap_or_default(), fin)
                    .map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            // The frame limit kept this under the message limit already.
            match message.data.len().checked_add(payload.len()) {
                Some(len) if len <= max => {}
                _ => return Err(ProtocolError::MessageTooBig),
            }
            if message.data.is_empty() {
                message.data = payload;
            } else {
                message.data.extend_from_slice(&payload);
            }
        }
        if !fin {
            return Ok(None);
        }
        self.utf8.reset();
        let Some(message) = self.message.take() else {
            return Ok(None);
        };
        Ok(Some(if message.text {
            Incoming::Text(into_string(message.data)?)
        } else {
            Incoming::Binary(message.data.freeze())
        }))
    }
}

/// The payload of a complete text message as a `String`.
fn into_string(data: BytesMut) -> Result<String, ProtocolError> {
    // RFC 6455 §5.6: text data is UTF-8; RFC 6455 §8.1: invalid fails the connection.
    String::from_utf8(Vec::from(data)).map_err(|_| ProtocolError::InvalidUtf8)
}

/// Encodes server messages and control frames.
#[derive(Debug)]
pub(crate) struct MessageEncoder {
    /// Present when server messages are compressed.
    deflater: Option<Deflater>,
}

impl MessageEncoder {
    /// An encoder for one connection; `deflate` is what the handshake agreed.
    pub(crate) fn new(deflate: Option<&DeflateParams>) -> MessageEncoder {
        MessageEncoder {
            deflater: deflate.and_then(Deflater::new),
        }
    }

    /// Appends a text message as one frame, compressed if negotiated.
    pub(crate) fn text(&mut self, text: &str, dst: &mut BytesMut) {
        self.data(OpCode::Text, text.as_bytes(), dst);
    }

    /// Appends a binary message as one frame, compressed if negotiated.
    pub(crate) fn binary(&mut self, data: &[u8], dst: &mut BytesMut) {
        self.data(OpCode::Binary, data, dst);
    }

    fn data(&mut self, opcode: OpCode, payload: &[u8], dst: &mut BytesMut) {
        if let Some(deflater) = &mut self.deflater {
            // Compress behind room for the longest header, then move the
            // payload up behind the real one once its length is known.
            let start = dst.len();
            let body = start + MAX_SERVER_HEADER_LEN;
            dst.resize(body, 0);
            if deflater.compress(payload, dst) {
                let len = dst.len() - body;
                // RFC 7692 §6.1: RSV1 on the first (here: only) frame of a compressed message.
                let (header, used) = header_bytes(true, true, opcode, len);
                dst.copy_within(body..body + len, start + used);
                dst[start..start + used].copy_from_slice(&header[..used]);
                dst.truncate(start + used + len);
                return;
            }
            // zlib failed: send this message uncompressed (RFC 7692 §6 allows it).
            dst.truncate(start);
        }
        encode_frame(dst, true, false, opcode, payload);
    }

    /// Appends a ping. Fails if `payload` is over 125 bytes (RFC 6455 §5.5).
    pub(crate) fn ping(&mut self, payload: &[u8], dst: &mut BytesMut) -> Result<(), ProtocolError> {
        control(OpCode::Ping, payload, dst)
    }

    /// Appends a pong; answering a ping, echo its payload (RFC 6455 §5.5.3).
    /// Fails if `payload` is over 125 bytes (RFC 6455 §5.5).
    pub(crate) fn pong(&mut self, payload: &[u8], dst: &mut BytesMut) -> Result<(), ProtocolError> {
        control(OpCode::Pong, payload, dst)
    }

    /// Appends a close frame with a code and a reason (cut at a character
    /// boundary to fit), or with no body.
    pub(crate) fn close(&mut self, close: Option<(CloseCode, &str)>, dst: &mut BytesMut) {
        let mut payload = BytesMut::new();
        encode_close_payload(&mut payload, close);
        // RFC 7692 §6: control frames are never compressed.
        encode_frame(dst, true, false, OpCode::Close, &payload);
    }
}

/// Appends a control frame, never compressed (RFC 7692 §6).
fn control(opcode: OpCode, payload: &[u8], dst: &mut BytesMut) -> Result<(), ProtocolError> {
    // RFC 6455 §5.5: control frame payloads are 125 bytes or less.
    if payload.len() > MAX_CONTROL_PAYLOAD {
        return Err(ProtocolError::ControlFrameTooLong);
    }
    encode_frame(dst, true, false, opcode, payload);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::deflate::DEFAULT_LEVEL;
    use super::super::frame::tests::client_frame;
    use super::*;

    const FIN: u8 = 0x80;
    const RSV1: u8 = 0x40;
    const TEXT: u8 = 0x1;
    const BINARY: u8 = 0x2;
    const CONT: u8 = 0x0;
    const CLOSE: u8 = 0x8;
    const PING: u8 = 0x9;
    const PONG: u8 = 0xa;

    fn plain() -> MessageDecoder {
        MessageDecoder::new(Limits::default(), None)
    }

    fn deflate_params(server_nct: bool, server_bits: u8) -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: server_nct,
            client_no_context_takeover: false,
            server_max_window_bits: server_bits,
            client_max_window_bits: 15,
            level: DEFAULT_LEVEL,
        }
    }

    fn compressed() -> MessageDecoder {
        MessageDecoder::new(Limits::default(), Some(&deflate_params(false, 15)))
    }

    /// Decodes every frame in `frames`, fed one frame at a time.
    fn run(
        decoder: &mut MessageDecoder,
        frames: &[Vec<u8>],
    ) -> Vec<Result<Option<Incoming>, ProtocolError>> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for frame in frames {
            buf.extend_from_slice(frame);
            loop {
                let result = decoder.decode(&mut buf);
                let stop = !matches!(result, Ok(Some(_)));
                out.push(result);
                if stop {
                    break;
                }
            }
        }
        out
    }

    /// The messages decoded from `frames`, or the first error.
    fn messages(
        decoder: &mut MessageDecoder,
        frames: &[Vec<u8>],
    ) -> Result<Vec<Incoming>, ProtocolError> {
        let mut all = Vec::new();
        for result in run(decoder, frames) {
            if let Some(message) = result? {
                all.push(message);
            }
        }
        Ok(all)
    }

    fn text(s: &str) -> Incoming {
        Incoming::Text(s.to_owned())
    }

    #[test]
    fn message_rfc_6455_single_frame_text() {
        let bytes = vec![
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(messages(&mut plain(), &[bytes]), Ok(vec![text("Hello")]));
    }

    #[test]
    fn message_rfc_6455_fragmented_text() {
        let frames = [client_frame(TEXT, b"Hel"), client_frame(FIN | CONT, b"lo")];
        assert_eq!(messages(&mut plain(), &frames), Ok(vec![text("Hello")]));
    }

    #[test]
    fn message_fragmented_with_control_frames_interleaved() {
        let frames = [
            client_frame(TEXT, b"Hel"),
            client_frame(FIN | PING, b"are you there"),
            client_frame(CONT, b"l"),
            client_frame(FIN | PONG, b""),
            client_frame(FIN | CONT, b"o"),
        ];
        assert_eq!(
            messages(&mut plain(), &frames),
            Ok(vec![
                Incoming::Ping(Bytes::from_static(b"are you there")),
                Incoming::Pong(Bytes::new()),
                text("Hello"),
            ])
        );
    }

    #[test]
    fn message_binary_fragments_are_concatenated() {
        let frames = [
            client_frame(BINARY, &[1, 2]),
            client_frame(CONT, &[]),
            client_frame(CONT, &[3]),
            client_frame(FIN | CONT, &[4, 5]),
        ];
        assert_eq!(
            messages(&mut plain(), &frames),
            Ok(vec![Incoming::Binary(Bytes::from_static(&[1, 2, 3, 4, 5]))])
        );
    }

    #[test]
    fn message_several_in_one_read() {
        let mut bytes = client_frame(FIN | TEXT, b"one");
        bytes.extend(client_frame(FIN | PING, b"p"));
        bytes.extend(client_frame(FIN | BINARY, b"two"));
        assert_eq!(
            messages(&mut plain(), &[bytes]),
            Ok(vec![
                text("one"),
                Incoming::Ping(Bytes::from_static(b"p")),
                Incoming::Binary(Bytes::from_static(b"two")),
            ])
        );
    }

    #[test]
    fn message_byte_by_byte_matches_at_once() {
        let mut bytes = client_frame(TEXT, "κόσ".as_bytes());
        bytes.extend(client_frame(FIN | PING, b"x"));
        bytes.extend(client_frame(FIN | CONT, "με".as_bytes()));
        let pieces: Vec<Vec<u8>> = bytes.iter().map(|b| vec![*b]).collect();
        assert_eq!(
            messages(&mut plain(), &pieces),
            Ok(vec![
                Incoming::Ping(Bytes::from_static(b"x")),
                text("κόσμε")
            ])
        );
    }

    #[test]
    fn message_continuation_without_a_message_fails_with_1002() {
        let err = messages(&mut plain(), &[client_frame(FIN | CONT, b"x")]).unwrap_err();
        assert_eq!(err, ProtocolError::UnexpectedContinuation);
        assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
    }

    #[test]
    fn message_continuation_after_a_complete_message_fails() {
        let frames = [
            client_frame(FIN | TEXT, b"done"),
            client_frame(FIN | CONT, b"x"),
        ];
        assert_eq!(
            messages(&mut plain(), &frames),
            Err(ProtocolError::UnexpectedContinuation)
        );
    }

    #[test]
    fn message_new_data_frame_inside_a_fragmented_message_fails_with_1002() {
        for second in [FIN | TEXT, FIN | BINARY, TEXT] {
            let frames = [client_frame(TEXT, b"a"), client_frame(second, b"b")];
            assert_eq!(
                messages(&mut plain(), &frames),
                Err(ProtocolError::ExpectedContinuation)
            );
        }
    }

    #[test]
    fn message_sequence_errors_are_caught_from_the_header() {
        // Only the header and a few payload bytes of the offending frame.
        let mut decoder = plain();
        let frames = [
            client_frame(BINARY, b"a"),
            client_frame(FIN | BINARY, &[0; 1000])[..20].to_vec(),
        ];
        assert_eq!(
            messages(&mut decoder, &frames),
            Err(ProtocolError::ExpectedContinuation)
        );
        let mut decoder = plain();
        let frames = [client_frame(FIN | CONT, &[0; 1000])[..20].to_vec()];
        assert_eq!(
            messages(&mut decoder, &frames),
            Err(ProtocolError::UnexpectedContinuation)
        );
    }

    #[test]
    fn message_invalid_utf8_fails_on_the_fragment_where_it_becomes_certain() {
        // "κόσμε" then an UTF-16 surrogate (ed a0 80) split over fragments
        // 2 and 3; fragment 2 ends in ed, which could still be valid.
        let frames = [
            client_frame(TEXT, "κόσμε".as_bytes()),
            client_frame(CONT, &[b'a', 0xed]),
            client_frame(CONT, &[0xa0, 0x80]),
            client_frame(FIN | CONT, b"end"),
        ];
        let results = run(&mut plain(), &frames);
        assert_eq!(results[0], Ok(None));
        assert_eq!(results[1], Ok(None));
        assert_eq!(results[2], Err(ProtocolError::InvalidUtf8));
        assert_eq!(
            ProtocolError::InvalidUtf8.close_code(),
            CloseCode::INVALID_PAYLOAD
        );
    }

    #[test]
    fn message_code_point_split_across_fragments_is_valid() {
        let euro = "€".as_bytes(); // e2 82 ac
        let frames = [
            client_frame(TEXT, &euro[..1]),
            client_frame(CONT, &euro[1..2]),
            client_frame(FIN | CONT, &euro[2..]),
        ];
        assert_eq!(messages(&mut plain(), &frames), Ok(vec![text("€")]));
    }

    #[test]
    fn message_incomplete_code_point_at_the_end_fails_with_1007() {
        let frames = [
            client_frame(TEXT, b"ok"),
            client_frame(FIN | CONT, &[0xe2, 0x82]),
        ];
        assert_eq!(
            messages(&mut plain(), &frames),
            Err(ProtocolError::InvalidUtf8)
        );
        let single = [client_frame(FIN | TEXT, &[b'a', 0xe2])];
        assert_eq!(
            messages(&mut plain(), &single),
            Err(ProtocolError::InvalidUtf8)
        );
    }

    #[test]
    fn message_invalid_utf8_fails_before_the_frame_is_complete() {
        let mut bytes = client_frame(
            FIN | TEXT,
            &[b'a', 0xff, b'b', b'c', b'd', b'e', b'f', b'g'],
        );
        bytes.truncate(bytes.len() - 4); // header, key and "a\xff" + 2 bytes
        let mut decoder = plain();
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(decoder.decode(&mut buf), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn message_invalid_utf8_in_a_continuation_fails_before_it_is_complete() {
        let mut decoder = plain();
        let mut buf = BytesMut::from(&client_frame(TEXT, b"fine")[..]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        let cont = client_frame(FIN | CONT, &[0xc0, 0xaf, 0, 0, 0, 0, 0, 0, 0, 0]);
        buf.extend_from_slice(&cont[..8]);
        assert_eq!(decoder.decode(&mut buf), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn message_valid_text_arriving_in_pieces_is_validated_once_complete() {
        let s = "ünïcödé text ✓ ".repeat(20);
        let bytes = client_frame(FIN | TEXT, s.as_bytes());
        let pieces: Vec<Vec<u8>> = bytes.chunks(7).map(<[u8]>::to_vec).collect();
        assert_eq!(messages(&mut plain(), &pieces), Ok(vec![text(&s)]));
    }

    #[test]
    fn message_limit_rejects_a_single_frame_from_its_header() {
        let limits = Limits {
            max_message_size: 100,
            max_frame_size: 1000,
        };
        let mut decoder = MessageDecoder::new(limits, None);
        let header_only = client_frame(FIN | BINARY, &[0; 101])[..8].to_vec();
        let err = messages(&mut decoder, &[header_only]).unwrap_err();
        assert_eq!(err, ProtocolError::MessageTooBig);
        assert_eq!(err.close_code(), CloseCode::MESSAGE_TOO_BIG);
        let mut decoder = MessageDecoder::new(limits, None);
        assert!(messages(&mut decoder, &[client_frame(FIN | BINARY, &[0; 100])]).is_ok());
    }

    #[test]
    fn message_limit_counts_all_fragments() {
        let limits = Limits {
            max_message_size: 100,
            max_frame_size: 100,
        };
        let mut decoder = MessageDecoder::new(limits, None);
        let frames = [
            client_frame(BINARY, &[0; 60]),
            client_frame(FIN | PING, b"control frames do not count"),
            // Rejected from its header: 60 + 41 > 100.
            client_frame(FIN | CONT, &[0; 41])[..6].to_vec(),
        ];
        let results = run(&mut decoder, &frames);
        assert_eq!(results.last(), Some(&Err(ProtocolError::MessageTooBig)));
        let mut decoder = MessageDecoder::new(limits, None);
        let frames = [
            client_frame(BINARY, &[0; 60]),
            client_frame(FIN | CONT, &[0; 40]),
        ];
        assert_eq!(messages(&mut decoder, &frames).unwrap().len(), 1);
    }

    #[test]
    fn message_frame_limit_applies_below_the_message_limit() {
        let limits = Limits {
            max_message_size: 1000,
            max_frame_size: 10,
        };
        let mut decoder = MessageDecoder::new(limits, None);
        let frames = [
            client_frame(BINARY, &[0; 10]),
            client_frame(FIN | CONT, &[0; 11]),
        ];
        assert_eq!(
            messages(&mut decoder, &frames),
            Err(ProtocolError::MessageTooBig)
        );
    }

    #[test]
    fn message_close_without_and_with_a_status() {
        assert_eq!(
            messages(&mut plain(), &[client_frame(FIN | CLOSE, b"")]),
            Ok(vec![Incoming::Close(None)])
        );
        assert_eq!(
            messages(&mut plain(), &[client_frame(FIN | CLOSE, b"\x03\xe8bye")]),
            Ok(vec![Incoming::Close(Some(CloseFrame {
                code: CloseCode::NORMAL,
                reason: "bye".to_owned()
            }))])
        );
    }

    #[test]
    fn message_close_between_fragments_is_delivered_and_ends_decoding() {
        let mut decoder = plain();
        let frames = [
            client_frame(TEXT, b"half"),
            client_frame(FIN | CLOSE, b"\x03\xe9"),
            client_frame(FIN | CONT, b"never seen"),
        ];
        let results = run(&mut decoder, &frames);
        assert_eq!(
            results,
            vec![
                Ok(None),
                Ok(Some(Incoming::Close(Some(CloseFrame {
                    code: CloseCode::GOING_AWAY,
                    reason: String::new()
                })))),
                Ok(None),
                Ok(None),
            ]
        );
    }

    #[test]
    fn message_invalid_close_frames() {
        let cases: [(&[u8], ProtocolError); 4] = [
            (b"\x03", ProtocolError::InvalidClosePayload),
            (b"\x03\xed", ProtocolError::InvalidCloseCode), // 1005
            (b"\x03\xee", ProtocolError::InvalidCloseCode), // 1006
            (b"\x03\xe8\xff", ProtocolError::InvalidUtf8),
        ];
        for (payload, expected) in cases {
            assert_eq!(
                messages(&mut plain(), &[client_frame(FIN | CLOSE, payload)]),
                Err(expected)
            );
        }
    }

    #[test]
    fn message_decoder_repeats_its_error() {
        let mut decoder = plain();
        let mut buf = BytesMut::from(&client_frame(FIN | CONT, b"x")[..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Err(ProtocolError::UnexpectedContinuation)
        );
        buf.extend_from_slice(&client_frame(FIN | TEXT, b"ok"));
        assert_eq!(
            decoder.decode(&mut buf),
            Err(ProtocolError::UnexpectedContinuation)
        );
    }

    #[test]
    fn message_rsv1_without_deflate_fails_with_1002() {
        let err = messages(&mut plain(), &[client_frame(FIN | RSV1 | TEXT, b"x")]).unwrap_err();
        assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);
    }

    // permessage-deflate.

    const HELLO: [u8; 7] = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];

    #[test]
    fn compressed_rfc_7692_single_frame() {
        let frames = [client_frame(FIN | RSV1 | TEXT, &HELLO)];
        assert_eq!(
            messages(&mut compressed(), &frames),
            Ok(vec![text("Hello")])
        );
    }

    #[test]
    fn compressed_rfc_7692_fragmented() {
        let frames = [
            client_frame(RSV1 | TEXT, &HELLO[..3]),
            client_frame(FIN | PING, b""),
            client_frame(FIN | CONT, &HELLO[3..]),
        ];
        assert_eq!(
            messages(&mut compressed(), &frames),
            Ok(vec![Incoming::Ping(Bytes::new()), text("Hello")])
        );
    }

    #[test]
    fn compressed_rfc_7692_shared_window_and_uncompressed_messages() {
        let frames = [
            client_frame(FIN | RSV1 | TEXT, &HELLO),
            client_frame(FIN | TEXT, b"not compressed"),
            client_frame(FIN | RSV1 | TEXT, &[0xf2, 0x00, 0x11, 0x00, 0x00]),
            client_frame(
                FIN | RSV1 | BINARY,
                &[
                    0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
                ],
            ),
        ];
        assert_eq!(
            messages(&mut compressed(), &frames),
            Ok(vec![
                text("Hello"),
                text("not compressed"),
                text("Hello"),
                Incoming::Binary(Bytes::from_static(b"Hello")),
            ])
        );
    }

    #[test]
    fn compressed_rsv1_on_a_continuation_fails_with_1002() {
        let frames = [
            client_frame(RSV1 | TEXT, &HELLO[..3]),
            client_frame(FIN | RSV1 | CONT, &HELLO[3..]),
        ];
        assert_eq!(
            messages(&mut compressed(), &frames),
            Err(ProtocolError::CompressedNonFirstFrame)
        );
    }

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut deflater = Deflater::new(&deflate_params(false, 15)).unwrap();
        let mut out = BytesMut::new();
        assert!(deflater.compress(data, &mut out));
        out.to_vec()
    }

    #[test]
    fn compressed_zip_bomb_stops_at_the_message_limit() {
        let bomb = deflate(&vec![b'a'; 4 << 20]);
        let limits = Limits {
            max_message_size: 1 << 16,
            max_frame_size: 1 << 16,
        };
        let mut decoder = MessageDecoder::new(limits, Some(&deflate_params(false, 15)));
        let err = messages(&mut decoder, &[client_frame(FIN | RSV1 | BINARY, &bomb)]).unwrap_err();
        assert_eq!(err, ProtocolError::MessageTooBig);
        assert_eq!(err.close_code(), CloseCode::MESSAGE_TOO_BIG);
    }

    #[test]
    fn compressed_zip_bomb_spread_over_fragments_stops_at_the_limit() {
        let bomb = deflate(&vec![0; 1 << 20]);
        let limits = Limits {
            max_message_size: 100_000,
            max_frame_size: 100_000,
        };
        let mut decoder = MessageDecoder::new(limits, Some(&deflate_params(false, 15)));
        let mut frames = vec![client_frame(RSV1 | BINARY, &bomb[..bomb.len() / 2])];
        frames.push(client_frame(FIN | CONT, &bomb[bomb.len() / 2..]));
        assert_eq!(
            messages(&mut decoder, &frames),
            Err(ProtocolError::MessageTooBig)
        );
    }

    #[test]
    fn compressed_invalid_utf8_fails_with_1007() {
        let frames = [client_frame(FIN | RSV1 | TEXT, &deflate(b"bad \xff text"))];
        assert_eq!(
            messages(&mut compressed(), &frames),
            Err(ProtocolError::InvalidUtf8)
        );
    }

    #[test]
    fn compressed_invalid_utf8_fails_on_the_fragment_that_inflates_it() {
        // Stored blocks: each fragment inflates to exactly its bytes.
        let frames = [
            client_frame(RSV1 | TEXT, &[0x00, 0x02, 0x00, 0xfd, 0xff, b'o', b'k']),
            client_frame(CONT, &[0x00, 0x01, 0x00, 0xfe, 0xff, 0xff]),
            client_frame(FIN | CONT, &[0x00]),
        ];
        let results = run(&mut compressed(), &frames);
        assert_eq!(results[0], Ok(None));
        assert_eq!(results[1], Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn compressed_corrupt_data_fails_with_1007() {
        let frames = [client_frame(FIN | RSV1 | BINARY, &[0xff, 0xff, 0xff])];
        let err = messages(&mut compressed(), &frames).unwrap_err();
        assert_eq!(err, ProtocolError::InvalidCompressedData);
        assert_eq!(err.close_code(), CloseCode::INVALID_PAYLOAD);
    }

    #[test]
    fn compressed_large_message_in_small_fragments() {
        let data: String = (0..50_000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let compressed_bytes = deflate(data.as_bytes());
        let mut frames = Vec::new();
        let chunks: Vec<&[u8]> = compressed_bytes.chunks(100).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let mut b0 = if i == 0 { RSV1 | TEXT } else { CONT };
            if i + 1 == chunks.len() {
                b0 |= FIN;
            }
            frames.push(client_frame(b0, chunk));
        }
        assert_eq!(messages(&mut compressed(), &frames), Ok(vec![text(&data)]));
    }

    #[test]
    fn message_decoder_never_panics_on_arbitrary_bytes() {
        let mut x = 0x9e37_79b9u32;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let valid = [
            client_frame(RSV1 | TEXT, &HELLO[..3]),
            client_frame(FIN | PING, b"p"),
            client_frame(FIN | CONT, &HELLO[3..]),
            client_frame(FIN | TEXT, "κόσμε".as_bytes()),
            client_frame(FIN | CLOSE, b"\x03\xe8ok"),
        ]
        .concat();
        for round in 0..3000 {
            let mut bytes = valid.clone();
            // Flip a few bytes of a valid stream, or use noise.
            if round % 2 == 0 {
                for _ in 0..(next() % 4 + 1) {
                    let i = next() as usize % bytes.len();
                    bytes[i] = next() as u8;
                }
            } else {
                bytes = (0..next() % 64).map(|_| next() as u8).collect();
            }
            let limits = Limits {
                max_message_size: 64,
                max_frame_size: 32,
            };
            let mut decoder = MessageDecoder::new(limits, Some(&deflate_params(false, 15)));
            let mut buf = BytesMut::new();
            for piece in bytes.chunks(next() as usize % 7 + 1) {
                buf.extend_from_slice(piece);
                while let Ok(Some(_)) = decoder.decode(&mut buf) {}
            }
        }
    }

    // Encoding.

    /// Reads one unmasked server frame: (first byte, payload, rest).
    fn server_frame(bytes: &[u8]) -> (u8, &[u8], &[u8]) {
        let (len, start) = match bytes[1] & 0x7f {
            126 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
            127 => (
                u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (usize::from(n), 2),
        };
        assert_eq!(bytes[1] & 0x80, 0, "server frames are not masked");
        (bytes[0], &bytes[start..start + len], &bytes[start + len..])
    }

    #[test]
    fn encode_uncompressed_text_and_binary() {
        let mut encoder = MessageEncoder::new(None);
        let mut dst = BytesMut::new();
        encoder.text("Hello", &mut dst);
        encoder.binary(&[1, 2, 3], &mut dst);
        assert_eq!(
            &dst[..],
            &[0x81, 0x05, b'H', b'e', b'l', b'l', b'o', 0x82, 0x03, 1, 2, 3]
        );
    }

    #[test]
    fn encode_compressed_rfc_7692_hello_twice() {
        // The RFC's example bytes come from zlib's default level, 6.
        let mut encoder = MessageEncoder::new(Some(&DeflateParams {
            level: 6,
            ..deflate_params(false, 15)
        }));
        let mut dst = BytesMut::new();
        encoder.text("Hello", &mut dst);
        encoder.text("Hello", &mut dst);
        assert_eq!(
            &dst[..],
            &[
                0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0xc1, 0x05, 0xf2, 0x00, 0x11,
                0x00, 0x00
            ]
        );
    }

    #[test]
    fn encode_compressed_without_context_takeover() {
        let mut encoder = MessageEncoder::new(Some(&deflate_params(true, 15)));
        let mut dst = BytesMut::new();
        encoder.text("Hello", &mut dst);
        encoder.text("Hello", &mut dst);
        let once = [0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(&dst[..9], &once);
        assert_eq!(&dst[9..], &once);
    }

    #[test]
    fn encode_uncompressed_when_the_server_window_is_limited_to_8_bits() {
        let mut encoder = MessageEncoder::new(Some(&deflate_params(false, 8)));
        let mut dst = BytesMut::new();
        encoder.text("Hello", &mut dst);
        assert_eq!(&dst[..], &[0x81, 0x05, b'H', b'e', b'l', b'l', b'o']);
    }

    #[test]
    fn encode_compressed_large_messages_round_trip_through_the_decoder() {
        let params = deflate_params(false, 15);
        let mut encoder = MessageEncoder::new(Some(&params));
        let mut inflater = Inflater::new(&params);
        let mut x = 7u32;
        // Compressible (short header), and random (16- and 64-bit headers).
        let sizes = [10usize, 200, 70_000, 200_000];
        for (i, size) in sizes.into_iter().enumerate() {
            let data: Vec<u8> = (0..size)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    if i % 2 == 0 {
                        b'z'
                    } else {
                        x as u8
                    }
                })
                .collect();
            let mut dst = BytesMut::from(&b"previous bytes stay"[..]);
            encoder.binary(&data, &mut dst);
            assert_eq!(&dst[..19], b"previous bytes stay");
            let (b0, payload, rest) = server_frame(&dst[19..]);
            assert_eq!(b0, 0xc2);
            assert!(rest.is_empty());
            let mut out = BytesMut::new();
            inflater.inflate(payload, &mut out, usize::MAX).unwrap();
            inflater.finish(&mut out, usize::MAX).unwrap();
            assert_eq!(&out[..], &data[..], "size {size}");
        }
    }

    #[test]
    fn encode_control_frames() {
        let mut encoder = MessageEncoder::new(Some(&deflate_params(false, 15)));
        let mut dst = BytesMut::new();
        encoder.ping(b"Hello", &mut dst).unwrap();
        encoder.pong(b"Hello", &mut dst).unwrap();
        encoder.close(Some((CloseCode::NORMAL, "bye")), &mut dst);
        encoder.close(None, &mut dst);
        assert_eq!(
            &dst[..],
            &[
                0x89, 0x05, b'H', b'e', b'l', b'l', b'o', //
                0x8a, 0x05, b'H', b'e', b'l', b'l', b'o', //
                0x88, 0x05, 0x03, 0xe8, b'b', b'y', b'e', //
                0x88, 0x00,
            ]
        );
    }

    #[test]
    fn encode_control_payload_over_125_bytes_is_refused() {
        let mut encoder = MessageEncoder::new(None);
        let mut dst = BytesMut::new();
        assert_eq!(
            encoder.ping(&[0; 126], &mut dst),
            Err(ProtocolError::ControlFrameTooLong)
        );
        assert_eq!(
            encoder.pong(&[0; 126], &mut dst),
            Err(ProtocolError::ControlFrameTooLong)
        );
        assert!(dst.is_empty());
        encoder.close(Some((CloseCode::NORMAL, &"x".repeat(200))), &mut dst);
        assert_eq!(dst.len(), 2 + 125);
    }
}
