//! Limits and timeouts of the engines (HTTP/1.1, and HTTP/2 where they apply).
//!
//! Every value here has a builder method on [`crate::Builder`] whose doc
//! comment repeats the default and says what happens when the limit is hit.
//! The constants are the defaults; they are chosen to match what hyper,
//! actix-web and nginx ship, so that moving to mist changes no behaviour a
//! client could notice.

use std::time::Duration;

/// Largest request head (request line and headers) accepted: 431 beyond it.
/// nginx allows 4 × 8 KiB for headers; 64 KiB leaves room for large cookies.
pub const DEFAULT_MAX_HEAD_SIZE: usize = 64 * 1024;

/// Longest request target (path and query) accepted: 414 beyond it.
/// The same 8 KiB as nginx's `large_client_header_buffers`.
pub const DEFAULT_MAX_REQUEST_TARGET: usize = 8 * 1024;

/// Most request header fields accepted: 431 beyond it (hyper's default too).
pub const DEFAULT_MAX_HEADERS: usize = 100;

/// Hard upper bound for [`crate::Builder::max_headers`]: the header index
/// lives on the stack while parsing.
pub const MAX_HEADERS_CAP: usize = 512;

/// Bytes of an unread request body the server reads and throws away to keep
/// the connection open; a larger unread body closes the connection instead.
pub const DEFAULT_MAX_DISCARD: u64 = 256 * 1024;

/// Connections served at once; the accept loop waits for a free slot beyond
/// it (accept backpressure), so the kernel backlog absorbs the excess.
pub const DEFAULT_MAX_CONNECTIONS: usize = 25_000;

/// Time a client has to send a complete request head, counted from its first
/// byte (and, on a new connection, from the accept). Slow-loris protection.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Time an idle keep-alive connection is kept open between requests.
pub const DEFAULT_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(60);

/// Time a request-body read may wait for the next bytes from the client.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Time a response write may wait for the client to accept more bytes
/// (a stall, not a whole download) before the client is disconnected.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Time a client has to complete the TLS handshake after the accept; then
/// the connection is closed without a word. nginx's `ssl_handshake_timeout`
/// default is 60 s; 10 s is plenty for a real client and frees a slot held
/// by a silent one sooner.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2 streams a client may have open at once on one connection
/// (`SETTINGS_MAX_CONCURRENT_STREAMS`); hyper's default too. nginx allows
/// 128.
pub const DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS: u32 = 200;

/// Responses to pipelined requests gathered before one write (actix-http
/// caps its pipeline queue at 16 too): bounds the work done per read.
pub(crate) const MAX_PIPELINED: usize = 16;

/// Bytes gathered in the write buffer before it is flushed regardless.
pub(crate) const WRITE_BUFFER_FLUSH: usize = 64 * 1024;

/// Response bodies up to this size are copied next to the head, so that
/// head and body (and the responses of pipelined requests) go out in one
/// write; larger bodies are written as they are, with a vectored write.
pub(crate) const COPY_BODY_MAX: usize = 16 * 1024;

/// Bytes read from the socket at a time.
pub(crate) const READ_CHUNK: usize = 8 * 1024;

/// After an error response, the server keeps reading (and discarding) what
/// the client still sends for at most this long before closing, so that a
/// client busy sending its body sees the response rather than a reset.
pub(crate) const LINGER_TIME: Duration = Duration::from_secs(2);

/// And at most this many bytes.
pub(crate) const LINGER_BYTES: u64 = 1024 * 1024;

/// The engine's settings, fixed when the server starts.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub max_head_size: usize,
    pub max_request_target: usize,
    pub max_headers: usize,
    pub max_discard: u64,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub body_read_timeout: Duration,
    pub write_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    /// HTTP/2 is offered: `h2` in TLS' ALPN, and the prior-knowledge
    /// preface on plain connections.
    pub http2: bool,
    pub http2_max_concurrent_streams: u32,
    /// A PING this often on every HTTP/2 connection; `None`: none.
    pub http2_keep_alive_interval: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_head_size: DEFAULT_MAX_HEAD_SIZE,
            max_request_target: DEFAULT_MAX_REQUEST_TARGET,
            max_headers: DEFAULT_MAX_HEADERS,
            max_discard: DEFAULT_MAX_DISCARD,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            keep_alive_timeout: DEFAULT_KEEP_ALIVE_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            tls_handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            http2: false,
            http2_max_concurrent_streams: DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS,
            http2_keep_alive_interval: None,
        }
    }
}
