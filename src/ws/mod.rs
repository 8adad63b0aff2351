//! The WebSocket protocol core (RFC 6455, RFC 7692): no I/O.
//!
//! Everything here takes buffers and returns values; the connection task
//! that owns the socket drives it:
//!
//! - [`handshake`] validates an upgrade request, computes
//!   `Sec-WebSocket-Accept` and negotiates `permessage-deflate`.
//! - [`frame`] decodes client frames (checks in RFC order, the payload limit
//!   before buffering, unmasking in place) and encodes server frames.
//! - [`message`] reassembles fragmented messages with control frames
//!   interleaved, validates text incrementally ([`utf8`]), inflates
//!   compressed messages under the size limit ([`deflate`]) and parses close
//!   frames ([`close`]); its encoder writes whole outgoing messages.
//!
//! Every protocol error is one [`ProtocolError`], and
//! [`ProtocolError::close_code`] is the one place that maps it to the close
//! code sent to the peer.

pub(crate) mod actor;
pub(crate) mod close;
pub(crate) mod deflate;
pub(crate) mod frame;
pub(crate) mod handshake;
pub(crate) mod message;
pub(crate) mod utf8;

use std::fmt;

pub(crate) use close::{CloseCode, CloseFrame};
pub(crate) use deflate::{DeflateConfig, DeflateParams};
pub(crate) use message::{Incoming, MessageDecoder, MessageEncoder};

/// Largest message accepted by default, counted after decompression: 1009
/// beyond it. tokio-tungstenite's default is 64 MiB, tokio-websockets' 64
/// MiB too; 16 MiB is what the issue asks and still far above what chat,
/// JSON or RPC traffic needs.
pub(crate) const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// Largest frame payload accepted by default: 1009 beyond it. The same as
/// the message limit, so a message may arrive as one frame; a smaller value
/// bounds the compressed bytes buffered per frame.
pub(crate) const DEFAULT_MAX_FRAME_SIZE: usize = DEFAULT_MAX_MESSAGE_SIZE;

/// Limits applied to what a client sends. Both are checked on the lengths
/// in frame headers before any payload is buffered, and the message limit
/// again on the bytes actually produced by decompression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Largest message, after decompression. Default
    /// [`DEFAULT_MAX_MESSAGE_SIZE`]; beyond it the connection is failed with
    /// 1009 (message too big).
    pub(crate) max_message_size: usize,
    /// Largest payload of one frame as sent on the wire (compressed or
    /// not). Default [`DEFAULT_MAX_FRAME_SIZE`]; beyond it: 1009.
    pub(crate) max_frame_size: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
        }
    }
}

/// Why the connection with a client must be failed (RFC 6455 §7.1.7). The
/// variants say which rule was broken; [`ProtocolError::close_code`] says
/// what to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProtocolError {
    /// RSV2 or RSV3 set, or RSV1 without a negotiated extension that
    /// defines it.
    ReservedBits,
    /// RSV1 (compressed) on a control frame or a continuation frame.
    CompressedNonFirstFrame,
    /// An opcode RFC 6455 reserves for future use.
    UnknownOpcode,
    /// A control frame without FIN.
    FragmentedControlFrame,
    /// A control frame with a payload over 125 bytes.
    ControlFrameTooLong,
    /// A 16- or 64-bit length that would have fit in fewer bytes, or a
    /// 64-bit length with its most significant bit set.
    NonMinimalLength,
    /// A client frame without a masking key.
    UnmaskedFrame,
    /// A continuation frame with no message in progress.
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is in progress.
    ExpectedContinuation,
    /// A close frame whose payload is one byte long.
    InvalidClosePayload,
    /// A close frame with a code that may not be sent on the wire.
    InvalidCloseCode,
    /// A text message, or a close reason, that is not UTF-8.
    InvalidUtf8,
    /// A compressed message that does not inflate.
    InvalidCompressedData,
    /// A frame or message over the configured limits.
    MessageTooBig,
}

impl ProtocolError {
    /// The close code that fails the connection for this error: the one
    /// place where errors meet codes.
    pub(crate) const fn close_code(self) -> CloseCode {
        match self {
            // RFC 6455 §7.4.1: 1007, data within a message inconsistent with its type.
            ProtocolError::InvalidUtf8 | ProtocolError::InvalidCompressedData => {
                CloseCode::INVALID_PAYLOAD
            }
            // RFC 6455 §7.4.1: 1009, a message too big to process.
            ProtocolError::MessageTooBig => CloseCode::MESSAGE_TOO_BIG,
            // RFC 6455 §7.4.1: 1002, everything else is a protocol error.
            ProtocolError::ReservedBits
            | ProtocolError::CompressedNonFirstFrame
            | ProtocolError::UnknownOpcode
            | ProtocolError::FragmentedControlFrame
            | ProtocolError::ControlFrameTooLong
            | ProtocolError::NonMinimalLength
            | ProtocolError::UnmaskedFrame
            | ProtocolError::UnexpectedContinuation
            | ProtocolError::ExpectedContinuation
            | ProtocolError::InvalidClosePayload
            | ProtocolError::InvalidCloseCode => CloseCode::PROTOCOL_ERROR,
        }
    }

    /// A short explanation, usable as the close reason (always under the
    /// 123 bytes a close reason may have).
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            ProtocolError::ReservedBits => "reserved bits set",
            ProtocolError::CompressedNonFirstFrame => {
                "compressed bit on a control or continuation frame"
            }
            ProtocolError::UnknownOpcode => "unknown opcode",
            ProtocolError::FragmentedControlFrame => "fragmented control frame",
            ProtocolError::ControlFrameTooLong => "control frame payload over 125 bytes",
            ProtocolError::NonMinimalLength => "payload length not minimally encoded",
            ProtocolError::UnmaskedFrame => "client frame not masked",
            ProtocolError::UnexpectedContinuation => "continuation frame without a message",
            ProtocolError::ExpectedContinuation => "new message before the previous one ended",
            ProtocolError::InvalidClosePayload => "close frame payload of one byte",
            ProtocolError::InvalidCloseCode => "invalid close code",
            ProtocolError::InvalidUtf8 => "invalid UTF-8",
            ProtocolError::InvalidCompressedData => "invalid compressed data",
            ProtocolError::MessageTooBig => "message too big",
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for ProtocolError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_error_reasons_fit_in_a_close_frame() {
        let all = [
            ProtocolError::ReservedBits,
            ProtocolError::CompressedNonFirstFrame,
            ProtocolError::UnknownOpcode,
            ProtocolError::FragmentedControlFrame,
            ProtocolError::ControlFrameTooLong,
            ProtocolError::NonMinimalLength,
            ProtocolError::UnmaskedFrame,
            ProtocolError::UnexpectedContinuation,
            ProtocolError::ExpectedContinuation,
            ProtocolError::InvalidClosePayload,
            ProtocolError::InvalidCloseCode,
            ProtocolError::InvalidUtf8,
            ProtocolError::InvalidCompressedData,
            ProtocolError::MessageTooBig,
        ];
        for err in all {
            assert!(err.as_str().len() <= 123, "{err}");
            let code = err.close_code().as_u16();
            assert!(matches!(code, 1002 | 1007 | 1009), "{err}: {code}");
        }
    }
}
