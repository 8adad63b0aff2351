//! WebSocket frames and messages, with and without permessage-deflate,
//! read whole and in pieces (see `mist::fuzzing::websocket`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mist::fuzzing::websocket(data));
