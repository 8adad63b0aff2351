//! Request body decoders (RFC 9112 §6 and §7.1). No I/O: `decode` takes the
//! bytes read so far and returns the next piece of body it can.

use super::parse::BodyKind;
use bytes::{Buf, Bytes, BytesMut};
use std::fmt;

/// Longest chunk extension accepted per chunk; extensions are ignored, but
/// an endless one would otherwise be an endless read.
const MAX_CHUNK_EXTENSION: usize = 4096;

/// Bytes of chunk extensions (and the whitespace before them) accepted over
/// a whole body (hyper's limit too): many tiny chunks each carrying a large
/// extension would otherwise cost far more than the body's decoded size.
const MAX_EXTENSIONS_TOTAL: u64 = 16 * 1024;

/// Most bytes of trailer fields accepted; they are read and discarded.
const MAX_TRAILER: usize = 16 * 1024;

/// Hex digits accepted in a chunk size: 16 fill a u64; leading zeros beyond
/// that only serve to make a parser work.
const MAX_SIZE_DIGITS: u8 = 16;

/// What the decoder produced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// Body bytes, at most the requested amount.
    Data(Bytes),
    /// The body is complete.
    Done,
    /// More bytes from the socket are needed.
    NeedMore,
}

/// A malformed body; the connection cannot be trusted after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    InvalidChunkSize,
    ChunkSizeOverflow,
    InvalidLineEnding,
    ExtensionTooLong,
    InvalidExtension,
    TrailerTooLarge,
    InvalidTrailer,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecodeError::InvalidChunkSize => "invalid chunk size",
            DecodeError::ChunkSizeOverflow => "chunk size too large",
            DecodeError::InvalidLineEnding => "invalid line ending in chunked body",
            DecodeError::ExtensionTooLong => "chunk extension too long",
            DecodeError::InvalidExtension => "control character in a chunk extension",
            DecodeError::TrailerTooLarge => "trailer section too large",
            DecodeError::InvalidTrailer => "malformed trailer field",
        })
    }
}

/// Where a body decoder stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decoder {
    /// `Content-Length`: this many bytes still to come.
    Length(u64),
    /// `Transfer-Encoding: chunked`, and the extension bytes seen so far.
    Chunked(Chunked, u64),
    /// The body has been read completely.
    Done,
    /// The body was malformed: nothing more can be read from this stream.
    Failed,
}

/// The chunked decoder's state: named for the byte expected next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Chunked {
    /// Hex digits of a chunk size.
    Size { size: u64, digits: u8 },
    /// Whitespace between the size and a `;` (RFC 9112 §7.1.1 BWS).
    SizeSpace { size: u64 },
    /// Inside a chunk extension, which is skipped.
    Extension { size: u64, len: usize },
    /// The LF ending a chunk-size line.
    SizeLf { size: u64 },
    /// Chunk data, this many bytes still to come.
    Data { remaining: u64 },
    /// The CR after chunk data.
    DataCr,
    /// The LF after chunk data.
    DataLf,
    /// The start of a trailer line, or the CR of the final empty line.
    TrailerStart { seen: usize },
    /// Inside a trailer field's name.
    TrailerName { seen: usize },
    /// Inside a trailer field's value.
    TrailerValue { seen: usize },
    /// The LF ending a trailer line.
    TrailerLf { seen: usize },
    /// The LF of the final empty line.
    EndLf,
}

impl Decoder {
    pub(crate) fn new(kind: BodyKind) -> Decoder {
        match kind {
            BodyKind::Empty | BodyKind::Length(0) => Decoder::Done,
            BodyKind::Length(n) => Decoder::Length(n),
            BodyKind::Chunked => Decoder::Chunked(Chunked::Size { size: 0, digits: 0 }, 0),
        }
    }

    /// The body can still be read: neither finished nor broken.
    pub(crate) fn is_pending(&self) -> bool {
        matches!(self, Decoder::Length(_) | Decoder::Chunked(..))
    }

