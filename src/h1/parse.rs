//! Parsing a request head (RFC 9112 §2–§7) into an `http::Request<()>` and
//! the framing of its body. No I/O: the input is the connection's read
//! buffer, and the head is split off it only once it is complete.

use super::error::ParseError;
use crate::body::Connection;
use crate::client_info::Identity;
use crate::config::{Config, MAX_HEADERS_CAP};
use bytes::{Bytes, BytesMut};
use http::uri::{self, Authority, PathAndQuery, Scheme};
use http::{header, HeaderName, HeaderValue, Method, Request, Uri, Version};
use std::mem::MaybeUninit;
use std::net::SocketAddr;

/// Room for the method, spaces and version around the request target when
/// deciding whether a still-incomplete request line is already too long.
const REQUEST_LINE_SLACK: usize = 64;

/// Header index entries kept on the stack; heads with more fields use a Vec.
/// An entry is four `u32` (a head is far below 4 GiB: `parse_head` refuses
/// one that is not), so that zeroing the array costs a 512-byte `memset`
/// per request instead of 1 KiB (−35 instructions of about 5,700).
const INLINE_INDICES: usize = 32;

/// How the body of a request is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// No body: neither `Content-Length` nor `Transfer-Encoding`, or a zero length.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A complete, validated request head.
#[derive(Debug)]
pub(crate) struct Head {
    /// With a [`Connection`] that has no body yet: the engine gives it
    /// one if the request has a body.
    pub request: Request<Connection>,
    pub body: BodyKind,
    /// The client allows the connection to stay open after this exchange.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before sending its body.
    pub expect_continue: bool,
}

