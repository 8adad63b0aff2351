//! Response encoding (RFC 9112 §4–§7): the status line, header fields, the
//! framing headers the engine owns, a cached `Date`, and chunk framing.

use bytes::{BufMut, BytesMut};
use http::{header, response, StatusCode};
use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// How the body of a response is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `content-length: N` (the body itself may still be left out for HEAD).
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked,
    /// The body runs until the connection closes (HTTP/1.0 streaming).
    CloseDelimited,
    /// No body and no length header: 1xx, 204 and 304 (RFC 9110 §6.4.1).
    NoBody,
}

/// A status whose response never has content (RFC 9110 §6.4.1).
pub(crate) fn status_has_no_body(status: StatusCode) -> bool {
    status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
}

/// Writes the head of a response into `dst`.
///
/// The engine owns `content-length`, `transfer-encoding` and, when it is
/// closing or keeping an HTTP/1.0 connection open, `connection`: values
/// the handler set for the first two are replaced by what the body really
/// is (`framing`, which honours a handler's valid `content-length` on a
/// stream and on a bodiless HEAD: see [`declared_length`]). A handler's
/// own `date` wins over the cached one, which is brought up to date first
/// when `check_clock` is set (see [`with_date`]).
///
/// Returns whether the handler's own `connection` field has the `close`
/// option: found on the way, where a lookup in the map beforehand would
/// cost a hash per response. When `connection` is `None` that field went
/// out as written, which already tells the client.
#[must_use]
pub(crate) fn encode_head(
    dst: &mut BytesMut,
    parts: &response::Parts,
    framing: Framing,
    connection: Option<&'static [u8]>,
    check_clock: bool,
) -> bool {
    dst.reserve(256);
    write_status_line(dst, parts.status);
    let mut has_date = false;
    let mut asks_to_close = false;
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        if name == header::CONNECTION {
            asks_to_close |= has_close_option(value.as_bytes());
            if connection.is_some() {
                continue;
            }
        }
        has_date |= name == header::DATE;
        dst.put_slice(name.as_str().as_bytes());
        dst.put_slice(b": ");
        dst.put_slice(value.as_bytes());
        dst.put_slice(b"\r\n");
    }
    if !has_date {
        dst.put_slice(b"date: ");
        with_date(check_clock, |date| dst.put_slice(date));
        dst.put_slice(b"\r\n");
    }
    match framing {
        Framing::Length(n) => {
            dst.put_slice(b"content-length: ");
            dst.put_slice(itoa::Buffer::new().format(n).as_bytes());
            dst.put_slice(b"\r\n");
        }
        Framing::Chunked => dst.put_slice(b"transfer-encoding: chunked\r\n"),
        Framing::CloseDelimited | Framing::NoBody => {}
    }
    if let Some(value) = connection {
        dst.put_slice(b"connection: ");
        dst.put_slice(value);
        dst.put_slice(b"\r\n");
    }
    dst.put_slice(b"\r\n");
    asks_to_close
}

/// The length a handler declared in a single, valid `content-length`
/// field: honoured for a stream it knows the length of and for a HEAD
/// answered without its body. Looked up only on those paths.
pub(crate) fn declared_length(headers: &http::HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let value = values.next()?.as_bytes();
    if values.next().is_some() || value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// A `connection` value that lists `close` (RFC 9110 §7.6.1).
fn has_close_option(value: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
}

fn write_status_line(dst: &mut BytesMut, status: StatusCode) {
    match status {
        StatusCode::OK => dst.put_slice(b"HTTP/1.1 200 OK\r\n"),
        _ => {
            dst.put_slice(b"HTTP/1.1 ");
            dst.put_slice(status.as_str().as_bytes());
            dst.put_u8(b' ');
            dst.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
            dst.put_slice(b"\r\n");
        }
    }
}

/// Writes the line that starts a chunk of `len` bytes (RFC 9112 §7.1).
pub(crate) fn encode_chunk_size(dst: &mut BytesMut, len: usize) {
    let mut digits = [0u8; 16];
    let mut n = len;
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    dst.put_slice(&digits[at..]);
    dst.put_slice(b"\r\n");
}

/// The last chunk and an empty trailer section.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The `Date` header value (IMF-fixdate, RFC 9110 §5.6.7), formatted at
/// most once a second per thread. hyper and actix-http cache it the same
/// way: formatting a date costs more than the rest of a small response head.
struct CachedDate {
    second: u64,
    text: [u8; 29],
}

thread_local! {
    static DATE: RefCell<CachedDate> = const { RefCell::new(CachedDate { second: u64::MAX, text: [0; 29] }) };
}

thread_local! {
    /// [`DATE`] as a header value, for HTTP/2's header maps: made once a
    /// second and then shared, not copied into every response. Kept apart
    /// from `DATE`, whose every use is on HTTP/1.1's hot path.
    static DATE_VALUE: RefCell<Option<http::HeaderValue>> = const { RefCell::new(None) };
}

/// The cached `Date` value as a header value, brought up to date first.
pub(crate) fn date_value() -> http::HeaderValue {
    with_date(true, |date| {
        DATE_VALUE.with(|cell| {
            let mut value = cell.borrow_mut();
            match &*value {
                Some(current) if current.as_bytes() == date => current.clone(),
                _ => {
                    let fresh =
                        http::HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(date))
                            .unwrap_or_else(|_| {
                                http::HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT")
                            });
                    *value = Some(fresh.clone());
                    fresh
                }
            }
        })
    })
}

