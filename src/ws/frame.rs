//! The frame codec (RFC 6455 §5): a decoder for client frames and an
//! encoder for server frames. No I/O.
//!
//! The decoder checks a header in the order RFC 6455 §5.2 lays it out, as
//! tokio-websockets does, and fails at the first broken rule: reserved
//! bits, opcode, control-frame rules (FIN, at most 125 bytes), minimal
//! length encoding, masking, and the payload limit. All of that happens on
//! the header alone, before any payload is buffered. The payload is then
//! unmasked in place as it arrives, so a partly received frame can already
//! be inspected (the message layer validates text while it arrives).

use super::ProtocolError;
use bytes::{Buf, BytesMut};

/// Longest payload of a control frame (RFC 6455 §5.5).
pub(crate) const MAX_CONTROL_PAYLOAD: usize = 125;

/// Longest header of a server frame: 2 bytes, 8 of extended length, no mask.
pub(crate) const MAX_SERVER_HEADER_LEN: usize = 10;

/// A frame opcode defined by RFC 6455 §5.2; the others are reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpCode {
    /// %x0: the next fragment of a message.
    Continuation,
    /// %x1: the first frame of a text message.
    Text,
    /// %x2: the first frame of a binary message.
    Binary,
    /// %x8: connection close.
    Close,
    /// %x9: ping.
    Ping,
    /// %xA: pong.
    Pong,
}

impl OpCode {
    /// The opcode for these four bits, if RFC 6455 defines it.
    pub(crate) const fn from_bits(bits: u8) -> Option<OpCode> {
        match bits {
            0x0 => Some(OpCode::Continuation),
            0x1 => Some(OpCode::Text),
            0x2 => Some(OpCode::Binary),
            0x8 => Some(OpCode::Close),
            0x9 => Some(OpCode::Ping),
            0xa => Some(OpCode::Pong),
            _ => None,
        }
    }

    /// The four bits of this opcode.
    pub(crate) const fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xa,
        }
    }

    /// Close, ping and pong (RFC 6455 §5.5: opcodes with the high bit set).
    pub(crate) const fn is_control(self) -> bool {
        self.bits() & 0x8 != 0
    }
}

/// A validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    /// The final fragment of a message.
    pub(crate) fin: bool,
    /// RSV1: with permessage-deflate, the message is compressed.
    pub(crate) rsv1: bool,
    pub(crate) opcode: OpCode,
    /// Payload length.
    pub(crate) len: usize,
    /// The client's masking key.
    mask: [u8; 4],
}

/// A complete frame with its payload unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub(crate) fin: bool,
    pub(crate) rsv1: bool,
    pub(crate) opcode: OpCode,
    pub(crate) payload: BytesMut,
}

/// Decodes frames sent by a client.
#[derive(Debug, Clone)]
pub(crate) struct FrameDecoder {
    /// permessage-deflate was negotiated: RSV1 has a meaning.
    compression: bool,
    state: State,
}

/// Where the decoder stands: named for what it expects next.
#[derive(Debug, Clone)]
enum State {
    /// The start of a frame header.
    Header,
    /// Payload bytes; the header is consumed, and the first `unmasked`
    /// payload bytes at the front of the buffer are unmasked already.
    Payload {
        header: FrameHeader,
        unmasked: usize,
    },
}

impl FrameDecoder {
    /// A decoder; `compression` says whether permessage-deflate was
    /// negotiated, which gives RSV1 a meaning (RFC 7692 §6).
    pub(crate) fn new(compression: bool) -> FrameDecoder {
        FrameDecoder {
            compression,
            state: State::Header,
        }
    }

    /// Takes the next complete frame from the front of `buf`, or `None` if
    /// more bytes are needed. `limit` is the largest payload accepted for a
    /// data frame (control frames have their own limit of 125); it applies
    /// when the header is decoded, before any payload is buffered.
    ///
    /// Once the header has been decoded it is consumed from `buf`, and
    /// payload bytes are unmasked in place as they arrive: see
    /// [`FrameDecoder::partial`].
    pub(crate) fn decode(
        &mut self,
        buf: &mut BytesMut,
        limit: usize,
    ) -> Result<Option<Frame>, ProtocolError> {
        let (header, unmasked) = match self.state {
            State::Header => match self.decode_header(buf, limit)? {
                None => return Ok(None),
                Some((header, header_len)) => {
                    buf.advance(header_len);
                    (header, 0)
                }
            },
            State::Payload { header, unmasked } => (header, unmasked),
        };
        let available = buf.len().min(header.len);
        if let Some(arrived) = buf.get_mut(unmasked..available) {
            apply_mask(arrived, header.mask, unmasked);
        }
        if available < header.len {
            self.state = State::Payload {
                header,
                unmasked: available,
            };
            return Ok(None);
        }
        self.state = State::Header;
        Ok(Some(Frame {
            fin: header.fin,
            rsv1: header.rsv1,
            opcode: header.opcode,
            payload: buf.split_to(header.len),
        }))
    }

