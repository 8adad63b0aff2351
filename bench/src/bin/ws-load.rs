//! The WebSocket echo load: opens CONNS connections to
//! ws://127.0.0.1:PORT/PATH with tokio-tungstenite's client handshake,
//! keeps DEPTH text messages of SIZE bytes in flight on each (a new one
//! goes out for every echo that comes back), and counts echoes for
//! SECONDS. One thread (current_thread runtime); the harness pins it to
//! its own CPU.
//!
//!     ws-load PORT PATH CONNS DEPTH SECONDS [SIZE=128] [--frames tungstenite|lean]
//!
//! No permessage-deflate is offered (tungstenite has none, and the
//! handshake fails if a server negotiates it anyway), so every server does
//! the same work. Prints `start` and `stop` as the measured window opens
//! and closes (the harness samples the server's CPU then), then
//! `result messages_per_s=… client_cpu=… failed=…` (the client's CPU use
//! over the window as a fraction of one core: near 1.0 means the client,
//! not the server, may be the limit; `failed`: connections that broke off,
//! the first reason on stderr).
//!
//! Frames after the handshake:
//! - `lean` (the default): the connection is taken out of tokio-tungstenite
//!   and driven by hand: a run of ready-made masked frames per write, echoes
//!   checked (FIN, text, SIZE bytes) and counted by their headers. A
//!   load generator must cost less than the servers it measures, and
//!   tungstenite's per-message work (a fresh mask, copying and masking the
//!   payload, allocating and validating each echo) made the client the
//!   limit on this 2-core machine.
//! - `tungstenite`: every message through tokio-tungstenite's `Sink` and
//!   `Stream`, for comparison.
//!
//! Either way, echoes that arrive together are read in one go and their
//! replacements written at once.

use futures_util::{FutureExt, SinkExt, StreamExt};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;

struct Shared {
    echoes: AtomicU64,
    stop: AtomicBool,
    /// Connections that ended before the run did, and the first reason.
    failed: AtomicU64,
}

impl Shared {
    fn fail(&self, why: impl std::fmt::Display) {
        if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
            eprintln!("ws-load: a connection failed: {why}");
        }
    }
}

fn usage(what: &str) -> ! {
    panic!(
        "usage: ws-load PORT PATH CONNS DEPTH SECONDS [SIZE] [--frames tungstenite|lean]: {what}"
    )
}

fn arg<T: std::str::FromStr>(it: &mut impl Iterator<Item = String>, name: &str) -> T {
    it.next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| usage(name))
}

