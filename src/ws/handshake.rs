//! The opening handshake, server side (RFC 6455 §4.2): validating the
//! client's upgrade request, `Sec-WebSocket-Accept`, and the
//! permessage-deflate negotiation (RFC 7692 §5); over HTTP/2, the extended
//! CONNECT of RFC 8441 instead of the upgrade. No I/O.

use super::deflate::{self, DeflateConfig, DeflateParams};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use std::fmt;

/// The GUID appended to the key (RFC 6455 §1.3, §4.2.2).
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The one protocol version this server speaks (RFC 6455 §4.2.1 item 6).
pub(crate) const VERSION: &str = "13";

/// Why an upgrade request was refused; the handler never starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeError {
    /// Not a GET (over HTTP/2: not a CONNECT with `:protocol websocket`).
    Method,
    /// Neither HTTP/1.1 nor HTTP/2.
    HttpVersion,
    /// No `Host` header and no authority in the request target.
    MissingHost,
    /// No `Upgrade` header with the `websocket` token.
    NotWebSocketUpgrade,
    /// No `upgrade` token in the `Connection` header(s).
    ConnectionNotUpgrade,
    /// No `Sec-WebSocket-Version` header, or more than one.
    MissingVersion,
    /// A `Sec-WebSocket-Version` other than 13.
    UnsupportedVersion,
    /// `Sec-WebSocket-Key` missing, repeated, or not 16 bytes in base64.
    InvalidKey,
}

impl HandshakeError {
    /// The status of the refusal: always 400, as mist answers every
    /// malformed upgrade. RFC 6455 §4.2.1 asks 400 for a request that breaks
    /// the rules; for an unsupported version §4.4 wants "an appropriate
    /// error code (such as 426)" plus `Sec-WebSocket-Version: 13`
    /// ([`HandshakeError::version_header`]), which 400 with the header is.
    pub(crate) fn status(self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }

    /// The `Sec-WebSocket-Version` header the refusal must carry, if any
    /// (RFC 6455 §4.2.2 item 4: the versions the server understands).
    pub(crate) fn version_header(self) -> Option<(HeaderName, HeaderValue)> {
        (self == HandshakeError::UnsupportedVersion).then(|| {
            (
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static(VERSION),
            )
        })
    }

    /// A one-line explanation.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            HandshakeError::Method => {
                "websocket upgrade must be a GET (over HTTP/2, a CONNECT with :protocol websocket)"
            }
            HandshakeError::HttpVersion => "websocket upgrade must be HTTP/1.1 or HTTP/2",
            HandshakeError::MissingHost => "missing host",
            HandshakeError::NotWebSocketUpgrade => "missing upgrade: websocket",
            HandshakeError::ConnectionNotUpgrade => "connection header lacks upgrade",
            HandshakeError::MissingVersion => "missing or repeated sec-websocket-version",
            HandshakeError::UnsupportedVersion => "unsupported sec-websocket-version",
            HandshakeError::InvalidKey => "invalid sec-websocket-key",
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for HandshakeError {}

/// An accepted upgrade: what the 101 response carries and what the
/// connection runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Handshake {
    /// The `Sec-WebSocket-Accept` value; `None` over HTTP/2, which has no
    /// key and answers `200` (RFC 8441 §5).
    pub(crate) accept: Option<HeaderValue>,
    /// The agreed permessage-deflate parameters, if any.
    pub(crate) deflate: Option<DeflateParams>,
    /// The `Sec-WebSocket-Extensions` value, if an extension was agreed.
    pub(crate) extensions: Option<HeaderValue>,
}

impl Handshake {
    /// Adds the headers of the 101 response (RFC 6455 §4.2.2 item 5), or
    /// of the 200 of an HTTP/2 extended CONNECT.
    pub(crate) fn write_headers(&self, headers: &mut HeaderMap) {
        if let Some(accept) = &self.accept {
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept.clone());
        }
        if let Some(extensions) = &self.extensions {
            headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, extensions.clone());
        }
    }

    /// The 101 Switching Protocols response (200 over HTTP/2).
    pub(crate) fn response<B>(&self, body: B) -> Response<B> {
        let mut response = Response::new(body);
        *response.status_mut() = match self.accept {
            Some(_) => StatusCode::SWITCHING_PROTOCOLS,
            None => StatusCode::OK,
        };
        self.write_headers(response.headers_mut());
        response
    }
}