/// Parses the head at the start of `buf`. On success the head's bytes are
/// split off `buf`; `Ok(None)` means more bytes are needed. `host` keeps
/// the authority of the connection's last `Host` header: the next request
/// almost always repeats it, and then it is not parsed again.
/// `identity`, a TLS client's certificates or a Unix socket's credentials,
/// goes into the request's extensions here,
/// where the request is built: inserted later, in the connection's loop,
/// the compiler copied every request's head once more, also on
/// connections without them (+120 instructions per request).
pub(crate) fn parse_head(
    buf: &mut BytesMut,
    config: &Config,
    scheme: &Scheme,
    host: &mut Option<Authority>,
    peer: Option<SocketAddr>,
    identity: &Identity,
) -> Result<Option<Head>, ParseError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let max_headers = config.max_headers.clamp(1, MAX_HEADERS_CAP);
    let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS_CAP];
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, &mut headers[..max_headers]) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            check_partial(buf, config)?;
            return Ok(None);
        }
        Err(err) => return Err(map_httparse_error(err, buf)),
    };
    if head_len > config.max_head_size || u32::try_from(head_len).is_err() {
        return Err(ParseError::HeadTooLarge);
    }

    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| s.as_ptr() as usize - base;
    // Within the head, which fits a `u32` (checked above).
    let narrow = |n: usize| n as u32;
    let method = req.method.unwrap_or_default();
    // Where the request line starts: httparse skips empty lines before it.
    let line_at = offset(method.as_bytes());
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| ParseError::BadRequest("invalid method"))?;
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let path = req.path.unwrap_or_default();
    if path.len() > config.max_request_target {
        return Err(ParseError::UriTooLong);
    }
    let path_range = offset(path.as_bytes())..offset(path.as_bytes()) + path.len();
    // The bound `check_partial` puts on a request line still arriving, so
    // that a line is refused however it arrives: with a target within its
    // limit, only a long method can exceed it (RFC 9112 §3: 501). After
    // the target come " HTTP/1.x" and a CRLF or LF: only a line that
    // ends near the bound needs its exact length.
    let line_max = config.max_request_target + REQUEST_LINE_SLACK;
    if path_range.end - line_at + " HTTP/1.1\r".len() > line_max {
        let line_end = buf[path_range.end..head_len]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(head_len, |at| path_range.end + at);
        if line_end - line_at > line_max {
            return Err(ParseError::NotImplemented("method too long"));
        }
    }

    // Positions of names and values, so that after the head is frozen into
    // `Bytes` every value can share it instead of being copied.
    let mut inline = [[0u32; 4]; INLINE_INDICES];
    let mut spilled = Vec::new();
    let indices: &mut [[u32; 4]] = if req.headers.len() <= INLINE_INDICES {
        &mut inline[..req.headers.len()]
    } else {
        spilled.resize(req.headers.len(), [0u32; 4]);
        &mut spilled
    };
    for (slot, h) in indices.iter_mut().zip(req.headers.iter()) {
        *slot = [
            narrow(offset(h.name.as_bytes())),
            narrow(h.name.len()),
            narrow(offset(h.value)),
            narrow(h.value.len()),
        ];
    }
    let indices: &[[u32; 4]] = indices;

    let head = buf.split_to(head_len).freeze();
    let mut framing = Framing::default();
    let mut headers = super::io::map_take(indices.len());
    NAMES.with(|names| {
        let mut names = names.borrow_mut();
        for &entry in indices {
            let [name_at, name_len, value_at, value_len] = entry.map(|n| n as usize);
            let name = names.name(&head[name_at..name_at + name_len])?;
            let value = HeaderValue::from_maybe_shared(head.slice(value_at..value_at + value_len))
                .map_err(|_| ParseError::BadRequest("invalid header field value"))?;
            if name == header::HOST {
                framing.hosts += 1;
                framing.host = Some(value_at..value_at + value_len);
            } else {
                framing.observe(&name, &value)?;
            }
            headers.append(name, value);
        }
        Ok::<_, ParseError>(())
    })?;

    let body = framing.body_kind(version)?;
    // RFC 9112 §3.2: a server MUST respond 400 to an HTTP/1.1 request that
    // lacks a Host header field, or has more than one.
    match (framing.hosts, version) {
        (0, Version::HTTP_11) => return Err(ParseError::BadRequest("missing host header")),
        (n, _) if n > 1 => return Err(ParseError::BadRequest("repeated host header")),
        _ => {}
    }
    let keep_alive = match version {
        // RFC 9112 §9.3: HTTP/1.1 persists unless "close" was sent; HTTP/1.0
        // only when it asked for "keep-alive".
        Version::HTTP_11 => !framing.close,
        _ => framing.keep_alive && !framing.close,
    };
    // The last request of a connection has no next one to keep its host for.
    let keep_host = if keep_alive { Some(host) } else { None };
    let host_value = framing.host.clone().map(|range| (&head, range));
    let uri = request_uri(
        &method,
        head.slice(path_range),
        host_value,
        scheme,
        keep_host,
    )?;
    // RFC 9110 §10.1.1: 100-continue only means something for an HTTP/1.1
    // request that has content.
    let expect_continue =
        framing.expect_continue && version == Version::HTTP_11 && body != BodyKind::Empty;

    let mut request = Request::new(Connection::new(peer, None));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    identity.insert_into(request.extensions_mut());
    Ok(Some(Head {
        request,
        body,
        keep_alive,
        expect_continue,
    }))
}

/// Sets of the header-name cache (a power of two), of two names each.
const NAME_SETS: usize = 64;

/// The longest name the cache keeps: longer ones are rare, and a client
/// must not make it hold much memory.
const NAME_CACHE_MAX: usize = 64;

thread_local! {
    static NAMES: std::cell::RefCell<NameCache> = const {
        std::cell::RefCell::new(NameCache {
            sets: [const { NameSet { ways: [None, None], recent: 0 } }; NAME_SETS],
        })
    };
}

/// Header names parsed recently on this worker thread. Clients repeat
/// their field names on every request: a browser sends about 16, half of
/// them names the `http` crate does not know, and those it copies into a
/// new allocation every time. A name found here costs a comparison of its
/// spelling and a clone (a reference count for an unknown name) instead of
/// a lookup, an allocation and a free. Two-way set-associative: a name
/// can be in either of its set's two places, and a new one replaces the
/// one used less recently.
struct NameCache {
    sets: [NameSet; NAME_SETS],
}

struct NameSet {
    ways: [Option<CachedName>; 2],
    /// The way that found or took a name last.
    recent: u8,
}

/// A name as a client spelled it (compared byte for byte: a plain memory
/// comparison, where one that ignores case goes byte by byte), and the
/// header name it is.
struct CachedName {
    spelling: [u8; NAME_CACHE_MAX],
    len: u8,
    name: HeaderName,
}