    /// The header of the frame being received and its payload so far,
    /// unmasked: at the front of `buf`, as `decode` left it. `None` between
    /// frames.
    pub(crate) fn partial<'b>(&self, buf: &'b BytesMut) -> Option<(&FrameHeader, &'b [u8])> {
        match &self.state {
            State::Header => None,
            State::Payload { header, unmasked } => {
                Some((header, buf.get(..*unmasked).unwrap_or_default()))
            }
        }
    }

    /// Decodes and checks a header at the front of `buf`: the header and its
    /// length, or `None` if it is not complete yet.
    fn decode_header(
        &self,
        buf: &[u8],
        limit: usize,
    ) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
        let [b0, b1, ..] = *buf else {
            return Ok(None);
        };
        let fin = b0 & 0x80 != 0;
        let rsv1 = b0 & 0x40 != 0;
        let opcode = OpCode::from_bits(b0 & 0x0f);

        // RFC 6455 §5.2: RSV2 and RSV3 MUST be 0, no extension of ours defines them.
        if b0 & 0x30 != 0 {
            return Err(ProtocolError::ReservedBits);
        }
        if rsv1 {
            // RFC 6455 §5.2: RSV1 MUST be 0 unless a negotiated extension defines it.
            if !self.compression {
                return Err(ProtocolError::ReservedBits);
            }
            // RFC 7692 §6: never on control frames or non-first fragments.
            if matches!(
                opcode,
                Some(OpCode::Continuation | OpCode::Close | OpCode::Ping | OpCode::Pong)
            ) {
                return Err(ProtocolError::CompressedNonFirstFrame);
            }
        }
        // RFC 6455 §5.2: a reserved opcode fails the connection.
        let opcode = opcode.ok_or(ProtocolError::UnknownOpcode)?;

        let masked = b1 & 0x80 != 0;
        let len7 = b1 & 0x7f;
        if opcode.is_control() {
            // RFC 6455 §5.5: control frames MUST NOT be fragmented.
            if !fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            // RFC 6455 §5.5: control frame payloads are 125 bytes or less.
            if usize::from(len7) > MAX_CONTROL_PAYLOAD {
                return Err(ProtocolError::ControlFrameTooLong);
            }
        }

        // RFC 6455 §5.2: 126 and 127 announce a 16- or 64-bit length, and the
        // minimal number of bytes MUST be used to encode the length.
        let (len, len_end) = match len7 {
            126 => {
                let Some(&[hi, lo]) = buf.get(2..4) else {
                    return Ok(None);
                };
                let len = u16::from_be_bytes([hi, lo]);
                if len < 126 {
                    return Err(ProtocolError::NonMinimalLength);
                }
                (u64::from(len), 4)
            }
            127 => {
                let Some(bytes) = buf.get(2..10) else {
                    return Ok(None);
                };
                let mut be = [0; 8];
                be.copy_from_slice(bytes);
                let len = u64::from_be_bytes(be);
                // RFC 6455 §5.2: the most significant bit MUST be 0.
                if len >> 63 != 0 || len <= u64::from(u16::MAX) {
                    return Err(ProtocolError::NonMinimalLength);
                }
                (len, 10)
            }
            n => (u64::from(n), 2),
        };

        // RFC 6455 §5.1: a server MUST close the connection on an unmasked client frame.
        if !masked {
            return Err(ProtocolError::UnmaskedFrame);
        }

        // The payload limit, on the declared length, before buffering anything.
        let len = match usize::try_from(len) {
            Ok(len) if opcode.is_control() || len <= limit => len,
            _ => return Err(ProtocolError::MessageTooBig),
        };

        // RFC 6455 §5.2: the 4-byte masking key follows the length.
        let Some(key) = buf.get(len_end..len_end + 4) else {
            return Ok(None);
        };
        let mut mask = [0; 4];
        mask.copy_from_slice(key);
        let header = FrameHeader {
            fin,
            rsv1,
            opcode,
            len,
            mask,
        };
        Ok(Some((header, len_end + 4)))
    }
}

