//! permessage-deflate (RFC 7692): negotiation, compression of outgoing
//! messages and size-limited decompression of incoming ones. No I/O.
//!
//! zlib (and zlib-rs, flate2's backend here) cannot compress raw deflate
//! with an 8-bit window: zlib silently used 9 bits before 1.2.9 and has
//! refused since, and flate2 panics on it. A client that limits *our*
//! window to 8 bits (`server_max_window_bits=8`) therefore gets its offer
//! accepted with `server_max_window_bits=8` in the response, and every
//! server message is then sent uncompressed: RFC 7692 §6 lets an endpoint
//! leave any message uncompressed, and a message that is not compressed
//! uses no window at all, so the promise holds. The alternatives are
//! worse: answering 9 is forbidden (RFC 7692 §7.1.2.1: equal or smaller),
//! compressing with 9 bits while promising 8 (what servers that pass `-8`
//! to an old zlib do) can produce distances the client's 256-byte window
//! cannot resolve, and declining the offer loses compression of the
//! client's messages as well. Inflating is not affected: an inflater with
//! a 9-bit window reads any stream made with an 8-bit one.

use super::ProtocolError;
use bytes::BytesMut;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use http::HeaderValue;
use std::borrow::Cow;
use std::fmt::Write as _;

/// The extension's name (RFC 7692 §7).
pub(crate) const EXTENSION_NAME: &str = "permessage-deflate";

/// The empty stored block a sync flush ends with, removed from each
/// compressed message and appended again before inflating (RFC 7692 §7.2.1,
/// §7.2.2).
pub(crate) const TRAILER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Smallest window zlib can compress raw deflate with.
const MIN_COMPRESS_WINDOW_BITS: u8 = 9;

/// Largest LZ77 window: 32 KiB (RFC 7692 §7.1.2).
const MAX_WINDOW_BITS: u8 = 15;

/// Default compression level: 1, the fastest, as nginx's gzip default: on
/// a live connection the CPU spent per message matters more than the last
/// few percent of ratio.
pub(crate) const DEFAULT_LEVEL: u32 = 1;

/// Output produced per compress call at most.
const COMPRESS_CHUNK_MAX: usize = 256 * 1024;

/// Output produced per inflate call at most: large enough to keep call
/// overhead low, small enough that the size limit is checked often.
const INFLATE_CHUNK_MAX: usize = 256 * 1024;

/// Output produced per inflate call at least.
const INFLATE_CHUNK_MIN: usize = 4 * 1024;

/// What the server is willing to agree to. Each field applies to every
/// connection that negotiates permessage-deflate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeflateConfig {
    /// Reset the compressor after every server message, even when the
    /// client did not ask (RFC 7692 §7.1.1.1 allows the server to declare
    /// it). Saves nothing between messages in zlib, which keeps its state
    /// allocated, but stops one message's content from influencing the
    /// size of the next (RFC 7692 §8). Default `false`.
    pub(crate) server_no_context_takeover: bool,
    /// Ask clients to reset their compressor after every message (RFC 7692
    /// §7.1.1.2), so the server's inflater keeps no window between
    /// messages. Default `false`: better compression.
    pub(crate) client_no_context_takeover: bool,
    /// Largest window the server compresses with, 9 to 15 (clamped); a
    /// client may ask for less. Default 15 (32 KiB).
    pub(crate) server_max_window_bits: u8,
    /// Largest window the server asks clients to compress with, 9 to 15
    /// (clamped); sent only to clients that announce support for the
    /// parameter (RFC 7692 §7.1.2.2), others may use 15. Not 8: zlib-based
    /// clients cannot compress with it. Default 15.
    pub(crate) client_max_window_bits: u8,
    /// Compression level, 0 (stored) to 9 (best). Default
    /// [`DEFAULT_LEVEL`].
    pub(crate) level: u32,
}

impl Default for DeflateConfig {
    fn default() -> DeflateConfig {
        DeflateConfig {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: MAX_WINDOW_BITS,
            client_max_window_bits: MAX_WINDOW_BITS,
            level: DEFAULT_LEVEL,
        }
    }
}

/// What was agreed with one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeflateParams {
    /// The server resets its compressor after each message.
    pub(crate) server_no_context_takeover: bool,
    /// The client resets its compressor after each message, so the
    /// server's inflater starts afresh with each message.
    pub(crate) client_no_context_takeover: bool,
    /// Largest window the server may compress with, 8 to 15.
    pub(crate) server_max_window_bits: u8,
    /// Largest window the client may compress with, 8 to 15.
    pub(crate) client_max_window_bits: u8,
    /// Compression level for server messages.
    pub(crate) level: u32,
}

impl DeflateParams {
    /// Whether server messages are compressed at all: not when the client
    /// limited the server's window to 8 bits (see the module docs).
    pub(crate) fn compresses_outgoing(&self) -> bool {
        self.server_max_window_bits >= MIN_COMPRESS_WINDOW_BITS
    }
}