impl NameCache {
    /// The header name spelled `bytes` (already checked to be a token by
    /// httparse, and checked again on a miss).
    #[inline]
    fn name(&mut self, bytes: &[u8]) -> Result<HeaderName, ParseError> {
        let set = &mut self.sets[name_set(bytes)];
        for (way, cached) in set.ways.iter().enumerate() {
            if let Some(cached) = cached {
                if &cached.spelling[..usize::from(cached.len)] == bytes {
                    set.recent = way as u8;
                    return Ok(cached.name.clone());
                }
            }
        }
        let name = HeaderName::from_bytes(bytes)
            .map_err(|_| ParseError::BadRequest("invalid header field name"))?;
        if bytes.len() <= NAME_CACHE_MAX {
            let mut spelling = [0; NAME_CACHE_MAX];
            spelling[..bytes.len()].copy_from_slice(bytes);
            let way = usize::from(set.recent ^ 1);
            set.ways[way] = Some(CachedName {
                spelling,
                len: bytes.len() as u8,
                name: name.clone(),
            });
            set.recent = way as u8;
        }
        Ok(name)
    }
}

/// The cache set of a name: a multiplicative hash of its length and of its
/// first and last eight bytes (four, or each byte, for shorter names; no
/// copies, which would cost more than the lookup saves).
fn name_set(name: &[u8]) -> usize {
    const K1: u64 = 0x9E37_79B9_7F4A_7C15;
    const K2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    let (first, last) = match (name.first_chunk::<8>(), name.last_chunk::<8>()) {
        (Some(first), Some(last)) => (u64::from_le_bytes(*first), u64::from_le_bytes(*last)),
        _ => match (name.first_chunk::<4>(), name.last_chunk::<4>()) {
            (Some(first), Some(last)) => (
                u64::from(u32::from_le_bytes(*first)),
                u64::from(u32::from_le_bytes(*last)),
            ),
            _ => (name.iter().fold(0, |word, &b| word << 8 | u64::from(b)), 0),
        },
    };
    let mut hash = first.wrapping_mul(K1) ^ last.wrapping_mul(K2) ^ name.len() as u64;
    hash ^= hash >> 29;
    (hash.wrapping_mul(K1) >> (64 - NAME_SETS.trailing_zeros())) as usize
}

/// Decides early whether an incomplete head can still become acceptable.
fn check_partial(buf: &[u8], config: &Config) -> Result<(), ParseError> {
    // The request line so far (whole or not; after the empty lines that
    // may precede it): over the bound, the target (or, rarely, the
    // method) is too long however the rest arrives.
    let line = match buf.iter().position(|&b| b != b'\r' && b != b'\n') {
        Some(start) => &buf[start..],
        None => &[],
    };
    let line_len = line.iter().position(|&b| b == b'\n').unwrap_or(line.len());
    if line_len > config.max_request_target + REQUEST_LINE_SLACK {
        return Err(ParseError::UriTooLong);
    }
    if buf.len() >= config.max_head_size {
        return Err(ParseError::HeadTooLarge);
    }
    Ok(())
}

fn map_httparse_error(err: httparse::Error, buf: &[u8]) -> ParseError {
    match err {
        httparse::Error::TooManyHeaders => ParseError::TooManyHeaders,
        httparse::Error::Version => version_error(buf),
        httparse::Error::HeaderName => ParseError::BadRequest("malformed header field name"),
        httparse::Error::HeaderValue => ParseError::BadRequest("malformed header field value"),
        httparse::Error::NewLine => ParseError::BadRequest("malformed line ending"),
        _ => ParseError::BadRequest("malformed request line"),
    }
}

/// RFC 9110 §15.6.6: 505 for a well-formed version we do not speak; 400 for
/// something that is not an HTTP version at all.
fn version_error(buf: &[u8]) -> ParseError {
    // The empty lines a request may follow (RFC 9112 §2.2) are not it.
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n');
    let buf = &buf[start.unwrap_or(buf.len())..];
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let version = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    match version {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            ParseError::VersionNotSupported
        }
        [b'H', b'T', b'T', b'P', b'/', major] if major.is_ascii_digit() => {
            ParseError::VersionNotSupported
        }
        _ => ParseError::BadRequest("malformed HTTP version"),
    }
}