/// Runs `f` with the cached `Date` value, read from the clock first if
/// `check_clock` is set or the thread has none yet. The engine checks it
/// for the first response of a batch and after a handler that waited; the
/// responses of pipelined requests answered straight after it reuse it, so
/// a batch of 16 reads the clock once (`clock_gettime` was 2-3 % of the
/// CPU under pipelining). Such a date is older than its response by the
/// time it took to run the batch's handlers back to back.
fn with_date<R>(check_clock: bool, f: impl FnOnce(&[u8]) -> R) -> R {
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if check_clock || cached.second == u64::MAX {
            // Not rustix's coarse clock, though it costs a fraction of this:
            // rustix's vDSO lookup crashes programs run under valgrind
            // (bytecodealliance/rustix#1559), and users debug servers there.
            let now = SystemTime::now();
            let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            if second != cached.second {
                let text = httpdate::fmt_http_date(now);
                if text.len() == cached.text.len() {
                    cached.text.copy_from_slice(text.as_bytes());
                    cached.second = second;
                }
            }
        }
        f(&cached.text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Response;

    fn head(resp: Response<()>, framing: Framing, conn: Option<&'static [u8]>) -> String {
        let (parts, ()) = resp.into_parts();
        let mut dst = BytesMut::new();
        let _ = encode_head(&mut dst, &parts, framing, conn, true);
        String::from_utf8(dst.to_vec()).unwrap()
    }

    #[test]
    fn owns_framing_headers_and_keeps_repeated_ones() {
        let resp = Response::builder()
            .header("set-cookie", "a=1")
            .header("set-cookie", "b=2")
            .header("content-length", "999")
            .header("transfer-encoding", "gzip")
            .body(())
            .unwrap();
        let text = head(resp, Framing::Length(5), Some(b"close"));
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("set-cookie: a=1\r\nset-cookie: b=2\r\n"));
        assert!(text.contains("content-length: 5\r\n"));
        assert!(!text.contains("999") && !text.contains("gzip"));
        assert!(text.contains("connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
        let date = text.lines().find(|l| l.starts_with("date: ")).unwrap();
        assert!(httpdate::parse_http_date(&date[6..]).is_ok(), "{date}");
    }

    #[test]
    fn handler_date_wins() {
        let resp = Response::builder()
            .header("date", "Sun, 06 Nov 1994 08:49:37 GMT")
            .body(())
            .unwrap();
        let text = head(resp, Framing::NoBody, None);
        assert_eq!(text.matches("date:").count(), 1);
        assert!(text.contains("1994"));
    }

    #[test]
    fn other_statuses_have_reason_phrases() {
        let resp = Response::builder().status(404).body(()).unwrap();
        assert!(head(resp, Framing::Length(0), None).starts_with("HTTP/1.1 404 Not Found\r\n"));
        let resp = Response::builder().status(599).body(()).unwrap();
        assert!(head(resp, Framing::Length(0), None).starts_with("HTTP/1.1 599 \r\n"));
    }

    #[test]
    fn chunk_sizes_are_lowercase_hex() {
        for (len, text) in [
            (0, "0\r\n"),
            (10, "a\r\n"),
            (4096, "1000\r\n"),
            (usize::MAX, "ffffffffffffffff\r\n"),
        ] {
            let mut dst = BytesMut::new();
            encode_chunk_size(&mut dst, len);
            assert_eq!(&dst[..], text.as_bytes());
        }
    }
}
