//! The floor: answers every `\r\n\r\n` it reads with a canned response,
//! without parsing anything. What parsing and dispatch eat into.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ndate: Sat, 28 Nov 2026 00:00:00 GMT\r\ncontent-length: 13\r\n\r\nHello, world!";

#[tokio::main]
async fn main() {
    let args = mist_bench::args();
    let listener = TcpListener::bind(("127.0.0.1", args.port)).await.unwrap();
    mist_bench::listening(listener.local_addr().unwrap().port());
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            let mut out = Vec::with_capacity(16 * RESPONSE.len());
            let mut carry = 0usize; // bytes of a possible "\r\n\r\n" split across reads
            loop {
                let n = match stream.read(&mut buf[carry..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n + carry,
                };
                let mut start = 0;
                while let Some(at) = buf[start..n].windows(4).position(|w| w == b"\r\n\r\n") {
                    out.extend_from_slice(RESPONSE);
                    start += at + 4;
                }
                carry = (n - start).min(3);
                buf.copy_within(n - carry..n, 0);
                if !out.is_empty() {
                    if stream.write_all(&out).await.is_err() {
                        return;
                    }
                    out.clear();
                }
            }
        });
    }
}