/// The outcome of a successful negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Negotiated {
    pub(crate) params: DeflateParams,
    /// The `Sec-WebSocket-Extensions` value of the 101 response.
    pub(crate) response: HeaderValue,
}

/// Picks the first acceptable permessage-deflate offer among the values of
/// the request's `Sec-WebSocket-Extensions` fields, in order (RFC 7692 §5:
/// offers are listed in the client's order of preference). Offers with an
/// unknown parameter, a duplicate or an invalid value are declined and the
/// next one is tried (RFC 7692 §7.1). A field that does not parse declines
/// compression altogether: the connection then works uncompressed.
pub(crate) fn negotiate<'a, I>(values: I, config: &DeflateConfig) -> Option<Negotiated>
where
    I: IntoIterator<Item = &'a HeaderValue>,
{
    let mut offers = Vec::new();
    for value in values {
        // RFC 6455 §9.1: several fields are one comma-separated list.
        let text = value.to_str().ok()?;
        parse_extensions(text, &mut offers).ok()?;
    }
    offers
        .iter()
        .filter(|offer| offer.name.eq_ignore_ascii_case(EXTENSION_NAME))
        .find_map(|offer| accept_offer(&offer.params, config))
}

/// One element of an extension list: a name and its parameters.
#[derive(Debug, PartialEq, Eq)]
struct Offer<'a> {
    name: &'a str,
    params: Vec<(&'a str, Option<Cow<'a, str>>)>,
}

/// Parses `1#extension` (RFC 6455 §9.1), with RFC 9110 §5.6.1 list rules:
/// empty elements are ignored.
fn parse_extensions<'a>(text: &'a str, out: &mut Vec<Offer<'a>>) -> Result<(), ()> {
    let mut p = Parser { text, pos: 0 };
    loop {
        p.skip_ows_and_commas();
        if p.at_end() {
            return Ok(());
        }
        let name = p.token()?;
        let mut params = Vec::new();
        loop {
            p.skip_ows();
            match p.peek() {
                Some(b';') => {
                    p.pos += 1;
                    p.skip_ows();
                    let param = p.token()?;
                    p.skip_ows();
                    let value = if p.peek() == Some(b'=') {
                        p.pos += 1;
                        p.skip_ows();
                        Some(p.value()?)
                    } else {
                        None
                    };
                    params.push((param, value));
                }
                Some(b',') | None => break,
                Some(_) => return Err(()),
            }
        }
        out.push(Offer { name, params });
    }
}

