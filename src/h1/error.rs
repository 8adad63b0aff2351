//! Errors of the HTTP/1.1 request head, and the one place that maps them to
//! a response status.

use http::StatusCode;
use std::fmt;

/// Why a request head was refused. Every variant closes the connection
/// after its error response: after a framing error the stream cannot be
/// trusted to be in sync any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// Malformed request line or header field, or a framing rule broken.
    BadRequest(&'static str),
    /// The head is larger than the configured limit.
    HeadTooLarge,
    /// More header fields than the configured limit.
    TooManyHeaders,
    /// The request target is longer than the configured limit.
    UriTooLong,
    /// An HTTP version other than 1.0 and 1.1.
    VersionNotSupported,
    /// A transfer coding this server cannot decode.
    NotImplemented(&'static str),
    /// The head did not arrive within the header read timeout.
    Timeout,
}

impl ParseError {
    /// The status this error is answered with.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            ParseError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ParseError::HeadTooLarge | ParseError::TooManyHeaders => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            ParseError::UriTooLong => StatusCode::URI_TOO_LONG,
            ParseError::VersionNotSupported => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            ParseError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ParseError::Timeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// A one-line explanation, sent as the error response's body.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            ParseError::BadRequest(why) | ParseError::NotImplemented(why) => why,
            ParseError::HeadTooLarge => "request head too large",
            ParseError::TooManyHeaders => "too many header fields",
            ParseError::UriTooLong => "request target too long",
            ParseError::VersionNotSupported => "HTTP version not supported",
            ParseError::Timeout => "request head not received in time",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