/// XORs `data` with the masking key (RFC 6455 §5.3); `offset` is the
/// position of `data[0]` in the payload, so a payload can be unmasked in
/// pieces. Works on 8-byte words: several times faster than byte by byte
/// on large payloads, and the compiler vectorizes it further.
pub(crate) fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
    let k = [
        key[offset & 3],
        key[(offset + 1) & 3],
        key[(offset + 2) & 3],
        key[(offset + 3) & 3],
    ];
    let word = u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[0], k[1], k[2], k[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(bytes) ^ word).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= k[i & 3];
    }
}

/// Length of a server frame header for a payload of `len` bytes.
pub(crate) const fn header_len(len: usize) -> usize {
    if len < 126 {
        2
    } else if len <= u16::MAX as usize {
        4
    } else {
        10
    }
}

/// A server frame header in a small array, and how many of its bytes are
/// used: never masked (RFC 6455 §5.1), the length in the fewest bytes
/// (RFC 6455 §5.2).
pub(crate) fn header_bytes(
    fin: bool,
    rsv1: bool,
    opcode: OpCode,
    len: usize,
) -> ([u8; MAX_SERVER_HEADER_LEN], usize) {
    let mut header = [0; MAX_SERVER_HEADER_LEN];
    header[0] = u8::from(fin) << 7 | u8::from(rsv1) << 6 | opcode.bits();
    if len < 126 {
        // `len` < 126 fits in the 7 bits.
        header[1] = len as u8;
        (header, 2)
    } else if let Ok(len) = u16::try_from(len) {
        header[1] = 126;
        header[2..4].copy_from_slice(&len.to_be_bytes());
        (header, 4)
    } else {
        header[1] = 127;
        // usize is at most 64 bits on every target Rust supports.
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (header, 10)
    }
}

/// Writes a server frame header.
pub(crate) fn encode_header(dst: &mut BytesMut, fin: bool, rsv1: bool, opcode: OpCode, len: usize) {
    let (header, used) = header_bytes(fin, rsv1, opcode, len);
    dst.extend_from_slice(&header[..used]);
}

