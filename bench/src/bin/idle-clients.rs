//! Opens N keep-alive connections to 127.0.0.1:PORT, sends one GET /hello
//! on each and reads the answer, then holds them all open until stdin
//! closes. Prints `ready` once every connection has had its answer.
//!
//! With `--ws PATH`, each connection is a WebSocket instead: the upgrade
//! to ws://127.0.0.1:PORT/PATH (no extension offered), then one 2-byte
//! text message and its echo, so the server's side is fully set up and
//! has handled a message before it idles.
//!
//!     idle-clients PORT N [--ws PATH]

use std::io::Read;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until `done` holds for what has arrived.
async fn read_until(stream: &mut TcpStream, done: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 512];
    while !done(&seen) {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "server closed a connection");
        seen.extend_from_slice(&buf[..n]);
    }
    seen
}

async fn http(stream: &mut TcpStream) {
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nHost: bench\r\n\r\n")
        .await
        .unwrap();
    read_until(stream, |seen| {
        seen.windows(13).any(|w| w == b"Hello, world!")
    })
    .await;
}

async fn websocket(stream: &mut TcpStream, path: &str) {
    let upgrade = format!(
        "GET {path} HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(upgrade.as_bytes()).await.unwrap();
    let head = read_until(stream, |seen| seen.windows(4).any(|w| w == b"\r\n\r\n")).await;
    assert!(head.starts_with(b"HTTP/1.1 101"), "no upgrade: {head:?}");
    // FIN + text, masked, 2 bytes: "hi" under the mask 1 2 3 4.
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | 2, 1, 2, 3, 4];
    frame.extend(b"hi".iter().zip(mask).map(|(b, m)| b ^ m));
    stream.write_all(&frame).await.unwrap();
    let echo = read_until(stream, |seen| seen.len() >= 4).await;
    assert_eq!(echo, b"\x81\x02hi", "expected the echo of \"hi\"");
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).expect("PORT");
    let count: usize = args.next().and_then(|n| n.parse().ok()).expect("N");
    let ws_path = match args.next().as_deref() {
        None => None,
        Some("--ws") => Some(args.next().expect("--ws PATH")),
        Some(other) => panic!("unknown argument {other}"),
    };
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        match &ws_path {
            None => http(&mut stream).await,
            Some(path) => websocket(&mut stream, path).await,
        }
        held.push(stream);
    }
    println!("ready");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(held);
}