/// The longest `Host` value a connection keeps for its next request.
const HOST_CACHE_MAX: usize = 255;

/// Builds the request URI (RFC 9112 §3.2–§3.3): origin-form gets its
/// authority from `Host` (given as where its value lies in the head: it is
/// only sliced out, a reference count taken, when it is not the cached
/// one), absolute-form keeps its own, `*` only for OPTIONS,
/// authority-form only for CONNECT.
fn request_uri(
    method: &Method,
    target: Bytes,
    host: Option<(&Bytes, std::ops::Range<usize>)>,
    scheme: &Scheme,
    last_host: Option<&mut Option<Authority>>,
) -> Result<Uri, ParseError> {
    let host = match host {
        Some((head, range)) if !range.is_empty() => match last_host {
            Some(Some(last)) if last.as_str().as_bytes() == &head[range.clone()] => {
                Some(last.clone())
            }
            _ => {
                let value = &head[range.clone()];
                if !is_host(value) {
                    return Err(ParseError::BadRequest("invalid host header"));
                }
                let authority = match last_host {
                    // Kept for the next request: a copy, not a slice of
                    // the head, so that it does not pin the read buffer.
                    Some(last_host) if value.len() <= HOST_CACHE_MAX => {
                        let authority = Authority::from_maybe_shared(Bytes::copy_from_slice(value));
                        if let Ok(authority) = &authority {
                            *last_host = Some(authority.clone());
                        }
                        authority
                    }
                    // Not kept: the connection ends after this request, or
                    // the value is too long to hold between requests (a
                    // client's 60 KB Host).
                    _ => Authority::from_maybe_shared(head.slice(range)),
                };
                match authority {
                    Ok(authority) => Some(authority),
                    // The `http` crate refuses percent-encoding in a host
                    // name, which RFC 3986 allows: clients of Unix sockets
                    // put the socket's path there (`%2Frun%2Fapp.sock`).
                    // The URI goes without an authority; the field stays.
                    Err(_) if split_port(value).is_some_and(|(name, _)| is_reg_name(name)) => None,
                    Err(_) => return Err(ParseError::BadRequest("invalid host header")),
                }
            }
        },
        _ => None,
    };
    let invalid_target = || ParseError::BadRequest("invalid request target");
    if target.first() == Some(&b'/') {
        // RFC 9112 §3.2.3: CONNECT's target is an authority.
        if method == Method::CONNECT {
            return Err(invalid_target());
        }
        let len = target.len();
        let path = PathAndQuery::from_maybe_shared(target).map_err(|_| invalid_target())?;
        // The `http` crate drops a fragment (`#` and what follows); a
        // request-target has none (RFC 9112 §3.2), and a proxy that
        // compares the whole target would not match the path served.
        if path.as_str().len() != len {
            return Err(invalid_target());
        }
        let mut parts = uri::Parts::default();
        if let Some(authority) = host {
            parts.scheme = Some(scheme.clone());
            parts.authority = Some(authority);
        }
        parts.path_and_query = Some(path);
        return Uri::from_parts(parts).map_err(|_| invalid_target());
    }
    if &target[..] == b"*" {
        if method != Method::OPTIONS {
            return Err(ParseError::BadRequest(
                "asterisk-form target outside OPTIONS",
            ));
        }
        return Ok(Uri::from_static("*"));
    }
    // Absolute-form and authority-form are rare: checked byte by byte.
    if target.contains(&b'#') {
        return Err(invalid_target());
    }
    let uri = Uri::from_maybe_shared(target).map_err(|_| invalid_target())?;
    let Some(authority) = uri.authority() else {
        return Err(invalid_target());
    };
    // No userinfo (RFC 9110 §4.2.4), a numeric port, and CONNECT's port
    // given (RFC 9112 §3.2.3).
    let valid = is_host(authority.as_str().as_bytes())
        && if method == Method::CONNECT {
            uri.scheme().is_none() && uri.path_and_query().is_none() && authority.port().is_some()
        } else {
            uri.scheme().is_some()
        };
    if valid {
        Ok(uri)
    } else {
        Err(invalid_target())
    }
}

