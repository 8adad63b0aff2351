//! Close frames (RFC 6455 §5.5.1) and status codes (RFC 6455 §7.4).

use super::ProtocolError;
use bytes::{BufMut, BytesMut};

/// Longest close reason: a control frame carries at most 125 bytes, two of
/// which are the code (RFC 6455 §5.5).
pub(crate) const MAX_REASON_LEN: usize = 123;

/// A status code that may appear in a close frame on the wire. Codes that
/// RFC 6455 §7.4.1 reserves for local use (1005, 1006, 1015) and codes
/// nobody has defined cannot be constructed, so the server never sends one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CloseCode(u16);

impl CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    pub(crate) const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the server is going down (shutdown) or the client navigates away.
    pub(crate) const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub(crate) const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1007: data inconsistent with the message type (invalid UTF-8 text).
    pub(crate) const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1009: a message too big to process.
    pub(crate) const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1011: the server hit an unexpected condition (a handler panic).
    pub(crate) const INTERNAL_ERROR: CloseCode = CloseCode(1011);

    /// The code, if it may be sent in a close frame.
    ///
    /// RFC 6455 §7.4.1 defines 1000-1003 and 1007-1011 for use on the wire
    /// and reserves 1004 (no meaning yet), 1005, 1006 and 1015 (local
    /// signals only). The IANA registry (§11.7) has since added 1012-1014,
    /// which Autobahn|Testsuite expects to be accepted. RFC 6455 §7.4.2:
    /// 0-999 are never used, 1000-2999 are reserved for the protocol and its
    /// extensions (so unregistered ones are invalid), 3000-3999 are for
    /// libraries and frameworks, 4000-4999 for applications.
    pub(crate) const fn new(code: u16) -> Option<CloseCode> {
        match code {
            1000..=1003 | 1007..=1014 | 3000..=4999 => Some(CloseCode(code)),
            _ => None,
        }
    }

    /// The code as a number.
    pub(crate) const fn as_u16(self) -> u16 {
        self.0
    }
}

/// The body of a close frame that carried one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CloseFrame {
    /// Why the peer closes.
    pub(crate) code: CloseCode,
    /// A reason for humans: UTF-8, at most [`MAX_REASON_LEN`] bytes.
    pub(crate) reason: String,
}

/// Parses the payload of a close frame received from the client: `None`
/// when it is empty (no status code).
pub(crate) fn parse_close(payload: &[u8]) -> Result<Option<CloseFrame>, ProtocolError> {
    match payload {
        // RFC 6455 §5.5.1: the body is optional.
        [] => Ok(None),
        // RFC 6455 §5.5.1: if there is a body, its first two bytes are the code.
        [_] => Err(ProtocolError::InvalidClosePayload),
        [hi, lo, reason @ ..] => {
            // RFC 6455 §7.4: only codes valid on the wire; 1005/1006/1015 never are.
            let code = CloseCode::new(u16::from_be_bytes([*hi, *lo]))
                .ok_or(ProtocolError::InvalidCloseCode)?;
            // RFC 6455 §5.5.1: the reason is UTF-8 encoded data.
            let reason = std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(Some(CloseFrame {
                code,
                reason: reason.to_owned(),
            }))
        }
    }
}

/// Writes a close payload: the code, then the reason cut at a character
/// boundary to fit [`MAX_REASON_LEN`] bytes. `None` writes an empty body.
pub(crate) fn encode_close_payload(dst: &mut BytesMut, close: Option<(CloseCode, &str)>) {
    if let Some((code, reason)) = close {
        let reason = truncate_reason(reason);
        dst.reserve(2 + reason.len());
        dst.put_u16(code.as_u16());
        dst.extend_from_slice(reason.as_bytes());
    }
}

/// The longest prefix of `reason` that fits in a close frame and ends on a
/// character boundary.
pub(crate) fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= MAX_REASON_LEN {
        return reason;
    }
    let mut end = MAX_REASON_LEN;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_code_validity_follows_rfc_6455_and_the_iana_registry() {
        let table: &[(u16, bool)] = &[
            (0, false),
            (999, false),
            (1000, true),
            (1001, true),
            (1002, true),
            (1003, true),
            (1004, false),
            (1005, false),
            (1006, false),
            (1007, true),
            (1008, true),
            (1009, true),
            (1010, true),
            (1011, true),
            (1012, true),
            (1013, true),
            (1014, true),
            (1015, false),
            (1016, false),
            (1100, false),
            (2000, false),
            (2999, false),
            (3000, true),
            (3999, true),
            (4000, true),
            (4999, true),
            (5000, false),
            (65535, false),
        ];
        for &(code, valid) in table {
            assert_eq!(CloseCode::new(code).is_some(), valid, "code {code}");
            let payload = code.to_be_bytes();
            let parsed = parse_close(&payload);
            if valid {
                assert_eq!(parsed.unwrap().unwrap().code.as_u16(), code);
            } else {
                assert_eq!(parsed, Err(ProtocolError::InvalidCloseCode), "code {code}");
            }
        }
    }

    #[test]
    fn close_payload_empty_means_no_status() {
        assert_eq!(parse_close(&[]), Ok(None));
    }

    #[test]
    fn close_payload_of_one_byte_is_a_protocol_error() {
        assert_eq!(
            parse_close(&[0x03]),
            Err(ProtocolError::InvalidClosePayload)
        );
    }

    #[test]
    fn close_reason_is_returned_when_utf8() {
        let mut payload = vec![0x03, 0xe8];
        payload.extend_from_slice("bye ✓".as_bytes());
        let close = parse_close(&payload).unwrap().unwrap();
        assert_eq!(close.code, CloseCode::NORMAL);
        assert_eq!(close.reason, "bye ✓");
    }

    #[test]
    fn close_reason_invalid_utf8_fails_with_1007() {
        let payload = [
            0x03, 0xe8, 0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xed, 0xa0, 0x80,
        ];
        let err = parse_close(&payload).unwrap_err();
        assert_eq!(err, ProtocolError::InvalidUtf8);
        assert_eq!(err.close_code(), CloseCode::INVALID_PAYLOAD);
    }

    #[test]
    fn close_payload_encodes_code_then_reason() {
        let mut dst = BytesMut::new();
        encode_close_payload(&mut dst, Some((CloseCode::GOING_AWAY, "shutdown")));
        assert_eq!(&dst[..], b"\x03\xe9shutdown");
        let mut empty = BytesMut::new();
        encode_close_payload(&mut empty, None);
        assert!(empty.is_empty());
    }

    #[test]
    fn close_reason_too_long_is_cut_at_a_char_boundary() {
        let reason = "é".repeat(100); // 200 bytes, two per char
        let cut = truncate_reason(&reason);
        assert_eq!(cut.len(), 122);
        let mut dst = BytesMut::new();
        encode_close_payload(&mut dst, Some((CloseCode::NORMAL, &reason)));
        assert!(dst.len() <= 125);
        assert!(parse_close(&dst).is_ok());
    }
}
