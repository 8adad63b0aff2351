//! Request heads, bodies and the WebSocket upgrade check, read whole and
//! in pieces (see `mist::fuzzing::http1`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mist::fuzzing::http1(data));
