//! The HTTP/1.1 engine (RFC 9112).
//!
//! `parse`, `decode` and `encode` are pure functions over buffers; `io`
//! holds the connection's transport and the lazily read request body;
//! `dispatch` is the loop that drives one connection.

pub(crate) mod decode;
pub(crate) mod dispatch;
pub(crate) mod encode;
pub(crate) mod error;
pub(crate) mod io;
pub(crate) mod parse;