/// Writes a whole server frame: header and payload.
pub(crate) fn encode_frame(
    dst: &mut BytesMut,
    fin: bool,
    rsv1: bool,
    opcode: OpCode,
    payload: &[u8],
) {
    dst.reserve(header_len(payload.len()) + payload.len());
    encode_header(dst, fin, rsv1, opcode, payload.len());
    dst.extend_from_slice(payload);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The RFC 6455 §5.7 masking key.
    pub(crate) const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// A masked client frame with the minimal length encoding.
    pub(crate) fn client_frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.push(b0);
        let len = payload.len();
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 0xffff {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&KEY);
        let start = out.len();
        out.extend_from_slice(payload);
        apply_mask(&mut out[start..], KEY, 0);
        out
    }

    fn decode_all(
        decoder: &mut FrameDecoder,
        bytes: &[u8],
    ) -> Result<Option<Frame>, ProtocolError> {
        let mut buf = BytesMut::from(bytes);
        decoder.decode(&mut buf, usize::MAX)
    }

    fn decode_one(bytes: &[u8]) -> Result<Option<Frame>, ProtocolError> {
        decode_all(&mut FrameDecoder::new(false), bytes)
    }

    #[test]
    fn decode_rfc_6455_masked_hello() {
        let bytes = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let frame = decode_one(&bytes).unwrap().unwrap();
        assert!(frame.fin);
        assert!(!frame.rsv1);
        assert_eq!(frame.opcode, OpCode::Text);
        assert_eq!(&frame.payload[..], b"Hello");
    }

    #[test]
    fn decode_rfc_6455_masked_pong() {
        let bytes = [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let frame = decode_one(&bytes).unwrap().unwrap();
        assert_eq!(frame.opcode, OpCode::Pong);
        assert_eq!(&frame.payload[..], b"Hello");
    }

    #[test]
    fn decode_rfc_6455_fragmented_text_keeps_fin_flags() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&client_frame(0x01, b"Hel"));
        buf.extend_from_slice(&client_frame(0x80, b"lo"));
        let mut decoder = FrameDecoder::new(false);
        let first = decoder.decode(&mut buf, usize::MAX).unwrap().unwrap();
        assert_eq!(
            (first.fin, first.opcode, &first.payload[..]),
            (false, OpCode::Text, &b"Hel"[..])
        );
        let second = decoder.decode(&mut buf, usize::MAX).unwrap().unwrap();
        assert_eq!(
            (second.fin, second.opcode, &second.payload[..]),
            (true, OpCode::Continuation, &b"lo"[..])
        );
        assert!(buf.is_empty());
        assert_eq!(decoder.decode(&mut buf, usize::MAX), Ok(None));
    }

    #[test]
    fn decode_256_byte_binary_uses_16_bit_length() {
        let payload: Vec<u8> = (0..=255).collect();
        let bytes = client_frame(0x82, &payload);
        assert_eq!(&bytes[..4], &[0x82, 0xfe, 0x01, 0x00]);
        let frame = decode_one(&bytes).unwrap().unwrap();
        assert_eq!(frame.opcode, OpCode::Binary);
        assert_eq!(&frame.payload[..], &payload[..]);
    }

    #[test]
    fn decode_64_kib_binary_uses_64_bit_length() {
        let payload: Vec<u8> = (0..65536u32).map(|i| i as u8).collect();
        let bytes = client_frame(0x82, &payload);
        assert_eq!(&bytes[..10], &[0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0]);
        let frame = decode_one(&bytes).unwrap().unwrap();
        assert_eq!(&frame.payload[..], &payload[..]);
    }

    #[test]
    fn decode_byte_by_byte_matches_decode_at_once() {
        let payload: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        let bytes = client_frame(0x82, &payload);
        let mut decoder = FrameDecoder::new(false);
        let mut buf = BytesMut::new();
        let mut frame = None;
        for (i, byte) in bytes.iter().enumerate() {
            buf.extend_from_slice(&[*byte]);
            frame = decoder.decode(&mut buf, usize::MAX).unwrap();
            if i + 1 < bytes.len() {
                assert!(frame.is_none());
                // Whatever has arrived of the payload is already unmasked.
                if let Some((header, so_far)) = decoder.partial(&buf) {
                    assert_eq!(header.len, 300);
                    assert_eq!(so_far, &payload[..so_far.len()]);
                }
            }
        }
        assert_eq!(&frame.unwrap().payload[..], &payload[..]);
        assert!(decoder.partial(&buf).is_none());
    }

    #[test]
    fn decode_leaves_the_next_frame_in_the_buffer() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&client_frame(0x89, b"ping"));
        buf.extend_from_slice(&client_frame(0x81, b"text")[..3]);
        let mut decoder = FrameDecoder::new(false);
        let ping = decoder.decode(&mut buf, usize::MAX).unwrap().unwrap();
        assert_eq!(ping.opcode, OpCode::Ping);
        assert_eq!(buf.len(), 3);
        assert_eq!(decoder.decode(&mut buf, usize::MAX), Ok(None));
    }

    #[test]
    fn decode_empty_frames() {
        let frame = decode_one(&client_frame(0x81, b"")).unwrap().unwrap();
        assert!(frame.payload.is_empty());
        let frame = decode_one(&client_frame(0x88, b"")).unwrap().unwrap();
        assert_eq!(frame.opcode, OpCode::Close);
    }

    #[test]
    fn decode_rejects_rsv2_and_rsv3() {
        for b0 in [0xa1, 0x91, 0xb1] {
            for compression in [false, true] {
                let err = decode_all(&mut FrameDecoder::new(compression), &client_frame(b0, b"x"));
                assert_eq!(err, Err(ProtocolError::ReservedBits), "{b0:#x}");
            }
        }
    }

    #[test]
    fn decode_rejects_rsv1_without_compression() {
        let err = decode_one(&client_frame(0xc1, b"x"));
        assert_eq!(err, Err(ProtocolError::ReservedBits));
    }

    #[test]
    fn decode_accepts_rsv1_on_first_data_frame_with_compression() {
        let mut decoder = FrameDecoder::new(true);
        for b0 in [0xc1, 0xc2, 0x41, 0x42] {
            let frame = decode_all(&mut decoder, &client_frame(b0, b"x"))
                .unwrap()
                .unwrap();
            assert!(frame.rsv1);
        }
    }

    #[test]
    fn decode_rejects_rsv1_on_continuation_and_control_frames() {
        for b0 in [0xc0, 0x40, 0xc8, 0xc9, 0xca] {
            let err = decode_all(&mut FrameDecoder::new(true), &client_frame(b0, b""));
            assert_eq!(err, Err(ProtocolError::CompressedNonFirstFrame), "{b0:#x}");
        }
    }

    #[test]
    fn decode_rejects_reserved_opcodes() {
        for op in [3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            let err = decode_one(&client_frame(0x80 | op, b""));
            assert_eq!(err, Err(ProtocolError::UnknownOpcode), "opcode {op:#x}");
        }
    }

    #[test]
    fn decode_rejects_fragmented_control_frames() {
        for op in [0x08, 0x09, 0x0a] {
            let err = decode_one(&client_frame(op, b"x"));
            assert_eq!(err, Err(ProtocolError::FragmentedControlFrame));
        }
    }

    #[test]
    fn decode_rejects_control_frames_over_125_bytes() {
        let ok = decode_one(&client_frame(0x89, &[0; 125])).unwrap().unwrap();
        assert_eq!(ok.payload.len(), 125);
        for op in [0x88, 0x89, 0x8a] {
            // Rejected from the first two bytes: no payload needed.
            let header = &client_frame(op, &[0; 126])[..2];
            assert_eq!(decode_one(header), Err(ProtocolError::ControlFrameTooLong));
        }
    }

    #[test]
    fn decode_rejects_non_minimal_16_bit_length() {
        let mut bytes = vec![0x82, 0x80 | 126, 0x00, 125];
        bytes.extend_from_slice(&KEY);
        bytes.extend_from_slice(&[0; 125]);
        assert_eq!(decode_one(&bytes), Err(ProtocolError::NonMinimalLength));
    }

    #[test]
    fn decode_rejects_non_minimal_64_bit_length() {
        let mut bytes = vec![0x82, 0x80 | 127];
        bytes.extend_from_slice(&0xffffu64.to_be_bytes());
        assert_eq!(decode_one(&bytes), Err(ProtocolError::NonMinimalLength));
    }

    #[test]
    fn decode_rejects_64_bit_length_with_msb_set() {
        let mut bytes = vec![0x82, 0x80 | 127];
        bytes.extend_from_slice(&(1u64 << 63 | 0x10000).to_be_bytes());
        assert_eq!(decode_one(&bytes), Err(ProtocolError::NonMinimalLength));
    }

    #[test]
    fn decode_rejects_unmasked_client_frames() {
        // RFC 6455 §5.7's unmasked "Hello": fine from a server, not from a client.
        let bytes = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(decode_one(&bytes), Err(ProtocolError::UnmaskedFrame));
    }

    #[test]
    fn decode_rejects_oversized_frame_from_its_header_alone() {
        let mut decoder = FrameDecoder::new(false);
        // Only the 10 header bytes announcing 1 MiB have arrived.
        let mut buf = BytesMut::from(&client_frame(0x82, &vec![0; 1 << 20])[..10]);
        assert_eq!(
            decoder.decode(&mut buf, 1024),
            Err(ProtocolError::MessageTooBig)
        );
        let mut buf = BytesMut::from(&client_frame(0x82, &[0; 1024])[..]);
        assert!(decoder.decode(&mut buf, 1024).unwrap().is_some());
    }

    #[test]
    fn decode_limit_does_not_apply_to_control_frames() {
        let mut decoder = FrameDecoder::new(false);
        let mut buf = BytesMut::from(&client_frame(0x89, b"ping")[..]);
        assert!(decoder.decode(&mut buf, 0).unwrap().is_some());
    }

    #[test]
    fn decode_checks_in_rfc_order() {
        // Reserved bits come before everything else (here: an unmasked,
        // fragmented ping with a bad opcode would fail later checks too).
        assert_eq!(decode_one(&[0x29, 0x05]), Err(ProtocolError::ReservedBits));
        // Then the opcode.
        assert_eq!(decode_one(&[0x03, 0x7e]), Err(ProtocolError::UnknownOpcode));
        // Then the control-frame rules, before the length and the mask.
        assert_eq!(
            decode_one(&[0x09, 0x7e]),
            Err(ProtocolError::FragmentedControlFrame)
        );
        assert_eq!(
            decode_one(&[0x89, 0x7e]),
            Err(ProtocolError::ControlFrameTooLong)
        );
        // Then the length encoding, before the mask.
        assert_eq!(
            decode_one(&[0x82, 0x7e, 0x00, 0x01]),
            Err(ProtocolError::NonMinimalLength)
        );
        // Then the mask, before the limit.
        let mut buf = BytesMut::from(&[0x82, 0x7e, 0x10, 0x00][..]);
        let err = FrameDecoder::new(false).decode(&mut buf, 10);
        assert_eq!(err, Err(ProtocolError::UnmaskedFrame));
    }

    #[test]
    fn decode_waits_for_a_complete_header() {
        let bytes = client_frame(0x82, &[1; 70000]);
        for cut in 0..14 {
            let mut decoder = FrameDecoder::new(false);
            let mut buf = BytesMut::from(&bytes[..cut]);
            assert_eq!(decoder.decode(&mut buf, usize::MAX), Ok(None), "cut {cut}");
            // Nothing is consumed until the whole header is there.
            assert_eq!(buf.len(), cut);
        }
    }

    #[test]
    fn mask_in_words_matches_byte_by_byte_at_every_offset() {
        let key = [0x12, 0x34, 0x56, 0x78];
        for len in 0..40 {
            for offset in 0..8 {
                let original: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
                let mut fast = original.clone();
                apply_mask(&mut fast, key, offset);
                let slow: Vec<u8> = original
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ key[(i + offset) % 4])
                    .collect();
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn mask_in_pieces_equals_mask_at_once() {
        let data: Vec<u8> = (0..100u8).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, KEY, 0);
        let mut pieces = data.clone();
        for (start, end) in [(0, 3), (3, 17), (17, 18), (18, 100)] {
            apply_mask(&mut pieces[start..end], KEY, start);
        }
        assert_eq!(whole, pieces);
    }

    #[test]
    fn encode_rfc_6455_unmasked_hello() {
        let mut dst = BytesMut::new();
        encode_frame(&mut dst, true, false, OpCode::Text, b"Hello");
        assert_eq!(&dst[..], &[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    }

    #[test]
    fn encode_rfc_6455_fragmented_text() {
        let mut dst = BytesMut::new();
        encode_frame(&mut dst, false, false, OpCode::Text, b"Hel");
        encode_frame(&mut dst, true, false, OpCode::Continuation, b"lo");
        assert_eq!(
            &dst[..],
            &[0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f]
        );
    }

    #[test]
    fn encode_rfc_6455_unmasked_ping() {
        let mut dst = BytesMut::new();
        encode_frame(&mut dst, true, false, OpCode::Ping, b"Hello");
        assert_eq!(&dst[..], &[0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]);
    }

    #[test]
    fn encode_rfc_6455_256_byte_and_64_kib_binary_headers() {
        let mut dst = BytesMut::new();
        encode_frame(&mut dst, true, false, OpCode::Binary, &[0; 256]);
        assert_eq!(&dst[..4], &[0x82, 0x7e, 0x01, 0x00]);
        assert_eq!(dst.len(), 4 + 256);
        let mut dst = BytesMut::new();
        encode_frame(&mut dst, true, false, OpCode::Binary, &vec![0; 65536]);
        assert_eq!(&dst[..10], &[0x82, 0x7f, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]);
        assert_eq!(dst.len(), 10 + 65536);
    }

    #[test]
    fn encode_length_boundaries_use_minimal_encoding() {
        for (len, header) in [(125, 2), (126, 4), (65535, 4), (65536, 10)] {
            assert_eq!(header_len(len), header);
            let mut dst = BytesMut::new();
            encode_header(&mut dst, true, false, OpCode::Binary, len);
            assert_eq!(dst.len(), header, "len {len}");
        }
    }

    #[test]
    fn encode_sets_rsv1_for_compressed_messages() {
        let mut dst = BytesMut::new();
        encode_frame(
            &mut dst,
            true,
            true,
            OpCode::Text,
            &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
        );
        assert_eq!(&dst[..2], &[0xc1, 0x07]);
    }
}