/// RFC 3986 §3.2.2 `reg-name`: unreserved characters, percent-encodings
/// and sub-delimiters.
fn is_reg_name(name: &[u8]) -> bool {
    let mut bytes = name.iter();
    while let Some(&byte) = bytes.next() {
        let fine = match byte {
            b'%' => {
                bytes.next().is_some_and(u8::is_ascii_hexdigit)
                    && bytes.next().is_some_and(u8::is_ascii_hexdigit)
            }
            _ => byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&byte),
        };
        if !fine {
            return false;
        }
    }
    true
}

/// RFC 9110 §7.2 and §4.2.1: `uri-host [ ":" port ]` with a host that is
/// not empty, a port of digits (possibly none), and no userinfo. (The
/// `http` crate's `Authority` checks the characters and the colons.)
pub(crate) fn is_host(value: &[u8]) -> bool {
    if value.contains(&b'@') {
        return false;
    }
    let Some((host, port)) = split_port(value) else {
        return false;
    };
    !host.is_empty()
        && match port.split_first() {
            None => true,
            Some((&b':', digits)) => digits.iter().all(u8::is_ascii_digit),
            Some(_) => false,
        }
}

/// An authority split before its port (whose colon stays with it): after
/// the `]` of an IP literal, else at the last colon. `None` for an IP
/// literal that is not closed.
fn split_port(value: &[u8]) -> Option<(&[u8], &[u8])> {
    if value.first() == Some(&b'[') {
        let end = value.iter().position(|&b| b == b']')?;
        return Some(value.split_at(end + 1));
    }
    Some(match value.iter().rposition(|&b| b == b':') {
        Some(colon) => value.split_at(colon),
        None => (value, &[][..]),
    })
}

/// What the header fields say about framing and the connection.
#[derive(Default)]
struct Framing {
    content_length: Option<u64>,
    transfer_encoding: bool,
    chunked: bool,
    other_coding: bool,
    hosts: usize,
    /// Where the (last) `Host` value lies in the head.
    host: Option<std::ops::Range<usize>>,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
}

impl Framing {
    fn observe(&mut self, name: &HeaderName, value: &HeaderValue) -> Result<(), ParseError> {
        if name == header::CONTENT_LENGTH {
            let length = parse_content_length(value.as_bytes())
                .ok_or(ParseError::BadRequest("malformed content-length"))?;
            // RFC 9110 §8.6: differing values are an unrecoverable error.
            if self.content_length.is_some_and(|seen| seen != length) {
                return Err(ParseError::BadRequest("conflicting content-length values"));
            }
            self.content_length = Some(length);
        } else if name == header::TRANSFER_ENCODING {
            self.transfer_encoding = true;
            for coding in tokens(value.as_bytes()) {
                // RFC 9112 §6.1: chunked is applied once, and last.
                if self.chunked {
                    return Err(ParseError::BadRequest(
                        "chunked is not the final transfer coding",
                    ));
                }
                if coding.eq_ignore_ascii_case(b"chunked") {
                    self.chunked = true;
                } else {
                    self.other_coding = true;
                }
            }
        } else if name == header::CONNECTION {
            for option in tokens(value.as_bytes()) {
                if option.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if option.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive = true;
                }
            }
        } else if name == header::EXPECT {
            self.expect_continue |=
                tokens(value.as_bytes()).any(|e| e.eq_ignore_ascii_case(b"100-continue"));
        }
        Ok(())
    }

    /// RFC 9112 §6.3, the message-length rules as they apply to requests:
    /// 1. Transfer-Encoding and Content-Length together: refuse (smuggling).
    /// 2. Transfer-Encoding in HTTP/1.0: faulty framing, refuse.
    /// 3. Transfer-Encoding whose final coding is not chunked: refuse (400);
    ///    a final chunked behind a coding we cannot decode: 501.
    /// 4. A valid Content-Length: that many bytes.
    /// 5. Neither: no body.
    fn body_kind(&self, version: Version) -> Result<BodyKind, ParseError> {
        if self.transfer_encoding {
            if self.content_length.is_some() {
                return Err(ParseError::BadRequest(
                    "both transfer-encoding and content-length",
                ));
            }
            if version == Version::HTTP_10 {
                return Err(ParseError::BadRequest(
                    "transfer-encoding in an HTTP/1.0 request",
                ));
            }
            if !self.chunked {
                return Err(ParseError::BadRequest(
                    "final transfer coding is not chunked",
                ));
            }
            if self.other_coding {
                return Err(ParseError::NotImplemented("transfer coding not supported"));
            }
            return Ok(BodyKind::Chunked);
        }
        Ok(match self.content_length {
            None | Some(0) => BodyKind::Empty,
            Some(n) => BodyKind::Length(n),
        })
    }
}