    /// Takes up to `max` body bytes (at least one) from the front of `buf`.
    pub(crate) fn decode(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
    ) -> Result<Decoded, DecodeError> {
        let max = max.max(1);
        match self {
            Decoder::Done => Ok(Decoded::Done),
            Decoder::Failed => Err(DecodeError::InvalidChunkSize),
            Decoder::Length(remaining) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = take_len(*remaining, buf.len(), max);
                *remaining -= n as u64;
                if *remaining == 0 {
                    *self = Decoder::Done;
                }
                Ok(Decoded::Data(buf.split_to(n).freeze()))
            }
            Decoder::Chunked(state, extensions) => match state.decode(buf, max, extensions) {
                Ok(Decoded::Done) => {
                    *self = Decoder::Done;
                    Ok(Decoded::Done)
                }
                Ok(other) => Ok(other),
                Err(e) => {
                    *self = Decoder::Failed;
                    Err(e)
                }
            },
        }
    }
}

/// `min(remaining, available, max)` without truncating the u64.
fn take_len(remaining: u64, available: usize, max: usize) -> usize {
    let cap = available.min(max);
    usize::try_from(remaining).map_or(cap, |r| r.min(cap))
}

impl Chunked {
    fn decode(
        &mut self,
        buf: &mut BytesMut,
        max: usize,
        extensions: &mut u64,
    ) -> Result<Decoded, DecodeError> {
        loop {
            if let Chunked::Data { remaining } = self {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = take_len(*remaining, buf.len(), max);
                *remaining -= n as u64;
                if *remaining == 0 {
                    *self = Chunked::DataCr;
                }
                return Ok(Decoded::Data(buf.split_to(n).freeze()));
            }
            let Some(&byte) = buf.first() else {
                return Ok(Decoded::NeedMore);
            };
            buf.advance(1);
            if matches!(self, Chunked::SizeSpace { .. } | Chunked::Extension { .. }) {
                *extensions += 1;
                if *extensions > MAX_EXTENSIONS_TOTAL {
                    return Err(DecodeError::ExtensionTooLong);
                }
            }
            *self = match *self {
                Chunked::Size { size, digits } => match hex_value(byte) {
                    Some(v) => {
                        if digits >= MAX_SIZE_DIGITS {
                            return Err(DecodeError::ChunkSizeOverflow);
                        }
                        let size = size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(u64::from(v)))
                            .ok_or(DecodeError::ChunkSizeOverflow)?;
                        Chunked::Size {
                            size,
                            digits: digits + 1,
                        }
                    }
                    None if digits == 0 => return Err(DecodeError::InvalidChunkSize),
                    None => after_size(size, byte)?,
                },
                // RFC 9112 §7.1.1: whitespace after the size only before `;`.
                Chunked::SizeSpace { size } => match byte {
                    b' ' | b'\t' => Chunked::SizeSpace { size },
                    b';' => Chunked::Extension { size, len: 0 },
                    _ => return Err(DecodeError::InvalidChunkSize),
                },
                Chunked::Extension { size, len } => match byte {
                    b'\r' => Chunked::SizeLf { size },
                    // RFC 9112 §7.1.1: a bare LF here is a smuggling vector.
                    b'\n' => return Err(DecodeError::InvalidLineEnding),
                    _ if len >= MAX_CHUNK_EXTENSION => return Err(DecodeError::ExtensionTooLong),
                    // No grammar allows control characters (a NUL that
                    // ends the line for a proxy in C); the rest of the
                    // grammar is not checked, as in hyper: extensions are
                    // skipped, and a line ends only at CRLF.
                    _ if is_control(byte) => return Err(DecodeError::InvalidExtension),
                    _ => Chunked::Extension { size, len: len + 1 },
                },
                Chunked::SizeLf { size } => match byte {
                    b'\n' if size == 0 => Chunked::TrailerStart { seen: 0 },
                    b'\n' => Chunked::Data { remaining: size },
                    _ => return Err(DecodeError::InvalidLineEnding),
                },
                Chunked::Data { .. } => unreachable!("handled above"),
                Chunked::DataCr => match byte {
                    b'\r' => Chunked::DataLf,
                    _ => return Err(DecodeError::InvalidLineEnding),
                },
                Chunked::DataLf => match byte {
                    b'\n' => Chunked::Size { size: 0, digits: 0 },
                    _ => return Err(DecodeError::InvalidLineEnding),
                },
                // RFC 9112 §7.1.2: trailer fields are field lines, checked
                // as the head's are (a name of token characters, the colon
                // right after it, no obs-fold, no control characters in
                // the value), though they are then discarded: a proxy
                // that reads them differently must not find a request in
                // them.
                Chunked::TrailerStart { seen } => match byte {
                    b'\r' => Chunked::EndLf,
                    b'\n' => return Err(DecodeError::InvalidLineEnding),
                    _ if is_token(byte) => Chunked::TrailerName {
                        seen: trailer_byte(seen)?,
                    },
                    _ => return Err(DecodeError::InvalidTrailer),
                },
                Chunked::TrailerName { seen } => match byte {
                    b':' => Chunked::TrailerValue {
                        seen: trailer_byte(seen)?,
                    },
                    _ if is_token(byte) => Chunked::TrailerName {
                        seen: trailer_byte(seen)?,
                    },
                    _ => return Err(DecodeError::InvalidTrailer),
                },
                Chunked::TrailerValue { seen } => match byte {
                    b'\r' => Chunked::TrailerLf { seen },
                    b'\n' => return Err(DecodeError::InvalidLineEnding),
                    _ if is_control(byte) => return Err(DecodeError::InvalidTrailer),
                    _ => Chunked::TrailerValue {
                        seen: trailer_byte(seen)?,
                    },
                },
                Chunked::TrailerLf { seen } => match byte {
                    b'\n' => Chunked::TrailerStart { seen },
                    _ => return Err(DecodeError::InvalidLineEnding),
                },
                Chunked::EndLf => match byte {
                    b'\n' => return Ok(Decoded::Done),
                    _ => return Err(DecodeError::InvalidLineEnding),
                },
            };
        }
    }
}

