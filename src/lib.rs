//! # mist
//!
//! A small, complete and fast HTTP server library: a Rust port of the
//! Gleam web server [mist](https://hexdocs.pm/mist/). It speaks the `http`
//! crate's types and runs on tokio with its own HTTP/1.1 engine, and
//! HTTP/2 through the `h2` crate.
//!
//! ## A server in ten lines
//!
//! ```no_run
//! use http::{Request, Response};
//! use mist::{Connection, ResponseData};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), mist::StartError> {
//!     let server = mist::new(|_req: Request<Connection>| async {
//!         Response::new(ResponseData::from("Hello, world!"))
//!     })
//!     .port(4000)
//!     .start_http()
//!     .await?; // prints "Listening on http://127.0.0.1:4000"
//!     server.wait().await;
//!     Ok(())
//! }
//! ```
//!
//! ## Request bodies stay on the socket until you ask
//!
//! The handler receives a `Request<Connection>`. Nothing of the body has
//! been read yet: read it whole with [`read_body`] (with a size limit), or
//! piece by piece with [`stream()`]. A body the handler ignores is
//! discarded by the server after the response. If every handler wants the
//! whole body anyway, [`Builder::read_request_body`] reads it first and the
//! handler takes a `Request<Bytes>`.
//!
//! ```no_run
//! use http::{Request, Response, StatusCode};
//! use mist::{Connection, ReadError, ResponseData};
//!
//! async fn echo(req: Request<Connection>) -> Response<ResponseData> {
//!     let status = match mist::read_body(req, 4_000_000).await {
//!         Ok(req) => return Response::new(ResponseData::from(req.into_body())),
//!         Err(ReadError::ExcessBody) => StatusCode::PAYLOAD_TOO_LARGE,
//!         Err(_) => StatusCode::BAD_REQUEST,
//!     };
//!     let mut response = Response::new(ResponseData::empty());
//!     *response.status_mut() = status;
//!     response
//! }
//! ```
//!
//! ## Response bodies
//!
//! [`ResponseData::Bytes`] for bodies of known size (`content-length`),
//! [`ResponseData::chunked`] and [`ResponseData::chunked_stream`] for bodies
//! produced piece by piece (`transfer-encoding: chunked`), and
//! [`send_file`] (or [`send_open_file`] for a file the handler opened) for
//! files, which the kernel copies to the socket with `sendfile(2)`. The
//! connection itself goes to [`websocket`], [`server_sent_events`], or
//! code of the handler's own with [`ResponseData::upgrade`] (a `101`, or a
//! tunnel opened by a `2xx` to CONNECT).
//!
//! ## What the engine does for you
//!
//! Keep-alive and pipelining (answered in order, responses gathered into one
//! write), `Date` and `content-length` headers, `100 Continue` when the
//! handler first reads the body, a 500 when a handler panics (the server
//! carries on), and clear error statuses for bad input (400, 408, 414, 431,
//! 501, 505). Every limit and timeout is a [`Builder`] setting with a
//! documented default. [`Server::shutdown`] stops gracefully.
//!
//! ## HTTPS
//!
//! [`Builder::start_https`] (or [`start_https`]) takes PEM certificate and
//! key files and serves the same handler over TLS 1.3 and 1.2 (rustls);
//! every feature works the same, files are streamed through user space in
//! bounded pieces. [`Server::reload_certificate`] swaps the certificate
//! for new connections without a restart.
//!
//! ## HTTP/2
//!
//! [`Builder::with_http2`] serves HTTP/2 beside HTTP/1.1 with the same
//! handler: chosen with ALPN over HTTPS, or by a client with prior
//! knowledge over plain HTTP. Request bodies, every response body and the
//! limits work as they do for HTTP/1.1; a connection's requests run in
//! parallel.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod body;
mod builder;
mod client_info;
mod config;
mod file;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod h1;
mod http2;
mod io;
mod messages;
mod response;
mod server;
mod sse;
mod tls;
mod upgrade;
mod ws;

pub use body::{read_body, stream, BodyStream, Chunk, Connection, ReadError};
pub use builder::{new, Builder, Handler, ReadBody, Scheme};
pub use client_info::{
    get_client_info, ip_address_to_string, ClientInfoUnavailable, ConnectionInfo, IpAddress,
    PeerCredentials,
};
pub use file::{send_file, send_open_file, FileBody, FileError};
pub use messages::Messages;
pub use response::{BoxError, ChunkedBody, ResponseData};
pub use server::{Server, StartError};
pub use sse::{
    event, event_id, event_name, event_retry, send_event, server_sent_events,
    server_sent_events_with_options, SseConnection, SseEvent, SseOptions, SseStream,
};
pub use tls::{start_https, CertificateError, HttpsError, PeerCertificates};
pub use upgrade::{Upgrade, Upgraded};
pub use ws::actor::{
    send_binary_frame, send_text_frame, websocket, websocket_with_options, Next, SendError,
    WebsocketConnection, WebsocketMessage, WebsocketOptions, WebsocketSender, WebsocketUpgrade,
};

/// Re-exported: request bodies read whole are `bytes::Bytes`.
pub use bytes;

/// The README's examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
/// Re-exported so that handlers can name the request and response types
/// without a separate dependency on the `http` crate.
pub use http;
/// Re-exported: [`Builder::start_https_with_config`] takes a
/// `rustls::ServerConfig` of this version (0.23), and
/// [`PeerCertificates`] holds its `pki_types` certificates.
pub use rustls;