/// The non-empty, whitespace-trimmed elements of a comma-separated list.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|t| !t.is_empty())
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// `Content-Length = 1*DIGIT`, or a list of identical such values
/// (RFC 9110 §8.6). Anything else, or an overflow, is `None`.
fn parse_content_length(value: &[u8]) -> Option<u64> {
    let mut result = None;
    for element in value.split(|&b| b == b',').map(trim) {
        if element.is_empty() || !element.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = element.iter().try_fold(0u64, |acc, &d| {
            acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })?;
        if result.is_some_and(|seen| seen != n) {
            return None;
        }
        result = Some(n);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &str) -> Result<Option<Head>, ParseError> {
        parse_buf(&mut BytesMut::from(input))
    }

    /// Parses with the defaults, leaving what follows the head in `buf`.
    fn parse_buf(buf: &mut BytesMut) -> Result<Option<Head>, ParseError> {
        parse_head(
            buf,
            &Config::default(),
            &Scheme::HTTP,
            &mut None,
            None,
            &Identity::default(),
        )
    }

    fn head(input: &str) -> Head {
        parse(input).expect("valid").expect("complete")
    }

    #[test]
    fn origin_form_gets_authority_from_host() {
        let h = head("GET /a/b?x=1&y HTTP/1.1\r\nHost: example.com:8080\r\n\r\n");
        assert_eq!(h.request.uri(), "http://example.com:8080/a/b?x=1&y");
        assert_eq!(h.request.uri().query(), Some("x=1&y"));
        assert_eq!(h.body, BodyKind::Empty);
        assert!(h.keep_alive);
    }

    #[test]
    fn absolute_form_ignores_host() {
        let h = head("GET http://other.org/p HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_eq!(h.request.uri(), "http://other.org/p");
    }

    #[test]
    fn leaves_pipelined_bytes_in_buffer() {
        let mut buf = BytesMut::from("GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\n");
        parse_buf(&mut buf).unwrap().unwrap();
        assert_eq!(&buf[..], b"GET /2 HTTP/1.1\r\n");
    }

    #[test]
    fn partial_head_needs_more() {
        assert!(parse("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
    }

    #[test]
    fn duplicate_headers_keep_order_and_non_utf8_values_survive() {
        let mut buf = BytesMut::from(
            &b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nX-A: 2\r\nX-B: \xff\xfe\r\n\r\n"[..],
        );
        let h = parse_buf(&mut buf).unwrap().unwrap();
        let all: Vec<_> = h.request.headers().get_all("x-a").iter().collect();
        assert_eq!(all, ["1", "2"]);
        assert_eq!(h.request.headers()["x-b"].as_bytes(), b"\xff\xfe");
    }

    #[test]
    fn http10_closes_unless_keep_alive() {
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive);
    }

    #[test]
    fn content_length_rules() {
        assert_eq!(
            head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n").body,
            BodyKind::Length(5)
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n").body,
            BodyKind::Length(5)
        );
        for bad in ["5, 6", "+5", "0x5", "", "99999999999999999999999", "5 5"] {
            let input = format!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: {bad}\r\n\r\n");
            assert!(
                matches!(parse(&input), Err(ParseError::BadRequest(_))),
                "{bad}"
            );
        }
        let two = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
        assert!(matches!(parse(two), Err(ParseError::BadRequest(_))));
    }

    #[test]
    fn hrs_transfer_encoding_rules() {
        let te = |v: &str| {
            parse(&format!(
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: {v}\r\n\r\n"
            ))
        };
        assert_eq!(te("chunked").unwrap().unwrap().body, BodyKind::Chunked);
        assert_eq!(te("Chunked ").unwrap().unwrap().body, BodyKind::Chunked);
        assert!(matches!(te("gzip"), Err(ParseError::BadRequest(_))));
        assert!(matches!(
            te("chunked, gzip"),
            Err(ParseError::BadRequest(_))
        ));
        assert!(matches!(
            te("chunked, chunked"),
            Err(ParseError::BadRequest(_))
        ));
        assert!(matches!(
            te("gzip, chunked"),
            Err(ParseError::NotImplemented(_))
        ));
        let both =
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
        assert!(matches!(parse(both), Err(ParseError::BadRequest(_))));
        let http10 = "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(parse(http10), Err(ParseError::BadRequest(_))));
    }

    #[test]
    fn host_rules() {
        assert!(matches!(
            parse("GET / HTTP/1.1\r\n\r\n"),
            Err(ParseError::BadRequest(_))
        ));
        assert!(matches!(
            parse("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            Err(ParseError::BadRequest(_))
        ));
        // Found by a smuggling probe: a port that is no number, or no
        // host before the port, made a URI no client could have meant.
        for bad in ["u@a", "x:abc", "x:80x", "x:-1", ":80", "[::1]x", "[::1"] {
            assert!(
                matches!(
                    parse(&format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n")),
                    Err(ParseError::BadRequest(_))
                ),
                "{bad}"
            );
        }
        for good in ["a", "a:", "a:8080", "[::1]", "[::1]:80", "127.0.0.1:1"] {
            let request = head(&format!("GET /x HTTP/1.1\r\nHost: {good}\r\n\r\n")).request;
            assert_eq!(request.uri().authority().unwrap().as_str(), good);
        }
        // Percent-encoded (a Unix socket's path, as clients of Unix sockets
        // send it): valid, though the `http` crate's `Authority` cannot
        // hold it; the URI goes without, the field stays.
        for encoded in ["%2Frun%2Fapp.sock", "ex%41mple.com:80"] {
            let request = head(&format!("GET /x HTTP/1.1\r\nHost: {encoded}\r\n\r\n")).request;
            assert_eq!(request.uri(), "/x");
            assert_eq!(request.headers()["host"], encoded);
        }
        for bad in ["a%2", "a%zz", "a b", "a\"b"] {
            assert!(
                matches!(
                    parse(&format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n")),
                    Err(ParseError::BadRequest(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(head("GET /x HTTP/1.0\r\n\r\n").request.uri(), "/x");
    }

    #[test]
    fn obs_fold_is_refused() {
        let input = "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  continued\r\n\r\n";
        assert!(matches!(parse(input), Err(ParseError::BadRequest(_))));
    }

    #[test]
    fn versions() {
        assert_eq!(
            parse("GET / HTTP/2.0\r\nHost: a\r\n\r\n").unwrap_err(),
            ParseError::VersionNotSupported
        );
        assert_eq!(
            parse("GET / HTTP/1.2\r\nHost: a\r\n\r\n").unwrap_err(),
            ParseError::VersionNotSupported
        );
        assert!(matches!(
            parse("GET / HTXP/1.1\r\nHost: a\r\n\r\n"),
            Err(ParseError::BadRequest(_))
        ));
        // The empty line a request may follow is not its request line.
        assert_eq!(
            parse("\r\nGET / HTTP/2.0\r\nHost: a\r\n\r\n").unwrap_err(),
            ParseError::VersionNotSupported
        );
    }

    #[test]
    fn limits() {
        let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
        assert_eq!(parse(&long).unwrap_err(), ParseError::UriTooLong);
        let partial = format!("GET /{}", "a".repeat(9000));
        assert_eq!(parse(&partial).unwrap_err(), ParseError::UriTooLong);
        // A request line over the bound by its method is refused whole as
        // it is refused while it arrives (found by fuzzing).
        let method = "M".repeat(Config::default().max_request_target + REQUEST_LINE_SLACK);
        let long_method = format!("{method} / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(
            parse(&long_method).unwrap_err(),
            ParseError::NotImplemented("method too long")
        );
        assert!(parse(&long_method[..method.len() + 3]).is_err());
        let method = "M".repeat(40);
        assert!(parse(&format!("{method} / HTTP/1.1\r\nHost: a\r\n\r\n")).is_ok());
        // Empty lines before the request line are not part of it.
        let blank = "\r\n".repeat(400);
        assert!(parse(&format!("{blank}GET / HTTP/1.1\r\nHost: a\r\n\r\n")).is_ok());
        assert!(parse(&format!("{blank}GET / HTTP/1.1\r\n"))
            .unwrap()
            .is_none());
        let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n", "a".repeat(70_000));
        assert_eq!(parse(&big).unwrap_err(), ParseError::HeadTooLarge);
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
        assert_eq!(parse(&many).unwrap_err(), ParseError::TooManyHeaders);
    }

    #[test]
    fn expect_continue_only_with_a_body() {
        let with =
            "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
        assert!(head(with).expect_continue);
        let without = "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n";
        assert!(!head(without).expect_continue);
    }

    #[test]
    fn target_forms() {
        assert_eq!(
            head("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n").request.uri(),
            "*"
        );
        assert!(parse("GET * HTTP/1.1\r\nHost: a\r\n\r\n").is_err());
        assert_eq!(
            head("CONNECT a.org:443 HTTP/1.1\r\nHost: a.org:443\r\n\r\n")
                .request
                .uri(),
            "a.org:443"
        );
        assert!(parse("GET a.org HTTP/1.1\r\nHost: a\r\n\r\n").is_err());
        // Found by a smuggling probe: fragments (which the `http` crate
        // drops), userinfo, and CONNECT targets that are no authority
        // with a port.
        for bad in [
            "GET /hello#frag HTTP/1.1",
            "GET /hello?a#b HTTP/1.1",
            "GET http://x/hello#frag HTTP/1.1",
            "GET http://u:p@x/hello HTTP/1.1",
            "GET http://x:abc/ HTTP/1.1",
            "CONNECT /hello HTTP/1.1",
            "CONNECT x HTTP/1.1",
            "CONNECT u@x:443 HTTP/1.1",
        ] {
            assert!(
                matches!(
                    parse(&format!("{bad}\r\nHost: x\r\n\r\n")),
                    Err(ParseError::BadRequest(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            head("GET http://x:8080/a?b HTTP/1.1\r\nHost: x\r\n\r\n")
                .request
                .uri(),
            "http://x:8080/a?b"
        );
    }

    /// Every spelling of a name is the same lower-case name, whichever
    /// spelling the cache saw first.
    #[test]
    fn cached_names_keep_their_meaning() {
        for _ in 0..2 {
            for input in [
                "GET / HTTP/1.1\r\nHost: a\r\nX-Trace-Id: 1\r\nx-trace-id: 2\r\nX-TRACE-ID: 3\r\n\r\n",
                "GET / HTTP/1.1\r\nhost: a\r\nx-trace-id: 1\r\nX-Trace-Id: 2\r\nX-TRACE-ID: 3\r\n\r\n",
            ] {
                let request = head(input).request;
                let values: Vec<_> = request.headers().get_all("x-trace-id").iter().collect();
                assert_eq!(values, ["1", "2", "3"]);
                assert_eq!(request.headers().len(), 4);
                assert_eq!(request.headers()["host"], "a");
            }
        }
        // Longer than the cache keeps: still parsed every time.
        let long = "x".repeat(NAME_CACHE_MAX + 1);
        for _ in 0..2 {
            let input = format!("GET / HTTP/1.1\r\nHost: a\r\n{long}: v\r\n\r\n");
            assert_eq!(head(&input).request.headers()[long.as_str()], "v");
        }
    }

    /// Names that share a set evict each other and are parsed again; no
    /// name ever comes back as another.
    #[test]
    fn colliding_names_are_never_confused() {
        let mut by_set = std::collections::HashMap::<usize, Vec<String>>::new();
        let crowded = (0..)
            .map(|i| format!("x-name-{i}"))
            .find_map(|name| {
                let set = by_set.entry(name_set(name.as_bytes())).or_default();
                set.push(name);
                (set.len() == 4).then(|| set.clone())
            })
            .unwrap();
        for _ in 0..3 {
            for name in &crowded {
                let input = format!("GET / HTTP/1.1\r\nHost: a\r\n{name}: {name}\r\n\r\n");
                let request = head(&input).request;
                assert_eq!(request.headers()[name.as_str()], name.as_str());
                assert_eq!(request.headers().len(), 2);
            }
        }
    }
}