/// Validates an upgrade request (RFC 6455 §4.2.1) and, if `deflate` is
/// given, negotiates permessage-deflate with the client's offers.
pub(crate) fn accept<T>(
    request: &Request<T>,
    deflate: Option<&DeflateConfig>,
) -> Result<Handshake, HandshakeError> {
    let headers = request.headers();
    if request.version() == Version::HTTP_2 {
        return accept_extended_connect(request, deflate);
    }
    // RFC 6455 §4.2.1 item 1: an HTTP/1.1 or higher GET request.
    if request.method() != Method::GET {
        return Err(HandshakeError::Method);
    }
    if request.version() != Version::HTTP_11 {
        return Err(HandshakeError::HttpVersion);
    }
    // RFC 6455 §4.2.1 item 2: a Host header field.
    if !headers.contains_key(header::HOST) && request.uri().authority().is_none() {
        return Err(HandshakeError::MissingHost);
    }
    // RFC 6455 §4.2.1 item 3: Upgrade holds "websocket", ASCII case-insensitive.
    if !has_token(headers, &header::UPGRADE, "websocket") {
        return Err(HandshakeError::NotWebSocketUpgrade);
    }
    // RFC 6455 §4.2.1 item 4: Connection holds the "Upgrade" token, case-insensitive.
    if !has_token(headers, &header::CONNECTION, "upgrade") {
        return Err(HandshakeError::ConnectionNotUpgrade);
    }
    // RFC 6455 §4.2.1 item 6 and §11.3.5: one Sec-WebSocket-Version, 13.
    let version =
        single(headers, &header::SEC_WEBSOCKET_VERSION).ok_or(HandshakeError::MissingVersion)?;
    if version.as_bytes() != VERSION.as_bytes() {
        return Err(HandshakeError::UnsupportedVersion);
    }
    // RFC 6455 §4.2.1 item 5 and §11.3.1: one key, base64 of 16 bytes.
    let key = single(headers, &header::SEC_WEBSOCKET_KEY).ok_or(HandshakeError::InvalidKey)?;
    if !is_valid_key(key.as_bytes()) {
        return Err(HandshakeError::InvalidKey);
    }
    let (deflate, extensions) = negotiate(headers, deflate);
    Ok(Handshake {
        accept: Some(accept_key(key.as_bytes())),
        deflate,
        extensions,
    })
}

/// RFC 8441 §4-§5: over HTTP/2 a WebSocket is a CONNECT with `:protocol`
/// `websocket` on a stream of its own; no `Upgrade`, `Connection` or key,
/// and the answer is a `200`. The version and extensions are as in
/// RFC 6455. The HTTP/2 engine hands such a request to the handler as the
/// GET it stands for, its `:protocol` left in the extensions: that GET is
/// what is accepted here.
fn accept_extended_connect<T>(
    request: &Request<T>,
    deflate: Option<&DeflateConfig>,
) -> Result<Handshake, HandshakeError> {
    let protocol = request.extensions().get::<h2::ext::Protocol>();
    if request.method() != Method::GET
        || !protocol.is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
    {
        return Err(HandshakeError::Method);
    }
    if request.uri().authority().is_none() {
        return Err(HandshakeError::MissingHost);
    }
    let headers = request.headers();
    let version =
        single(headers, &header::SEC_WEBSOCKET_VERSION).ok_or(HandshakeError::MissingVersion)?;
    if version.as_bytes() != VERSION.as_bytes() {
        return Err(HandshakeError::UnsupportedVersion);
    }
    let (deflate, extensions) = negotiate(headers, deflate);
    Ok(Handshake {
        accept: None,
        deflate,
        extensions,
    })
}

/// RFC 6455 §9.1: the server picks from the offered extensions.
fn negotiate(
    headers: &HeaderMap,
    deflate: Option<&DeflateConfig>,
) -> (Option<DeflateParams>, Option<HeaderValue>) {
    let negotiated = deflate.and_then(|config| {
        deflate::negotiate(headers.get_all(header::SEC_WEBSOCKET_EXTENSIONS), config)
    });
    match negotiated {
        Some(n) => (Some(n.params), Some(n.response)),
        None => (None, None),
    }
}