async fn connect(port: u16, path: &str) -> Ws {
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    stream.set_nodelay(true).unwrap();
    let request = format!("ws://127.0.0.1:{port}{path}")
        .into_client_request()
        .unwrap();
    let (ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("WebSocket handshake");
    assert!(
        !response.headers().contains_key("sec-websocket-extensions"),
        "the server negotiated an extension nobody offered"
    );
    ws
}

/// `tungstenite`: keeps `depth` messages in flight through tokio-tungstenite
/// until told to stop.
async fn drive_tungstenite(ws: Ws, payload: Utf8Bytes, depth: usize, shared: Arc<Shared>) {
    if let Err(why) = tungstenite_loop(ws, payload, depth, &shared).await {
        shared.fail(why);
    }
}

async fn tungstenite_loop(
    mut ws: Ws,
    payload: Utf8Bytes,
    depth: usize,
    shared: &Shared,
) -> Result<(), String> {
    let size = payload.len();
    let check = |message: Option<Result<Message, _>>| match message {
        Some(Ok(Message::Text(text))) if text.len() == size => Ok(()),
        other => Err(format!("expected a {size}-byte text echo, got {other:?}")),
    };
    let mut echoes = depth;
    loop {
        for _ in 0..echoes {
            ws.feed(Message::Text(payload.clone()))
                .await
                .map_err(|e| e.to_string())?;
        }
        ws.flush().await.map_err(|e| e.to_string())?;
        check(ws.next().await)?;
        echoes = 1;
        while echoes < depth {
            match ws.next().now_or_never() {
                Some(message) => {
                    check(message)?;
                    echoes += 1;
                }
                None => break,
            }
        }
        shared.echoes.fetch_add(echoes as u64, Ordering::Relaxed);
        if shared.stop.load(Ordering::Relaxed) {
            let _ = ws.close(None).await;
            return Ok(());
        }
    }
}

/// A client frame (FIN set, masked) of `opcode` carrying `payload`.
fn client_frame(opcode: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n @ 0..=125 => frame.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            frame.push(0x80 | 126);
            frame.extend((n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend((n as u64).to_be_bytes());
        }
    }
    frame.extend(mask);
    frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    frame
}

/// The header of the server's echo of a `size`-byte text message.
fn echo_header(size: usize) -> Vec<u8> {
    match size {
        0..=125 => vec![0x81, size as u8],
        126..=0xffff => [[0x81, 126].as_slice(), &(size as u16).to_be_bytes()].concat(),
        _ => [[0x81, 127].as_slice(), &(size as u64).to_be_bytes()].concat(),
    }
}

/// `lean`: the same load with the frames made and read by hand.
async fn drive_lean(ws: Ws, id: usize, size: usize, depth: usize, shared: Arc<Shared>) {
    if let Err(why) = lean_loop(ws, id, size, depth, &shared).await {
        shared.fail(why);
    }
}

async fn lean_loop(
    ws: Ws,
    id: usize,
    size: usize,
    depth: usize,
    shared: &Shared,
) -> Result<(), String> {
    let mut socket = ws.into_inner();
    // Any byte pattern does; each connection masks with its own key.
    let mask = (id as u32).wrapping_mul(0x9e37_79b9).to_be_bytes();
    let frame = client_frame(0x1, &vec![b'x'; size], mask);
    let burst = frame.repeat(depth);
    let header = echo_header(size);
    let echo_len = header.len() + size;
    let mut buf = vec![0u8; (depth * echo_len).max(64 * 1024)];
    let (mut start, mut end) = (0, 0);
    let mut echoes = depth;
    loop {
        socket
            .write_all(&burst[..echoes * frame.len()])
            .await
            .map_err(|e| format!("send: {e}"))?;
        echoes = 0;
        while echoes == 0 {
            if end == buf.len() {
                buf.copy_within(start..end, 0);
                (start, end) = (0, end - start);
            }
            let n = socket
                .read(&mut buf[end..])
                .await
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            end += n;
            while end - start >= echo_len {
                if !buf[start..].starts_with(&header) {
                    return Err(format!(
                        "expected a {size}-byte text echo, got a frame starting {:02x?}",
                        &buf[start..start + header.len()]
                    ));
                }
                start += echo_len;
                echoes += 1;
            }
            if start == end {
                (start, end) = (0, 0);
            }
        }
        shared.echoes.fetch_add(echoes as u64, Ordering::Relaxed);
        if shared.stop.load(Ordering::Relaxed) {
            let close = client_frame(0x8, &1000u16.to_be_bytes(), mask);
            let _ = socket.write_all(&close).await;
            return Ok(());
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut it = std::env::args().skip(1);
    let port: u16 = arg(&mut it, "PORT");
    let path: String = arg(&mut it, "PATH");
    let conns: usize = arg(&mut it, "CONNS");
    let depth: usize = arg(&mut it, "DEPTH");
    let seconds: f64 = arg(&mut it, "SECONDS");
    let (mut size, mut lean) = (128usize, true);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--frames" => match it.next().as_deref() {
                Some("lean") => lean = true,
                Some("tungstenite") => lean = false,
                _ => usage("--frames tungstenite|lean"),
            },
            n => size = n.parse().unwrap_or_else(|_| usage("SIZE")),
        }
    }
    assert!(depth >= 1 && conns >= 1);

    let shared = Arc::new(Shared {
        echoes: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        failed: AtomicU64::new(0),
    });
    let mut sockets = Vec::with_capacity(conns);
    for _ in 0..conns {
        sockets.push(connect(port, &path).await);
    }
    let payload = Utf8Bytes::from("x".repeat(size));
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(id, ws)| {
            let shared = Arc::clone(&shared);
            if lean {
                tokio::spawn(drive_lean(ws, id, size, depth, shared))
            } else {
                tokio::spawn(drive_tungstenite(ws, payload.clone(), depth, shared))
            }
        })
        .collect();

    // The window: SECONDS from now, every connection open (the first
    // round trip, well under a millisecond, falls inside it).
    let window = mist_bench::measure(&shared.echoes, seconds).await;
    shared.stop.store(true, Ordering::Relaxed);
    println!(
        "result messages_per_s={:.1} client_cpu={:.3} failed={}",
        window.rate,
        window.cpu,
        shared.failed.load(Ordering::Relaxed)
    );
    std::io::stdout().flush().unwrap();
    // Close politely, but never wait long for a server that does not answer.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        for task in tasks {
            let _ = task.await;
        }
    })
    .await;
    std::process::exit(0);
}