/// The byte right after a chunk size's last digit.
fn after_size(size: u64, byte: u8) -> Result<Chunked, DecodeError> {
    match byte {
        b'\r' => Ok(Chunked::SizeLf { size }),
        b' ' | b'\t' => Ok(Chunked::SizeSpace { size }),
        b';' => Ok(Chunked::Extension { size, len: 0 }),
        b'\n' => Err(DecodeError::InvalidLineEnding),
        _ => Err(DecodeError::InvalidChunkSize),
    }
}

/// The trailer section's size with one more byte, within its bound.
fn trailer_byte(seen: usize) -> Result<usize, DecodeError> {
    if seen >= MAX_TRAILER {
        return Err(DecodeError::TrailerTooLarge);
    }
    Ok(seen + 1)
}

/// A control character other than HTAB (RFC 9110 §5.5: not in a field
/// value; CR and LF are handled before this is asked).
fn is_control(byte: u8) -> bool {
    (byte < 0x20 && byte != b'\t') || byte == 0x7f
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_token(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` one byte at a time and collects the body.
    fn decode_all(kind: BodyKind, input: &[u8], max: usize) -> Result<Vec<u8>, DecodeError> {
        let mut decoder = Decoder::new(kind);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf, max)? {
                Decoded::Data(b) => {
                    assert!(b.len() <= max);
                    body.extend_from_slice(&b);
                }
                Decoded::Done => return Ok(body),
                Decoded::NeedMore => {
                    assert!(fed < input.len(), "input ended before the body");
                    buf.extend_from_slice(&input[fed..fed + 1]);
                    fed += 1;
                }
            }
        }
    }

    #[test]
    fn length_body_in_pieces() {
        assert_eq!(
            decode_all(BodyKind::Length(5), b"hello", 2).unwrap(),
            b"hello"
        );
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let input =
            b"5;name=value\r\nhello\r\n6 ; x\r\n world\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n";
        assert_eq!(
            decode_all(BodyKind::Chunked, input, 3).unwrap(),
            b"hello world"
        );
    }

    #[test]
    fn chunked_leaves_next_request_in_buffer() {
        let mut buf = BytesMut::from(&b"3\r\nabc\r\n0\r\n\r\nGET /"[..]);
        let mut d = Decoder::new(BodyKind::Chunked);
        assert_eq!(
            d.decode(&mut buf, 100).unwrap(),
            Decoded::Data(Bytes::from_static(b"abc"))
        );
        assert_eq!(d.decode(&mut buf, 100).unwrap(), Decoded::Done);
        assert_eq!(&buf[..], b"GET /");
    }

    #[test]
    fn hrs_chunked_rejects_bad_framing() {
        for bad in [
            &b"\r\n"[..],
            b"x\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"0\r\n\n",
            b"-1\r\n",
            b"1 2\r\n",
            b"0\r\nX: y\n\r\n",
            b"11111111111111111\r\n",
            b"5 \r\nhello\r\n0\r\n\r\n",
            b"ffffffffffffffff0\r\n",
        ] {
            assert!(
                decode_all(BodyKind::Chunked, bad, 64).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// Found by a smuggling probe: extensions with control characters and
    /// trailer lines that are no field lines (no colon, space before the
    /// colon, obs-fold, a control character, a request line) were
    /// skipped; a proxy that reads them otherwise could frame the body
    /// differently. What the grammar allows still passes.
    #[test]
    fn malformed_extensions_and_trailers_are_refused() {
        for (bad, expected) in [
            (
                &b"5;a\x00b\r\nhello\r\n0\r\n\r\n"[..],
                DecodeError::InvalidExtension,
            ),
            (
                b"5;a=\x01\x7f\r\nhello\r\n0\r\n\r\n",
                DecodeError::InvalidExtension,
            ),
            (b"0\r\nfoo\r\n\r\n", DecodeError::InvalidTrailer),
            (b"0\r\nX : a\r\n\r\n", DecodeError::InvalidTrailer),
            (b"0\r\nX: a\r\n b\r\n\r\n", DecodeError::InvalidTrailer),
            (b"0\r\nX: a\x00b\r\n\r\n", DecodeError::InvalidTrailer),
            (b"0\r\nX(y): a\r\n\r\n", DecodeError::InvalidTrailer),
            (b"0\r\n: a\r\n\r\n", DecodeError::InvalidTrailer),
            (
                b"0\r\nGET /info HTTP/1.1\r\nHost: x\r\n\r\n",
                DecodeError::InvalidTrailer,
            ),
        ] {
            assert_eq!(
                decode_all(BodyKind::Chunked, bad, 64),
                Err(expected),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let fine = b"5;a=\"q \\\" \xe9\";b\t;c=d\r\nhello\r\n0\r\nX-T: a\tb \xff\r\nEmpty:\r\n\r\n";
        assert_eq!(decode_all(BodyKind::Chunked, fine, 64).unwrap(), b"hello");
    }

    #[test]
    fn chunk_size_with_leading_zeros_and_max_value() {
        assert_eq!(
            decode_all(BodyKind::Chunked, b"0003\r\nabc\r\n0\r\n\r\n", 64).unwrap(),
            b"abc"
        );
        let mut d = Decoder::new(BodyKind::Chunked);
        let mut buf = BytesMut::from(&b"ffffffffffffffff\r\nab"[..]);
        assert_eq!(
            d.decode(&mut buf, 64).unwrap(),
            Decoded::Data(Bytes::from_static(b"ab"))
        );
    }

    #[test]
    fn extension_and_trailer_are_bounded() {
        let ext = format!("1;{}\r\n", "a".repeat(MAX_CHUNK_EXTENSION + 1));
        assert_eq!(
            decode_all(BodyKind::Chunked, ext.as_bytes(), 64),
            Err(DecodeError::ExtensionTooLong)
        );
        let trailer = format!("0\r\nX: {}\r\n\r\n", "a".repeat(MAX_TRAILER + 1));
        assert_eq!(
            decode_all(BodyKind::Chunked, trailer.as_bytes(), 64),
            Err(DecodeError::TrailerTooLarge)
        );
    }

    #[test]
    fn extensions_are_bounded_over_the_whole_body() {
        let chunk = format!("1;{}\r\nx\r\n", "e".repeat(1000));
        let body = chunk.repeat(20) + "0\r\n\r\n";
        assert_eq!(
            decode_all(BodyKind::Chunked, body.as_bytes(), 64),
            Err(DecodeError::ExtensionTooLong)
        );
        let spaces = format!("1{};\r\nx\r\n0\r\n\r\n", " ".repeat(70_000));
        assert_eq!(
            decode_all(BodyKind::Chunked, spaces.as_bytes(), 64),
            Err(DecodeError::ExtensionTooLong)
        );
    }

    #[test]
    fn failed_decoder_stays_failed() {
        let mut d = Decoder::new(BodyKind::Chunked);
        let mut buf = BytesMut::from(&b"z\r\n"[..]);
        assert!(d.decode(&mut buf, 10).is_err());
        assert!(!d.is_pending());
        assert!(d
            .decode(&mut BytesMut::from(&b"0\r\n\r\n"[..]), 10)
            .is_err());
    }
}