/// A cursor over a header value.
struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn skip_ows_and_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.pos += 1;
        }
    }

    /// RFC 9110 §5.6.2: `token = 1*tchar`.
    fn token(&mut self) -> Result<&'a str, ()> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(());
        }
        Ok(&self.text[start..self.pos])
    }

    /// A parameter value: a token, or a quoted-string whose content must be
    /// a token once unescaped (RFC 6455 §9.1).
    fn value(&mut self) -> Result<Cow<'a, str>, ()> {
        if self.peek() != Some(b'"') {
            return self.token().map(Cow::Borrowed);
        }
        self.pos += 1;
        let mut value = String::new();
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                // RFC 9110 §5.6.4: quoted-pair.
                Some(b'\\') => {
                    self.pos += 1;
                    let c = self.peek().ok_or(())?;
                    value.push(char::from(c));
                    self.pos += 1;
                }
                Some(c) => {
                    value.push(char::from(c));
                    self.pos += 1;
                }
                None => return Err(()),
            }
        }
        if value.is_empty() || !value.bytes().all(is_tchar) {
            return Err(());
        }
        Ok(Cow::Owned(value))
    }
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// Window bits: a decimal integer from 8 to 15 without leading zeroes
/// (RFC 7692 §7.1.2.1, §7.1.2.2).
fn parse_window_bits(value: &str) -> Option<u8> {
    match value.as_bytes() {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

/// Accepts one offer if its parameters are valid: the agreed parameters and
/// the response value.
fn accept_offer(
    params: &[(&str, Option<Cow<'_, str>>)],
    config: &DeflateConfig,
) -> Option<Negotiated> {
    let mut server_no_context_takeover = false;
    let mut client_no_context_takeover = false;
    let mut server_max_window_bits: Option<u8> = None;
    // `Some(None)`: the parameter without a value.
    let mut client_max_window_bits: Option<Option<u8>> = None;
    for (name, value) in params {
        if name.eq_ignore_ascii_case("server_no_context_takeover") {
            // RFC 7692 §7.1.1.1: no value; RFC 7692 §7.1: no duplicates.
            if server_no_context_takeover || value.is_some() {
                return None;
            }
            server_no_context_takeover = true;
        } else if name.eq_ignore_ascii_case("client_no_context_takeover") {
            // RFC 7692 §7.1.1.2: no value; RFC 7692 §7.1: no duplicates.
            if client_no_context_takeover || value.is_some() {
                return None;
            }
            client_no_context_takeover = true;
        } else if name.eq_ignore_ascii_case("server_max_window_bits") {
            // RFC 7692 §7.1.2.1: a value from 8 to 15 is required.
            if server_max_window_bits.is_some() {
                return None;
            }
            server_max_window_bits = Some(parse_window_bits(value.as_deref()?)?);
        } else if name.eq_ignore_ascii_case("client_max_window_bits") {
            // RFC 7692 §7.1.2.2: no value, or a value from 8 to 15.
            if client_max_window_bits.is_some() {
                return None;
            }
            client_max_window_bits = Some(match value {
                None => None,
                Some(value) => Some(parse_window_bits(value)?),
            });
        } else {
            // RFC 7692 §7.1: an offer with an unknown parameter is declined.
            return None;
        }
    }

    let own_server_bits = config
        .server_max_window_bits
        .clamp(MIN_COMPRESS_WINDOW_BITS, MAX_WINDOW_BITS);
    let own_client_bits = config
        .client_max_window_bits
        .clamp(MIN_COMPRESS_WINDOW_BITS, MAX_WINDOW_BITS);
    let agreed = DeflateParams {
        // RFC 7692 §7.1.1.1: the server may declare it even if not offered.
        server_no_context_takeover: server_no_context_takeover || config.server_no_context_takeover,
        // RFC 7692 §7.1.1.2: the server may ask for it; honour the client's hint too.
        client_no_context_takeover: client_no_context_takeover || config.client_no_context_takeover,
        // RFC 7692 §7.1.2.1: the client's limit binds the server (8 means: uncompressed).
        server_max_window_bits: server_max_window_bits
            .map_or(own_server_bits, |n| n.min(own_server_bits)),
        // RFC 7692 §7.1.2.2: without the parameter in the offer, the client may use 15.
        client_max_window_bits: match client_max_window_bits {
            Some(offered) => offered.unwrap_or(MAX_WINDOW_BITS).min(own_client_bits),
            None => MAX_WINDOW_BITS,
        },
        level: config.level.min(9),
    };

    let mut response = String::from(EXTENSION_NAME);
    if agreed.server_no_context_takeover {
        response.push_str("; server_no_context_takeover");
    }
    if agreed.client_no_context_takeover {
        response.push_str("; client_no_context_takeover");
    }
    // RFC 7692 §7.1.2.1: answer an offered limit with the same or a smaller value.
    if server_max_window_bits.is_some() {
        let _ = write!(
            response,
            "; server_max_window_bits={}",
            agreed.server_max_window_bits
        );
    }
    // RFC 7692 §7.1.2.2: only if offered, and only a value not above the offered one.
    if client_max_window_bits.is_some() && agreed.client_max_window_bits < MAX_WINDOW_BITS {
        let _ = write!(
            response,
            "; client_max_window_bits={}",
            agreed.client_max_window_bits
        );
    }
    Some(Negotiated {
        params: agreed,
        // Built from tokens and digits only: always a valid header value.
        response: HeaderValue::from_str(&response).ok()?,
    })
}

/// Compresses server messages (RFC 7692 §7.2.1). The zlib stream is
/// allocated on the first message, so connections that never send pay
/// nothing.
pub(crate) struct Deflater {
    stream: Option<Compress>,
    level: Compression,
    window_bits: u8,
    no_context_takeover: bool,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater")
            .field("allocated", &self.stream.is_some())
            .field("window_bits", &self.window_bits)
            .field("no_context_takeover", &self.no_context_takeover)
            .finish()
    }
}

impl Deflater {
    /// A compressor for the agreed parameters, or `None` when server
    /// messages go uncompressed.
    pub(crate) fn new(params: &DeflateParams) -> Option<Deflater> {
        params.compresses_outgoing().then(|| Deflater {
            stream: None,
            level: Compression::new(params.level),
            window_bits: params.server_max_window_bits,
            no_context_takeover: params.server_no_context_takeover,
        })
    }

    /// Appends the compressed form of a whole message to `dst`, without the
    /// trailing `00 00 ff ff`. Returns `false`, with `dst` unchanged, if
    /// zlib failed: the message must then be sent uncompressed, and the
    /// next one starts a fresh stream (always decodable by the client).
    pub(crate) fn compress(&mut self, input: &[u8], dst: &mut BytesMut) -> bool {
        let (level, bits) = (self.level, self.window_bits);
        let stream = self
            .stream
            .get_or_insert_with(|| Compress::new_with_window_bits(level, false, bits));
        let start = dst.len();
        let mut rest = input;
        let done = loop {
            let used = dst.len();
            // Deflate output can exceed its input by a few bytes per block,
            // plus the flush: a little slack avoids a second call. Large
            // messages go in chunks, so `dst` grows with the output only.
            let room = (rest.len() + rest.len() / 64 + 64).min(COMPRESS_CHUNK_MAX);
            dst.resize(used + room, 0);
            let (in_before, out_before) = (stream.total_in(), stream.total_out());
            // RFC 7692 §7.2.1: compress, then flush to a byte boundary (sync flush).
            let result = stream.compress(rest, &mut dst[used..], FlushCompress::Sync);
            let consumed = counter_delta(stream.total_in(), in_before);
            let produced = counter_delta(stream.total_out(), out_before);
            dst.truncate(used + produced);
            rest = rest.get(consumed..).unwrap_or_default();
            if result.is_err() || (consumed == 0 && produced == 0 && !rest.is_empty()) {
                break false;
            }
            // The flush is complete once zlib stops short of the room it had.
            if rest.is_empty() && produced < room {
                break true;
            }
        };
        if !done {
            dst.truncate(start);
            stream.reset();
            return false;
        }
        // RFC 7692 §7.2.1: remove the 4 octets 0x00 0x00 0xff 0xff at the tail end.
        if dst[start..].ends_with(&TRAILER) {
            dst.truncate(dst.len() - TRAILER.len());
        }
        // RFC 7692 §7.1.1.1: without context takeover, each message starts afresh.
        if self.no_context_takeover {
            stream.reset();
        }
        true
    }
}

/// Inflates client messages (RFC 7692 §7.2.2) without ever producing more
/// than a given size. The zlib stream is allocated on the first compressed
/// message.
pub(crate) struct Inflater {
    stream: Option<Decompress>,
    window_bits: u8,
    no_context_takeover: bool,
    /// A BFINAL block ended the stream (RFC 7692 §7.2.3.4) and nothing has
    /// been read since: the stream was reset and is at its start.
    at_stream_start: bool,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("allocated", &self.stream.is_some())
            .field("window_bits", &self.window_bits)
            .field("no_context_takeover", &self.no_context_takeover)
            .finish()
    }
}

impl Inflater {
    /// An inflater for the agreed parameters.
    pub(crate) fn new(params: &DeflateParams) -> Inflater {
        Inflater {
            stream: None,
            // A window of 8 bits is read with 9: a larger window reads any
            // stream made with a smaller one, and it covers clients whose
            // zlib silently turned 8 into 9.
            window_bits: params
                .client_max_window_bits
                .clamp(MIN_COMPRESS_WINDOW_BITS, MAX_WINDOW_BITS),
            no_context_takeover: params.client_no_context_takeover,
            at_stream_start: false,
        }
    }

    /// Inflates the payload of one frame of a compressed message, appending
    /// to `out`, and fails as soon as `out` would grow past `max_len`: a
    /// small frame that inflates to gigabytes stops at the limit.
    pub(crate) fn inflate(
        &mut self,
        input: &[u8],
        out: &mut BytesMut,
        max_len: usize,
    ) -> Result<(), ProtocolError> {
        let bits = self.window_bits;
        let stream = self
            .stream
            .get_or_insert_with(|| Decompress::new_with_window_bits(false, bits));
        let mut rest = input;
        loop {
            let used = out.len();
            let allowance = max_len.saturating_sub(used);
            // One byte past the allowance tells "exactly at the limit" from "over".
            let room = rest
                .len()
                .saturating_mul(4)
                .clamp(INFLATE_CHUNK_MIN, INFLATE_CHUNK_MAX)
                .min(allowance.saturating_add(1));
            out.resize(used + room, 0);
            let (in_before, out_before) = (stream.total_in(), stream.total_out());
            let result = stream.decompress(rest, &mut out[used..], FlushDecompress::Sync);
            let consumed = counter_delta(stream.total_in(), in_before);
            let produced = counter_delta(stream.total_out(), out_before);
            out.truncate(used + produced);
            rest = rest.get(consumed..).unwrap_or_default();
            if consumed > 0 {
                self.at_stream_start = false;
            }
            let ended = match result {
                Err(_) => return Err(ProtocolError::InvalidCompressedData),
                Ok(Status::StreamEnd) => {
                    // RFC 7692 §7.2.3.4: a BFINAL block ends the deflate stream;
                    // what follows (at least the trailer) starts a new one.
                    stream.reset(false);
                    self.at_stream_start = true;
                    true
                }
                Ok(Status::Ok | Status::BufError) => false,
            };
            if out.len() > max_len {
                return Err(ProtocolError::MessageTooBig);
            }
            if rest.is_empty() && produced < room {
                return Ok(());
            }
            if consumed == 0 && produced == 0 && !ended {
                // No progress with input left and room to write: corrupt.
                return Err(ProtocolError::InvalidCompressedData);
            }
        }
    }

    /// Ends a compressed message: inflates the trailer the sender removed
    /// (RFC 7692 §7.2.2), then resets the stream if the client does not
    /// take its context over.
    pub(crate) fn finish(
        &mut self,
        out: &mut BytesMut,
        max_len: usize,
    ) -> Result<(), ProtocolError> {
        // RFC 7692 §7.2.2: append 0x00 0x00 0xff 0xff to the payload, then
        // inflate; unless a BFINAL block just ended the stream, which a
        // sender may do instead of a sync flush (RFC 7692 §7.2.3.4).
        let result = if self.at_stream_start {
            Ok(())
        } else {
            self.inflate(&TRAILER, out, max_len)
        };
        // RFC 7692 §7.1.1.2: without client context takeover, each message starts afresh.
        if self.no_context_takeover {
            if let Some(stream) = &mut self.stream {
                stream.reset(false);
            }
        }
        self.at_stream_start = false;
        result
    }
}

/// Bytes a zlib counter moved by in one call: at most the buffer given to
/// it, so it always fits.
fn counter_delta(after: u64, before: u64) -> usize {
    usize::try_from(after.saturating_sub(before)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offers(values: &[&str]) -> Vec<HeaderValue> {
        values
            .iter()
            .map(|v| HeaderValue::from_str(v).unwrap())
            .collect()
    }

    fn negotiate_with(values: &[&str], config: &DeflateConfig) -> Option<(DeflateParams, String)> {
        let values = offers(values);
        negotiate(&values, config).map(|n| (n.params, n.response.to_str().unwrap().to_owned()))
    }

    fn negotiate_default(values: &[&str]) -> Option<(DeflateParams, String)> {
        negotiate_with(values, &DeflateConfig::default())
    }

    fn params(
        server_nct: bool,
        client_nct: bool,
        server_bits: u8,
        client_bits: u8,
    ) -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: server_nct,
            client_no_context_takeover: client_nct,
            server_max_window_bits: server_bits,
            client_max_window_bits: client_bits,
            level: DEFAULT_LEVEL,
        }
    }

    fn compress_message(deflater: &mut Deflater, input: &[u8]) -> Vec<u8> {
        let mut dst = BytesMut::new();
        assert!(deflater.compress(input, &mut dst));
        dst.to_vec()
    }

    fn inflate_message(
        inflater: &mut Inflater,
        input: &[u8],
        max: usize,
    ) -> Result<Vec<u8>, ProtocolError> {
        let mut out = BytesMut::new();
        inflater.inflate(input, &mut out, max)?;
        inflater.finish(&mut out, max)?;
        Ok(out.to_vec())
    }

    // Negotiation.

    #[test]
    fn negotiate_plain_offer() {
        let (p, response) = negotiate_default(&["permessage-deflate"]).unwrap();
        assert_eq!(response, "permessage-deflate");
        assert_eq!(p, params(false, false, 15, 15));
        assert!(p.compresses_outgoing());
    }

    #[test]
    fn negotiate_no_offer_or_other_extensions_only() {
        assert_eq!(negotiate_default(&[]), None);
        assert_eq!(negotiate_default(&["x-webkit-deflate-frame"]), None);
    }

    #[test]
    fn negotiate_server_no_context_takeover() {
        let (p, response) =
            negotiate_default(&["permessage-deflate; server_no_context_takeover"]).unwrap();
        assert_eq!(response, "permessage-deflate; server_no_context_takeover");
        assert!(p.server_no_context_takeover);
    }

    #[test]
    fn negotiate_client_no_context_takeover_hint_is_confirmed() {
        let (p, response) =
            negotiate_default(&["permessage-deflate; client_no_context_takeover"]).unwrap();
        assert_eq!(response, "permessage-deflate; client_no_context_takeover");
        assert!(p.client_no_context_takeover);
    }

    #[test]
    fn negotiate_server_may_impose_no_context_takeover() {
        let config = DeflateConfig {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..DeflateConfig::default()
        };
        let (p, response) = negotiate_with(&["permessage-deflate"], &config).unwrap();
        assert_eq!(
            response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert_eq!(p, params(true, true, 15, 15));
    }

    #[test]
    fn negotiate_server_max_window_bits_is_answered_with_the_same_value() {
        for bits in 9..=15u8 {
            let offer = format!("permessage-deflate; server_max_window_bits={bits}");
            let (p, response) = negotiate_default(&[&offer]).unwrap();
            assert_eq!(response, offer);
            assert_eq!(p.server_max_window_bits, bits);
            assert!(p.compresses_outgoing());
        }
    }

    #[test]
    fn negotiate_server_max_window_bits_uses_the_smaller_of_offer_and_config() {
        let config = DeflateConfig {
            server_max_window_bits: 10,
            ..DeflateConfig::default()
        };
        let (p, response) =
            negotiate_with(&["permessage-deflate; server_max_window_bits=12"], &config).unwrap();
        assert_eq!(response, "permessage-deflate; server_max_window_bits=10");
        assert_eq!(p.server_max_window_bits, 10);
        // Not offered: the server uses its smaller window without saying so.
        let (p, response) = negotiate_with(&["permessage-deflate"], &config).unwrap();
        assert_eq!(response, "permessage-deflate");
        assert_eq!(p.server_max_window_bits, 10);
    }

    #[test]
    fn negotiate_server_max_window_bits_8_is_accepted_and_server_messages_go_uncompressed() {
        let (p, response) =
            negotiate_default(&["permessage-deflate; server_max_window_bits=8"]).unwrap();
        assert_eq!(response, "permessage-deflate; server_max_window_bits=8");
        assert_eq!(p.server_max_window_bits, 8);
        assert!(!p.compresses_outgoing());
        assert!(Deflater::new(&p).is_none());
        // Client messages still inflate.
        let mut inflater = Inflater::new(&p);
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(
            inflate_message(&mut inflater, &hello, 100).unwrap(),
            b"Hello"
        );
    }

    #[test]
    fn negotiate_autobahn_13_offers() {
        // What Autobahn|Testsuite's 13.* cases send (autobahn 0.10.9).
        let (p, response) = negotiate_default(&[
            "permessage-deflate; client_no_context_takeover; client_max_window_bits; server_max_window_bits=8",
        ])
        .unwrap();
        assert_eq!(
            response,
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=8"
        );
        assert!(!p.compresses_outgoing());
        let (_, response) = negotiate_default(&[
            "permessage-deflate; client_no_context_takeover; client_max_window_bits; server_no_context_takeover; server_max_window_bits=15",
        ])
        .unwrap();
        assert_eq!(
            response,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15"
        );
    }

    #[test]
    fn negotiate_client_max_window_bits_without_value() {
        let (p, response) =
            negotiate_default(&["permessage-deflate; client_max_window_bits"]).unwrap();
        assert_eq!(response, "permessage-deflate");
        assert_eq!(p.client_max_window_bits, 15);
        // With a server limit, the client is told.
        let config = DeflateConfig {
            client_max_window_bits: 10,
            ..DeflateConfig::default()
        };
        let (p, response) =
            negotiate_with(&["permessage-deflate; client_max_window_bits"], &config).unwrap();
        assert_eq!(response, "permessage-deflate; client_max_window_bits=10");
        assert_eq!(p.client_max_window_bits, 10);
    }

    #[test]
    fn negotiate_client_max_window_bits_with_value_is_confirmed() {
        let (p, response) =
            negotiate_default(&["permessage-deflate; client_max_window_bits=11"]).unwrap();
        assert_eq!(response, "permessage-deflate; client_max_window_bits=11");
        assert_eq!(p.client_max_window_bits, 11);
        let (p, response) =
            negotiate_default(&["permessage-deflate; client_max_window_bits=8"]).unwrap();
        assert_eq!(response, "permessage-deflate; client_max_window_bits=8");
        assert_eq!(p.client_max_window_bits, 8);
    }

    #[test]
    fn negotiate_client_max_window_bits_not_sent_to_clients_that_did_not_offer_it() {
        let config = DeflateConfig {
            client_max_window_bits: 9,
            ..DeflateConfig::default()
        };
        let (p, response) = negotiate_with(&["permessage-deflate"], &config).unwrap();
        assert_eq!(response, "permessage-deflate");
        assert_eq!(p.client_max_window_bits, 15);
    }

    #[test]
    fn negotiate_declines_invalid_offers_and_takes_the_next() {
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover=true",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=09",
            "permessage-deflate; client_max_window_bits=0",
            "permessage-deflate; client_max_window_bits=abc",
        ] {
            assert_eq!(negotiate_default(&[bad]), None, "{bad}");
            let (p, response) =
                negotiate_default(&[bad, "permessage-deflate; server_no_context_takeover"])
                    .expect(bad);
            assert_eq!(
                response, "permessage-deflate; server_no_context_takeover",
                "{bad}"
            );
            assert!(p.server_no_context_takeover);
        }
    }

    #[test]
    fn negotiate_takes_the_first_acceptable_offer_in_order() {
        let (p, _) = negotiate_default(&[
            "x-foo; bar=1, permessage-deflate; server_max_window_bits=10, permessage-deflate",
        ])
        .unwrap();
        assert_eq!(p.server_max_window_bits, 10);
        // Offers spread over several header fields keep their order.
        let (p, _) = negotiate_default(&[
            "permessage-deflate; bogus",
            "permessage-deflate; client_max_window_bits=12",
        ])
        .unwrap();
        assert_eq!(p.client_max_window_bits, 12);
    }

    #[test]
    fn negotiate_accepts_quoted_values_and_any_case_and_whitespace() {
        let (p, response) = negotiate_default(&[
            "Permessage-Deflate ;\tServer_Max_Window_Bits = \"10\" ; client_max_window_bits",
        ])
        .unwrap();
        assert_eq!(p.server_max_window_bits, 10);
        assert_eq!(response, "permessage-deflate; server_max_window_bits=10");
    }

    #[test]
    fn negotiate_declines_everything_on_a_malformed_header() {
        for bad in [
            "permessage-deflate; server_max_window_bits=\"10",
            "permessage-deflate; =10",
            "permessage-deflate server_no_context_takeover",
            "permessage-deflate; server_max_window_bits=\"1 0\"",
            "; permessage-deflate",
        ] {
            assert_eq!(negotiate_default(&[bad]), None, "{bad}");
            assert_eq!(
                negotiate_default(&[bad, "permessage-deflate"]),
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn negotiate_ignores_empty_list_elements() {
        let (_, response) = negotiate_default(&[" , permessage-deflate ,, "]).unwrap();
        assert_eq!(response, "permessage-deflate");
    }

    #[test]
    fn window_bits_values() {
        for (text, bits) in [
            ("8", Some(8)),
            ("9", Some(9)),
            ("10", Some(10)),
            ("15", Some(15)),
        ] {
            assert_eq!(parse_window_bits(text), bits);
        }
        for text in ["", "7", "16", "08", "+9", "1", "100", " 9"] {
            assert_eq!(parse_window_bits(text), None, "{text:?}");
        }
    }

    // Compression and decompression.

    #[test]
    fn compress_rfc_7692_hello() {
        let mut deflater = Deflater::new(&params(false, false, 15, 15)).unwrap();
        assert_eq!(
            compress_message(&mut deflater, b"Hello"),
            [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]
        );
    }

    #[test]
    fn compress_rfc_7692_second_hello_shares_the_window() {
        // The RFC's example bytes come from zlib's default level, 6.
        let mut deflater = Deflater::new(&DeflateParams {
            level: 6,
            ..params(false, false, 15, 15)
        })
        .unwrap();
        compress_message(&mut deflater, b"Hello");
        assert_eq!(
            compress_message(&mut deflater, b"Hello"),
            [0xf2, 0x00, 0x11, 0x00, 0x00]
        );
    }

    #[test]
    fn compress_without_context_takeover_repeats_the_first_output() {
        let mut deflater = Deflater::new(&params(true, false, 15, 15)).unwrap();
        let first = compress_message(&mut deflater, b"Hello");
        assert_eq!(compress_message(&mut deflater, b"Hello"), first);
    }

    #[test]
    fn compress_empty_message_is_a_single_zero_byte() {
        let mut deflater = Deflater::new(&params(false, false, 15, 15)).unwrap();
        assert_eq!(compress_message(&mut deflater, b""), [0x00]);
        let mut inflater = Inflater::new(&params(false, false, 15, 15));
        assert_eq!(inflate_message(&mut inflater, &[0x00], 10).unwrap(), b"");
    }

    #[test]
    fn inflate_rfc_7692_examples() {
        let p = params(false, false, 15, 15);
        // §7.2.3.1, one compressed block; and its two fragments.
        let mut inflater = Inflater::new(&p);
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        assert_eq!(
            inflate_message(&mut inflater, &hello, 100).unwrap(),
            b"Hello"
        );
        let mut inflater = Inflater::new(&p);
        let mut out = BytesMut::new();
        inflater.inflate(&hello[..3], &mut out, 100).unwrap();
        inflater.inflate(&hello[3..], &mut out, 100).unwrap();
        inflater.finish(&mut out, 100).unwrap();
        assert_eq!(&out[..], b"Hello");
        // §7.2.3.2, the second message uses the first one's window.
        let mut inflater = Inflater::new(&p);
        assert_eq!(
            inflate_message(&mut inflater, &hello, 100).unwrap(),
            b"Hello"
        );
        assert_eq!(
            inflate_message(&mut inflater, &[0xf2, 0x00, 0x11, 0x00, 0x00], 100).unwrap(),
            b"Hello"
        );
        // §7.2.3.3, a stored block.
        let mut inflater = Inflater::new(&p);
        let stored = [
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ];
        assert_eq!(
            inflate_message(&mut inflater, &stored, 100).unwrap(),
            b"Hello"
        );
        // §7.2.3.4, BFINAL set: the next message starts a new stream.
        let mut inflater = Inflater::new(&p);
        let bfinal = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        assert_eq!(
            inflate_message(&mut inflater, &bfinal, 100).unwrap(),
            b"Hello"
        );
        assert_eq!(
            inflate_message(&mut inflater, &hello, 100).unwrap(),
            b"Hello"
        );
        // Even without the padding octet §7.2.3.4 asks for.
        assert_eq!(
            inflate_message(&mut inflater, &bfinal[..7], 100).unwrap(),
            b"Hello"
        );
        assert_eq!(
            inflate_message(&mut inflater, &hello, 100).unwrap(),
            b"Hello"
        );
        // §7.2.3.5, two blocks in one message.
        let mut inflater = Inflater::new(&p);
        let two = [
            0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00,
        ];
        assert_eq!(inflate_message(&mut inflater, &two, 100).unwrap(), b"Hello");
    }

    #[test]
    fn inflate_rejects_garbage_after_a_final_block() {
        let mut inflater = Inflater::new(&params(false, false, 15, 15));
        // 0xff after the final block: BTYPE 11, reserved.
        let bfinal_then_more = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0xff];
        assert_eq!(
            inflate_message(&mut inflater, &bfinal_then_more, 100),
            Err(ProtocolError::InvalidCompressedData)
        );
    }

    #[test]
    fn inflate_rejects_corrupt_data() {
        let mut inflater = Inflater::new(&params(false, false, 15, 15));
        // Block type 11 is reserved in deflate.
        assert_eq!(
            inflate_message(&mut inflater, &[0xff, 0xff, 0xff], 100),
            Err(ProtocolError::InvalidCompressedData)
        );
    }

    #[test]
    fn inflate_stops_a_zip_bomb_at_the_limit() {
        // Level 6 makes the densest bomb.
        let mut deflater = Deflater::new(&DeflateParams {
            level: 6,
            ..params(false, false, 15, 15)
        })
        .unwrap();
        let bomb = compress_message(&mut deflater, &vec![0; 4 << 20]);
        assert!(bomb.len() < 8 * 1024, "{}", bomb.len());
        let limit = 64 * 1024;
        let mut inflater = Inflater::new(&params(false, false, 15, 15));
        let mut out = BytesMut::new();
        assert_eq!(
            inflater.inflate(&bomb, &mut out, limit),
            Err(ProtocolError::MessageTooBig)
        );
        // It stopped right past the limit, not after inflating everything.
        assert!(out.len() <= limit + 1, "{}", out.len());
        assert!(inflater.stream.as_ref().unwrap().total_out() <= limit as u64 + 1);
    }

    #[test]
    fn inflate_exactly_at_the_limit_passes() {
        let p = params(false, false, 15, 15);
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let compressed = compress_message(&mut Deflater::new(&p).unwrap(), &data);
        let out = inflate_message(&mut Inflater::new(&p), &compressed, data.len()).unwrap();
        assert_eq!(out, data);
        let err = inflate_message(&mut Inflater::new(&p), &compressed, data.len() - 1);
        assert_eq!(err, Err(ProtocolError::MessageTooBig));
    }

    #[test]
    fn round_trip_with_context_takeover_across_messages() {
        let p = params(false, false, 15, 15);
        let mut deflater = Deflater::new(&p).unwrap();
        let mut inflater = Inflater::new(&p);
        let messages: Vec<Vec<u8>> = (0..20)
            .map(|i| {
                format!("{{\"id\":{i},\"msg\":\"the same words again and again {i}\"}}")
                    .into_bytes()
            })
            .collect();
        let mut sizes = Vec::new();
        for message in &messages {
            let compressed = compress_message(&mut deflater, message);
            sizes.push(compressed.len());
            assert_eq!(
                &inflate_message(&mut inflater, &compressed, 1 << 20).unwrap(),
                message
            );
        }
        // Later messages compress better thanks to the shared window.
        assert!(sizes[10] < sizes[0], "{sizes:?}");
    }

    #[test]
    fn round_trip_without_context_takeover_inflates_each_message_alone() {
        let p = params(true, true, 15, 15);
        let mut deflater = Deflater::new(&p).unwrap();
        let mut inflater = Inflater::new(&p);
        for i in 0..5 {
            let message = format!("message number {i} message number {i}");
            let compressed = compress_message(&mut deflater, message.as_bytes());
            // A fresh inflater reads it: no reference to earlier messages.
            let fresh = inflate_message(&mut Inflater::new(&p), &compressed, 1 << 20).unwrap();
            assert_eq!(fresh, message.as_bytes());
            assert_eq!(
                inflate_message(&mut inflater, &compressed, 1 << 20).unwrap(),
                message.as_bytes()
            );
        }
    }

    #[test]
    fn round_trip_every_window_size_and_large_messages() {
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| ((i * 7) % 97 + (i / 1000) % 5) as u8)
            .collect();
        for bits in 9..=15 {
            let p = params(false, false, bits, bits);
            let mut deflater = Deflater::new(&p).unwrap();
            let mut inflater = Inflater::new(&p);
            for _ in 0..2 {
                let compressed = compress_message(&mut deflater, &data);
                assert_eq!(
                    inflate_message(&mut inflater, &compressed, 1 << 20).unwrap(),
                    data
                );
            }
        }
    }

    #[test]
    fn inflate_with_client_window_8_reads_9_bit_streams() {
        // A client whose zlib turned 8 into 9 still gets through.
        let sender = params(false, false, 9, 9);
        let receiver = params(false, false, 15, 8);
        let data: Vec<u8> = (0..5000u32).map(|i| ((i * 13) % 200) as u8).collect();
        let mut deflater = Deflater::new(&sender).unwrap();
        let mut inflater = Inflater::new(&receiver);
        for _ in 0..3 {
            let compressed = compress_message(&mut deflater, &data);
            assert_eq!(
                inflate_message(&mut inflater, &compressed, 1 << 20).unwrap(),
                data
            );
        }
    }

    #[test]
    fn incompressible_data_round_trips() {
        let p = params(false, false, 15, 15);
        let mut x = 0x1234_5678u32;
        // Over the compress chunk size: several calls per message.
        let data: Vec<u8> = (0..700_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let compressed = compress_message(&mut Deflater::new(&p).unwrap(), &data);
        assert_eq!(
            inflate_message(&mut Inflater::new(&p), &compressed, 1 << 20).unwrap(),
            data
        );
    }
}
