//! Opens N keep-alive connections to 127.0.0.1:PORT, sends one GET /hello
//! on each and reads the answer, then holds them all open until stdin
//! closes. Prints `ready` once every connection has had its answer.
//!
//!     idle-clients PORT N

use std::io::Read;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).expect("PORT");
    let count: usize = args.next().and_then(|n| n.parse().ok()).expect("N");
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        stream
            .write_all(b"GET /hello HTTP/1.1\r\nHost: bench\r\n\r\n")
            .await
            .unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 512];
        while !seen.windows(13).any(|w| w == b"Hello, world!") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "server closed a connection");
            seen.extend_from_slice(&buf[..n]);
        }
        held.push(stream);
    }
    println!("ready");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(held);
}
