//! The SSE fan-out load: opens CONNS event streams (`GET PATH` over plain
//! HTTP/1.1 on raw TCP) to 127.0.0.1:PORT and counts the events they
//! deliver (each ends with a blank line; chunked framing is decoded) over
//! SECONDS. One thread (current_thread runtime); the harness pins it to
//! its own CPU.
//!
//!     sse-load PORT PATH CONNS SECONDS
//!
//! Once every stream has its response head, it waits one second for the
//! streams to settle, then prints `start` and `stop` as the measured window
//! opens and closes (the harness samples the server's CPU then) and
//! `result events_per_s=… per_stream_per_s=… client_cpu=… ended=…`
//! (`ended`: streams the server closed early).

use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// How long every stream gets to answer its request.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// From the last response head to the window.
const SETTLE: Duration = Duration::from_secs(1);

struct Shared {
    events: AtomicU64,
    heads: AtomicUsize,
    ended: AtomicUsize,
    headed: Notify,
}

fn arg<T: std::str::FromStr>(it: &mut impl Iterator<Item = String>, name: &str) -> T {
    it.next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("usage: sse-load PORT PATH CONNS SECONDS: {name}"))
}

#[derive(Clone, Copy)]
enum Framing {
    /// Until the connection closes (no chunked coding).
    Close,
    /// Reading a chunk-size line (hex digits, then an ignored extension).
    Size { value: usize, extension: bool },
    /// Inside a chunk: bytes left.
    Data(usize),
    /// The CRLF after a chunk: bytes left.
    DataEnd(u8),
    /// The last chunk has been read.
    Done,
}

/// Counts events in the body: a `\n` right after a `\n` (ignoring `\r`)
/// ends one.
struct Events {
    framing: Framing,
    newline: bool,
}

impl Events {
    fn count(&mut self, data: &[u8]) -> u64 {
        let mut events = 0;
        for &b in data {
            match b {
                b'\n' if self.newline => {
                    events += 1;
                    self.newline = false;
                }
                b'\n' => self.newline = true,
                b'\r' => {}
                _ => self.newline = false,
            }
        }
        events
    }

    fn feed(&mut self, mut buf: &[u8]) -> u64 {
        let mut events = 0;
        while !buf.is_empty() {
            match self.framing {
                Framing::Close => {
                    events += self.count(buf);
                    buf = &[];
                }
                Framing::Size { value, extension } => {
                    let b = buf[0];
                    buf = &buf[1..];
                    self.framing = match b {
                        b'\n' if value == 0 => Framing::Done,
                        b'\n' => Framing::Data(value),
                        b'\r' => self.framing,
                        b';' => Framing::Size {
                            value,
                            extension: true,
                        },
                        _ if extension => self.framing,
                        _ => {
                            let digit = (b as char).to_digit(16).expect("a chunk size");
                            Framing::Size {
                                value: value * 16 + digit as usize,
                                extension,
                            }
                        }
                    };
                }
                Framing::Data(left) => {
                    let n = left.min(buf.len());
                    events += self.count(&buf[..n]);
                    buf = &buf[n..];
                    self.framing = if n == left {
                        Framing::DataEnd(2)
                    } else {
                        Framing::Data(left - n)
                    };
                }
                Framing::DataEnd(left) => {
                    buf = &buf[1..];
                    self.framing = if left == 1 {
                        Framing::Size {
                            value: 0,
                            extension: false,
                        }
                    } else {
                        Framing::DataEnd(left - 1)
                    };
                }
                Framing::Done => break,
            }
        }
        events
    }
}

/// One stream: its response head, then events until the server ends it.
async fn stream(mut socket: TcpStream, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut head = Vec::new();
    let (mut events, rest) = loop {
        let n = socket.read(&mut buf).await.expect("read the response head");
        assert!(n > 0, "the server closed a stream before its head");
        head.extend_from_slice(&buf[..n]);
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&head[..at]).to_ascii_lowercase();
            assert!(text.starts_with("http/1.1 200"), "answered {text:?}");
            let framing = if text.contains("\r\ntransfer-encoding: chunked") {
                Framing::Size {
                    value: 0,
                    extension: false,
                }
            } else {
                Framing::Close
            };
            let events = Events {
                framing,
                newline: false,
            };
            break (events, head.split_off(at + 4));
        }
    };
    shared.heads.fetch_add(1, Ordering::Relaxed);
    shared.headed.notify_one();
    let mut seen = events.feed(&rest);
    loop {
        if seen > 0 {
            shared.events.fetch_add(seen, Ordering::Relaxed);
        }
        let n = match socket.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        seen = events.feed(&buf[..n]);
        if matches!(events.framing, Framing::Done) {
            shared.events.fetch_add(seen, Ordering::Relaxed);
            break;
        }
    }
    shared.ended.fetch_add(1, Ordering::Relaxed);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut it = std::env::args().skip(1);
    let port: u16 = arg(&mut it, "PORT");
    let path: String = arg(&mut it, "PATH");
    let conns: usize = arg(&mut it, "CONNS");
    let seconds: f64 = arg(&mut it, "SECONDS");

    let shared = Arc::new(Shared {
        events: AtomicU64::new(0),
        heads: AtomicUsize::new(0),
        ended: AtomicUsize::new(0),
        headed: Notify::new(),
    });
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n"
    );
    for _ in 0..conns {
        let mut socket = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        socket.set_nodelay(true).unwrap();
        socket.write_all(request.as_bytes()).await.unwrap();
        tokio::spawn(stream(socket, Arc::clone(&shared)));
    }
    let deadline = tokio::time::Instant::now() + OPEN_TIMEOUT;
    while shared.heads.load(Ordering::Relaxed) < conns {
        if tokio::time::timeout_at(deadline, shared.headed.notified())
            .await
            .is_err()
        {
            panic!(
                "only {} of {conns} streams answered",
                shared.heads.load(Ordering::Relaxed)
            );
        }
    }
    tokio::time::sleep(SETTLE).await;

    let window = mist_bench::measure(&shared.events, seconds).await;
    println!(
        "result events_per_s={:.1} per_stream_per_s={:.2} client_cpu={:.3} ended={}",
        window.rate,
        window.rate / conns as f64,
        window.cpu,
        shared.ended.load(Ordering::Relaxed)
    );
    std::io::stdout().flush().unwrap();
    // Leaving closes every stream.
}