/// `Sec-WebSocket-Accept` for a key: base64 of the SHA-1 of the key (as
/// sent, not decoded) followed by the GUID (RFC 6455 §4.2.2 item 5.4).
pub(crate) fn accept_key(key: &[u8]) -> HeaderValue {
    let mut sha1 = sha1_smol::Sha1::new();
    sha1.update(key);
    sha1.update(GUID);
    let encoded = BASE64.encode(sha1.digest().bytes());
    // Base64 output is always a valid header value.
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The key decodes, with strict base64 and padding, to exactly 16 bytes
/// (RFC 6455 §4.1 item 7).
fn is_valid_key(key: &[u8]) -> bool {
    // 16 bytes are 24 base64 characters; checking first bounds the work.
    let mut decoded = [0; 18];
    key.len() == 24 && BASE64.decode_slice(key, &mut decoded) == Ok(16)
}

/// The value of a header that must appear exactly once.
fn single<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

/// Whether any of the header's comma-separated elements, across all its
/// fields, equals `token` ignoring ASCII case (RFC 9110 §5.3, §5.6.1).
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|element| element.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RFC 6455 §1.3 example key.
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn request() -> http::request::Builder {
        Request::get("/ws")
            .header("host", "example.com")
            .header("upgrade", "websocket")
            .header("connection", "Upgrade")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", KEY)
    }

    fn without(name: &str) -> Request<()> {
        let mut req = request().body(()).unwrap();
        req.headers_mut().remove(name);
        req
    }

    fn with(name: &'static str, value: &'static str) -> Request<()> {
        let mut req = request().body(()).unwrap();
        req.headers_mut()
            .insert(name, HeaderValue::from_static(value));
        req
    }

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        assert_eq!(accept_key(KEY.as_bytes()), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn handshake_valid_request_is_accepted() {
        let handshake = accept(&request().body(()).unwrap(), None).unwrap();
        assert_eq!(
            handshake.accept.clone().unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(handshake.deflate, None);
        let response = handshake.response(());
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        let h = response.headers();
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "Upgrade");
        assert_eq!(h["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(!h.contains_key("sec-websocket-extensions"));
    }

    #[test]
    fn handshake_rejects_other_methods() {
        let mut req = request().body(()).unwrap();
        *req.method_mut() = Method::POST;
        assert_eq!(accept(&req, None), Err(HandshakeError::Method));
    }

    #[test]
    fn handshake_rejects_http_1_0() {
        let mut req = request().body(()).unwrap();
        *req.version_mut() = Version::HTTP_10;
        assert_eq!(accept(&req, None), Err(HandshakeError::HttpVersion));
    }

    #[test]
    fn http2_takes_an_extended_connect_and_answers_200_without_a_key() {
        let connect = |method: Method, protocol: Option<&str>| {
            let mut req = Request::builder()
                .method(method)
                .version(Version::HTTP_2)
                .uri("https://example.com/chat")
                .header("sec-websocket-version", "13")
                .body(())
                .unwrap();
            if let Some(protocol) = protocol {
                req.extensions_mut()
                    .insert(h2::ext::Protocol::from(protocol));
            }
            req
        };
        // As the engine hands it to handlers: the GET it stands for.
        let handshake = accept(&connect(Method::GET, Some("websocket")), None).unwrap();
        assert_eq!(handshake.accept, None);
        let response = handshake.response(());
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get("upgrade").is_none());
        for refused in [
            connect(Method::GET, None),
            connect(Method::POST, Some("websocket")),
            // Only the engine's GET: a CONNECT it did not take as a
            // WebSocket has no tunnel to run on.
            connect(Method::CONNECT, Some("websocket")),
            connect(Method::CONNECT, None),
            connect(Method::CONNECT, Some("webtransport")),
        ] {
            assert_eq!(accept(&refused, None), Err(HandshakeError::Method));
        }
        let mut old = connect(Method::GET, Some("websocket"));
        old.headers_mut()
            .insert("sec-websocket-version", HeaderValue::from_static("8"));
        assert_eq!(accept(&old, None), Err(HandshakeError::UnsupportedVersion));
    }

    #[test]
    fn handshake_requires_a_host() {
        assert_eq!(
            accept(&without("host"), None),
            Err(HandshakeError::MissingHost)
        );
    }

    #[test]
    fn handshake_upgrade_token_is_case_insensitive() {
        for value in [
            "websocket",
            "WebSocket",
            "WEBSOCKET",
            "h2c, websocket",
            " websocket ",
        ] {
            assert!(accept(&with("upgrade", value), None).is_ok(), "{value}");
        }
    }

    #[test]
    fn handshake_rejects_missing_or_wrong_upgrade() {
        assert_eq!(
            accept(&without("upgrade"), None),
            Err(HandshakeError::NotWebSocketUpgrade)
        );
        for value in ["h2c", "websockets", "web socket", ""] {
            assert_eq!(
                accept(&with("upgrade", value), None),
                Err(HandshakeError::NotWebSocketUpgrade),
                "{value}"
            );
        }
    }

    #[test]
    fn handshake_connection_upgrade_among_tokens_and_fields() {
        for value in [
            "upgrade",
            "UPGRADE",
            "keep-alive, Upgrade",
            "Upgrade,keep-alive",
            "  upgrade  ",
        ] {
            assert!(accept(&with("connection", value), None).is_ok(), "{value}");
        }
        // Spread over several Connection fields.
        let mut req = without("connection");
        req.headers_mut()
            .append("connection", HeaderValue::from_static("keep-alive"));
        req.headers_mut()
            .append("connection", HeaderValue::from_static("Upgrade"));
        assert!(accept(&req, None).is_ok());
    }

    #[test]
    fn handshake_rejects_connection_without_upgrade() {
        assert_eq!(
            accept(&without("connection"), None),
            Err(HandshakeError::ConnectionNotUpgrade)
        );
        for value in ["keep-alive", "upgraded", "close, upgrade-insecure"] {
            assert_eq!(
                accept(&with("connection", value), None),
                Err(HandshakeError::ConnectionNotUpgrade)
            );
        }
    }

    #[test]
    fn handshake_version_must_be_13() {
        assert_eq!(
            accept(&without("sec-websocket-version"), None),
            Err(HandshakeError::MissingVersion)
        );
        for value in ["8", "12", "14", "13, 8", " 13x"] {
            let err = accept(&with("sec-websocket-version", value), None).unwrap_err();
            assert_eq!(err, HandshakeError::UnsupportedVersion, "{value}");
            assert_eq!(err.status(), StatusCode::BAD_REQUEST);
            let (name, value) = err.version_header().unwrap();
            assert_eq!(
                (name.as_str(), value.to_str().unwrap()),
                ("sec-websocket-version", "13")
            );
        }
        let mut req = request().body(()).unwrap();
        req.headers_mut()
            .append("sec-websocket-version", HeaderValue::from_static("13"));
        assert_eq!(accept(&req, None), Err(HandshakeError::MissingVersion));
    }

    #[test]
    fn handshake_key_must_be_base64_of_16_bytes() {
        assert_eq!(
            accept(&without("sec-websocket-key"), None),
            Err(HandshakeError::InvalidKey)
        );
        for key in [
            "",
            "dGhlIHNhbXBsZSBub25jZQ",       // no padding
            "dGhlIHNhbXBsZSBub25jZQ=",      // short padding
            "dGhlIHNhbXBsZSBub25jZXg=",     // 17 bytes
            "dGhlIHNhbXBsZSBub25j",         // 15 bytes
            "dGhlIHNhbXBsZSBub25jZ?==",     // not base64
            "dGhlIHNhbXBsZSBub25jZR==",     // non-canonical trailing bits
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAA", // 21 bytes
        ] {
            let err = accept(&with("sec-websocket-key", key), None).unwrap_err();
            assert_eq!(err, HandshakeError::InvalidKey, "{key:?}");
            assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        }
        let mut req = request().body(()).unwrap();
        req.headers_mut()
            .append("sec-websocket-key", HeaderValue::from_static(KEY));
        assert_eq!(accept(&req, None), Err(HandshakeError::InvalidKey));
    }

    #[test]
    fn handshake_negotiates_deflate_when_configured() {
        let req = request()
            .header(
                "sec-websocket-extensions",
                "permessage-deflate; client_max_window_bits",
            )
            .body(())
            .unwrap();
        let handshake = accept(&req, Some(&DeflateConfig::default())).unwrap();
        assert!(handshake.deflate.is_some());
        let response = handshake.response(());
        assert_eq!(
            response.headers()["sec-websocket-extensions"],
            "permessage-deflate"
        );
        // Not configured: no extension, even if offered.
        assert_eq!(accept(&req, None).unwrap().extensions, None);
    }

    #[test]
    fn handshake_reads_offers_from_several_extension_fields() {
        let req = request()
            .header("sec-websocket-extensions", "x-unknown")
            .header(
                "sec-websocket-extensions",
                "permessage-deflate; server_max_window_bits=10",
            )
            .body(())
            .unwrap();
        let handshake = accept(&req, Some(&DeflateConfig::default())).unwrap();
        assert_eq!(handshake.deflate.unwrap().server_max_window_bits, 10);
        assert_eq!(
            handshake.extensions.unwrap(),
            "permessage-deflate; server_max_window_bits=10"
        );
    }

    #[test]
    fn handshake_with_unusable_extensions_still_upgrades_without_them() {
        let req = request()
            .header("sec-websocket-extensions", "permessage-deflate; nonsense=1")
            .body(())
            .unwrap();
        let handshake = accept(&req, Some(&DeflateConfig::default())).unwrap();
        assert_eq!(handshake.deflate, None);
        assert_eq!(handshake.extensions, None);
    }
}
