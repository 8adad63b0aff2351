//! WebSockets through real sockets: a real client (tokio-tungstenite) for
//! the happy paths, raw frames for the protocol's rules, and Python's
//! `websockets` for permessage-deflate.

mod support;

use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use mist::{Connection, Next, ResponseData, WebsocketMessage, WebsocketOptions};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{serve, Client, SAFETY_TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// What a test server reports about its WebSocket's life.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Init,
    Message(String),
    Closed,
    Shutdown,
    OnClose(usize),
}

type Events = mpsc::UnboundedSender<Event>;

/// An echo endpoint that reports every step, and acts on commands:
/// `stop`, `abnormal`, `panic`.
fn echo(
    req: Request<Connection>,
    events: Events,
    options: WebsocketOptions,
) -> Response<ResponseData> {
    let init_events = events.clone();
    let close_events = events.clone();
    mist::websocket_with_options(
        req,
        options,
        move |_conn| {
            let _ = init_events.send(Event::Init);
            (0usize, None::<mpsc::Receiver<String>>)
        },
        move |count, conn, message| {
            *count += 1;
            match message {
                WebsocketMessage::Text(text) => {
                    let _ = events.send(Event::Message(text.clone()));
                    match text.as_str() {
                        "stop" => return Next::Stop,
                        "abnormal" => return Next::AbnormalStop("asked to fail".into()),
                        "panic" => panic!("the handler panics on purpose"),
                        _ => {}
                    }
                    mist::send_text_frame(conn, &text).unwrap();
                }
                WebsocketMessage::Binary(data) => mist::send_binary_frame(conn, &data).unwrap(),
                WebsocketMessage::Closed => {
                    let _ = events.send(Event::Closed);
                }
                WebsocketMessage::Shutdown => {
                    let _ = events.send(Event::Shutdown);
                }
                WebsocketMessage::Custom(_) => {}
            }
            Next::Continue
        },
        move |count| {
            let _ = close_events.send(Event::OnClose(count));
        },
    )
}

async fn echo_server(options: WebsocketOptions) -> (mist::Server, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let server = serve(move |req: Request<Connection>| {
        let tx = tx.clone();
        let options = options.clone();
        async move { echo(req, tx, options) }
    })
    .await;
    (server, rx)
}

async fn next_event(events: &mut mpsc::UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(SAFETY_TIMEOUT, events.recv())
        .await
        .expect("an event within the safety timeout")
        .expect("the server is still running")
}

/// Waits for `on_close`, checking it is reported exactly once.
async fn on_close(events: &mut mpsc::UnboundedReceiver<Event>) -> usize {
    loop {
        if let Event::OnClose(count) = next_event(events).await {
            return count;
        }
    }
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

fn upgrade_request(extra: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// A client frame, masked as RFC 6455 §5.3 requires.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    raw_frame(fin, 0, opcode, payload, Some([0x37, 0xfa, 0x21, 0x3d]))
}

fn raw_frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (rsv << 4) | opcode];
    let masked = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(masked | n as u8),
        n if n < 65536 => {
            out.push(masked | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(masked | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(mask) => {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A raw WebSocket client after its handshake.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn connect(server: &mist::Server, extra_after_head: &[u8]) -> Raw {
        let mut stream = TcpStream::connect(("127.0.0.1", server.port()))
            .await
            .unwrap();
        let mut first = upgrade_request("").into_bytes();
        first.extend_from_slice(extra_after_head);
        stream.write_all(&first).await.unwrap();
        let mut raw = Raw {
            stream,
            buf: Vec::new(),
        };
        let head = raw.until(b"\r\n\r\n").await;
        let head = String::from_utf8(head).unwrap();
        assert!(
            head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "{head}"
        );
        assert!(
            head.contains(&format!("sec-websocket-accept: {ACCEPT}\r\n")),
            "{head}"
        );
        raw
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout(SAFETY_TIMEOUT, self.stream.read(&mut chunk))
            .await
            .expect("no hang")
        {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    async fn until(&mut self, end: &[u8]) -> Vec<u8> {
        loop {
            if let Some(at) = self.buf.windows(end.len()).position(|w| w == end) {
                return self.buf.drain(..at + end.len()).collect();
            }
            assert!(self.fill().await, "closed while waiting");
        }
    }

    /// The next server frame: (opcode, payload). Server frames are unmasked.
    async fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                let opcode = self.buf[0] & 0x0f;
                assert_eq!(self.buf[1] & 0x80, 0, "server frames are not masked");
                let (len, at) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => (
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    n if n < 126 => (n as usize, 2),
                    _ => (usize::MAX, 0),
                };
                if len != usize::MAX && self.buf.len() >= at + len {
                    let payload = self.buf[at..at + len].to_vec();
                    self.buf.drain(..at + len);
                    return Some((opcode, payload));
                }
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Reads until a close frame; its code.
    async fn close_code(&mut self) -> Option<u16> {
        while let Some((opcode, payload)) = self.read_frame().await {
            if opcode == 8 {
                return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
        None
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }
}

fn ws_url(server: &mist::Server, path: &str) -> String {
    format!("ws://127.0.0.1:{}{path}", server.port())
}

#[tokio::test]
async fn echo_text_and_binary_with_a_real_client() {
    let (server, mut events) = echo_server(WebsocketOptions::default()).await;
    let (mut ws, response) = tokio_tungstenite::connect_async(ws_url(&server, "/ws"))
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(next_event(&mut events).await, Event::Init);
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(big));
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    assert_eq!(on_close(&mut events).await, 3, "two messages and Closed");
}

#[tokio::test]
async fn malformed_upgrades_get_an_empty_400_and_no_handler() {
    let (server, mut events) = echo_server(WebsocketOptions::default()).await;
    for bad in [
        upgrade_request("").replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
        upgrade_request("").replace(KEY, "c2hvcnQ="),
        upgrade_request("").replace("Upgrade: websocket\r\n", ""),
        upgrade_request("").replace("Connection: Upgrade", "Connection: keep-alive"),
        upgrade_request("").replace("GET", "POST"),
    ] {
        let mut client = Client::connect(&server).await;
        client.send(&bad).await;
        let resp = client.response().await;
        assert_eq!(resp.status, 400, "{bad}");
        assert!(resp.body.is_empty());
        if bad.contains("Version: 8") {
            assert_eq!(resp.header("sec-websocket-version"), Some("13"));
        }
    }
    assert!(events.try_recv().is_err(), "no handler ever started");
}

/// A request body on an upgrade would be read as WebSocket frames, where a
/// proxy in front sees request content: the upgrade is refused with 400
/// and the connection closed, with or without the client waiting for
/// `100 Continue`. An empty body (`Content-Length: 0`) is no body.
#[tokio::test]
async fn hrs_an_upgrade_with_an_unread_body_is_refused_not_read_as_frames() {
    let (server, mut events) = echo_server(WebsocketOptions::default()).await;
    let frame_bytes = frame(true, 1, b"hi");
    let chunked = format!("{:x}\r\n", frame_bytes.len()).into_bytes();
    let cases: Vec<(String, Vec<u8>)> = vec![
        (
            upgrade_request(&format!("Content-Length: {}\r\n", frame_bytes.len())),
            frame_bytes.clone(),
        ),
        (
            upgrade_request("Transfer-Encoding: chunked\r\n"),
            [&chunked[..], &frame_bytes, b"\r\n0\r\n\r\n"].concat(),
        ),
        (
            upgrade_request("Content-Length: 8\r\nExpect: 100-continue\r\n"),
            Vec::new(),
        ),
    ];
    for (head, body) in cases {
        let mut client = Client::connect(&server).await;
        client.send([head.as_bytes(), &body].concat()).await;
        let resp = client.response().await;
        assert_eq!(resp.status, 400, "{head}");
        assert!(resp.closes(), "{head}");
        assert!(client.is_closed().await, "{head}");
    }
    assert!(events.try_recv().is_err(), "no handler ever started");

    let mut client = Client::connect(&server).await;
    client.send(upgrade_request("Content-Length: 0\r\n")).await;
    assert_eq!(client.head_response().await.status, 101);
}

/// A body the handler has read whole is no obstacle: what follows it is
/// the WebSocket's.
#[tokio::test]
async fn an_upgrade_whose_body_the_handler_read_is_served() {
    let (tx, _events) = mpsc::unbounded_channel();
    let server = serve(move |mut req: Request<Connection>| {
        let tx = tx.clone();
        async move {
            let mut body = mist::stream(&mut req);
            let mut read = 0;
            while let Some(chunk) = body.next().await {
                read += chunk.expect("the body arrives").len();
            }
            assert_eq!(read, 5);
            echo(req, tx, WebsocketOptions::default())
        }
    })
    .await;
    let mut stream = TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .unwrap();
    let head = upgrade_request("Content-Length: 5\r\n");
    stream
        .write_all(&[head.as_bytes(), b"hello", &frame(true, 1, b"after")].concat())
        .await
        .unwrap();
    let mut raw = Raw {
        stream,
        buf: Vec::new(),
    };
    let head = String::from_utf8(raw.until(b"\r\n\r\n").await).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_eq!(raw.read_frame().await, Some((1, b"after".to_vec())));
}

#[tokio::test]
async fn bytes_sent_right_after_the_handshake_are_not_lost() {
    let (server, _events) = echo_server(WebsocketOptions::default()).await;
    let mut raw = Raw::connect(&server, &frame(true, 1, b"early")).await;
    assert_eq!(raw.read_frame().await, Some((1, b"early".to_vec())));
}

#[tokio::test]
async fn fragments_are_reassembled_with_control_frames_between() {
    let (server, _events) = echo_server(WebsocketOptions::default()).await;
    let mut raw = Raw::connect(&server, b"").await;
    let mut bytes = frame(false, 1, b"frag");
    bytes.extend(frame(true, 9, b"ping!"));
    bytes.extend(frame(false, 0, b"men"));
    bytes.extend(frame(true, 0, b"ted"));
    raw.send(&bytes).await;
    assert_eq!(
        raw.read_frame().await,
        Some((10, b"ping!".to_vec())),
        "pong first"
    );
    assert_eq!(raw.read_frame().await, Some((1, b"fragmented".to_vec())));
}

#[tokio::test]
async fn invalid_utf8_split_across_fragments_closes_with_1007() {
    let (server, mut events) = echo_server(WebsocketOptions::default()).await;
    let mut raw = Raw::connect(&server, b"").await;
    // "é" is C3 A9; C3 followed by 28 can never be valid.
    let mut bytes = frame(false, 1, b"ok \xc3");
    bytes.extend(frame(true, 0, b"\x28 rest"));
    raw.send(&bytes).await;
    assert_eq!(raw.close_code().await, Some(1007));
    drop(raw);
    on_close(&mut events).await;
}

#[tokio::test]
async fn protocol_violations_close_with_1002() {
    let cases: [(&str, Vec<u8>); 4] = [
        ("unmasked", raw_frame(true, 0, 1, b"hi", None)),
        (
            "reserved bits",
            raw_frame(true, 0b010, 1, b"hi", Some([1, 2, 3, 4])),
        ),
        ("reserved opcode", frame(true, 3, b"hi")),
        ("oversized ping", frame(true, 9, &[0u8; 126])),
    ];
    for (name, bytes) in cases {
        let (server, mut events) = echo_server(WebsocketOptions::default()).await;
        let mut raw = Raw::connect(&server, b"").await;
        raw.send(&bytes).await;
        assert_eq!(raw.close_code().await, Some(1002), "{name}");
        drop(raw);
        on_close(&mut events).await;
    }
}

#[tokio::test]
async fn message_over_the_limit_closes_with_1009() {
    let (server, mut events) =
        echo_server(WebsocketOptions::default().max_message_size(1000)).await;
    let mut raw = Raw::connect(&server, b"").await;
    let mut bytes = frame(false, 2, &[1u8; 600]);
    bytes.extend(frame(true, 0, &[2u8; 600]));
    raw.send(&bytes).await;
    assert_eq!(raw.close_code().await, Some(1009));
    drop(raw);
    on_close(&mut events).await;
}

#[tokio::test]
async fn client_close_is_echoed_and_tcp_closed() {
    let (server, mut events) = echo_server(WebsocketOptions::default()).await;
    let mut raw = Raw::connect(&server, b"").await;
    raw.send(&frame(true, 8, &[0x0f, 0xa0, b'b', b'y', b'e']))
        .await; // 4000 "bye"
    assert_eq!(raw.close_code().await, Some(4000));
    assert!(
        !raw.fill().await,
        "the server closes TCP after the close handshake"
    );
    assert_eq!(next_event(&mut events).await, Event::Init);
    assert_eq!(next_event(&mut events).await, Event::Closed);
    assert_eq!(next_event(&mut events).await, Event::OnClose(1));
}

#[tokio::test]
async fn stop_and_abnormal_stop_close_with_1000_and_1011() {
    for (command, code) in [("stop", 1000u16), ("abnormal", 1011), ("panic", 1011)] {
        let (server, mut events) = echo_server(WebsocketOptions::default()).await;
        let mut raw = Raw::connect(&server, b"").await;
        raw.send(&frame(true, 1, command.as_bytes())).await;
        assert_eq!(raw.close_code().await, Some(code), "{command}");
        raw.send(&frame(true, 8, &code.to_be_bytes())).await;
        assert_eq!(
            on_close(&mut events).await,
            1,
            "{command}: on_close once, with the state"
        );
        // The server carries on.
        let mut again = Raw::connect(&server, b"").await;
        again.send(&frame(true, 1, b"still here")).await;
        assert_eq!(again.read_frame().await, Some((1, b"still here".to_vec())));
    }
}

/// A source of custom messages that panics closes the connection with
/// 1011, as a panicking handler does; `on_close` runs once.
#[tokio::test]
async fn a_panicking_message_source_closes_with_1011() {
    let (closed_tx, mut closed) = mpsc::unbounded_channel();
    let server = serve(move |req: Request<Connection>| {
        let closed_tx = closed_tx.clone();
        async move {
            mist::websocket(
                req,
                |_conn| {
                    let mut polls = 0;
                    let source = futures_util::stream::poll_fn(move |_| {
                        polls += 1;
                        if polls > 1 {
                            panic!("the message source panics on purpose");
                        }
                        std::task::Poll::Ready(Some("first".to_string()))
                    });
                    ((), Some(mist::Messages::from_stream(source)))
                },
                |(), conn, message| {
                    if let WebsocketMessage::Custom(text) = message {
                        let _ = mist::send_text_frame(conn, &text);
                    }
                    Next::Continue
                },
                move |()| {
                    let _ = closed_tx.send(());
                },
            )
        }
    })
    .await;
    let mut raw = Raw::connect(&server, b"").await;
    assert_eq!(raw.read_frame().await, Some((1, b"first".to_vec())));
    assert_eq!(raw.close_code().await, Some(1011));
    raw.send(&frame(true, 8, &1011u16.to_be_bytes())).await;
    tokio::time::timeout(SAFETY_TIMEOUT, closed.recv())
        .await
        .expect("on_close ran")
        .unwrap();
}

#[tokio::test]
async fn tcp_drop_still_runs_on_close() {
    let (server, mut events) = echo_server(WebsocketOptions::default()).await;
    let raw = Raw::connect(&server, b"").await;
    assert_eq!(next_event(&mut events).await, Event::Init);
    drop(raw);
    assert_eq!(next_event(&mut events).await, Event::Closed);
    assert_eq!(next_event(&mut events).await, Event::OnClose(1));
}

/// A client that sends but never reads is let go after the endpoint's
/// write timeout (here shorter than the server's 30 s): its echoes fill
/// the socket, the write stalls, and the connection ends.
#[tokio::test]
async fn a_client_that_never_reads_is_let_go_after_the_write_timeout() {
    let options = WebsocketOptions::default()
        .compression(false)
        .max_pending_output(1 << 30)
        .write_timeout(Duration::from_millis(300));
    let (server, mut events) = echo_server(options).await;
    let raw = Raw::connect(&server, b"").await;
    assert_eq!(next_event(&mut events).await, Event::Init);
    let (_reader, mut writer) = raw.stream.into_split();
    // 64 MiB of 1 MiB messages: far more than the socket buffers hold.
    let message = frame(true, 0x2, &vec![7u8; 1 << 20]);
    let flood = tokio::spawn(async move {
        for _ in 0..64 {
            if writer.write_all(&message).await.is_err() {
                return;
            }
        }
    });
    loop {
        match next_event(&mut events).await {
            Event::OnClose(_) => break,
            Event::Closed => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    flood.abort();
}

#[tokio::test]
async fn server_shutdown_delivers_shutdown_then_closes_with_1001() {
    let (server, mut events) = echo_server(WebsocketOptions::default()).await;
    let mut raw = Raw::connect(&server, b"").await;
    assert_eq!(next_event(&mut events).await, Event::Init);
    server.shutdown(Duration::from_secs(5));
    assert_eq!(raw.close_code().await, Some(1001));
    assert_eq!(next_event(&mut events).await, Event::Shutdown);
    raw.send(&frame(true, 8, &1001u16.to_be_bytes())).await;
    assert_eq!(next_event(&mut events).await, Event::OnClose(1));
    tokio::time::timeout(SAFETY_TIMEOUT, server.wait())
        .await
        .unwrap();
}

#[tokio::test]
async fn custom_messages_and_senders_reach_the_client() {
    let (to_ws, from_test) = mpsc::channel::<String>(8);
    let from_test = Arc::new(Mutex::new(Some(from_test)));
    let senders: Arc<Mutex<Vec<mist::WebsocketSender>>> = Arc::default();
    let keep = Arc::clone(&senders);
    let server = serve(move |req: Request<Connection>| {
        let from_test = from_test.lock().unwrap().take();
        let senders = Arc::clone(&keep);
        async move {
            mist::websocket(
                req,
                move |conn| {
                    senders.lock().unwrap().push(conn.sender());
                    ((), from_test)
                },
                |_state, conn, message| {
                    if let WebsocketMessage::Custom(text) = message {
                        mist::send_text_frame(conn, &format!("custom: {text}")).unwrap();
                    }
                    Next::Continue
                },
                |_state| {},
            )
        }
    })
    .await;
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url(&server, "/"))
        .await
        .unwrap();
    to_ws.send("one".into()).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::text("custom: one")
    );
    let sender = senders.lock().unwrap()[0].clone();
    tokio::spawn(async move { sender.send_text("from a task").unwrap() })
        .await
        .unwrap();
    // The send wakes the connection: the frame does not wait for the
    // next ping tick (30 s), which is longer than the safety timeout.
    let from_task = tokio::time::timeout(SAFETY_TIMEOUT, ws.next())
        .await
        .expect("the frame sent from another task is written at once");
    assert_eq!(from_task.unwrap().unwrap(), Message::text("from a task"));
    let sender = senders.lock().unwrap()[0].clone();
    ws.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
    .await
    .unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    // A send after the client left is an error, not a panic.
    assert_eq!(sender.send_text("too late"), Err(mist::SendError::Closed));
}

/// Runs `tests/ws_client.py` (Python's `websockets`, installed by .ci/run)
/// against the server: permessage-deflate with each parameter.
#[tokio::test]
async fn permessage_deflate_with_each_parameter() {
    let (server, _events) = echo_server(WebsocketOptions::default()).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ws_client.py");
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .arg(ws_url(&server, "/ws"))
        .output()
        .await
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "ws_client.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for case in [
        "default",
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits=10",
        "client_max_window_bits=9",
    ] {
        assert!(
            stdout.contains(&format!("ok {case}")),
            "{case} missing:\n{stdout}"
        );
    }
}

#[tokio::test]
async fn compression_can_be_turned_off() {
    let (server, _events) = echo_server(WebsocketOptions::default().compression(false)).await;
    let mut client = Client::connect(&server).await;
    client
        .send(upgrade_request(
            "Sec-WebSocket-Extensions: permessage-deflate\r\n",
        ))
        .await;
    let resp = client.head_response().await;
    assert_eq!(resp.status, 101);
    assert_eq!(resp.header("sec-websocket-extensions"), None);
}

fn quick_heartbeat() -> WebsocketOptions {
    WebsocketOptions::default()
        .ping_interval(Duration::from_millis(100))
        .pong_timeout(Duration::from_millis(100))
        .close_timeout(Duration::from_millis(200))
}

#[tokio::test]
async fn a_silent_client_is_pinged_then_closed_with_1001() {
    let (server, mut events) = echo_server(quick_heartbeat()).await;
    let mut raw = Raw::connect(&server, b"").await;
    assert_eq!(next_event(&mut events).await, Event::Init);
    // Nothing sent: a ping after an interval of silence...
    assert_eq!(raw.read_frame().await, Some((9, Vec::new())));
    // ...and, unanswered, a close with 1001 and the end of the connection.
    assert_eq!(raw.close_code().await, Some(1001));
    assert!(!raw.fill().await, "the server closes TCP after the close");
    assert_eq!(next_event(&mut events).await, Event::Closed);
    assert_eq!(on_close(&mut events).await, 1, "only Closed");
}

#[tokio::test]
async fn a_client_that_answers_pings_stays_connected() {
    let (server, mut events) = echo_server(quick_heartbeat()).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url(&server, "/ws"))
        .await
        .unwrap();
    assert_eq!(next_event(&mut events).await, Event::Init);
    // tungstenite answers each ping while it reads; idle through several
    // ping intervals and pong timeouts.
    for _ in 0..4 {
        match tokio::time::timeout(SAFETY_TIMEOUT, ws.next()).await {
            Ok(Some(Ok(Message::Ping(_)))) => {}
            other => panic!("expected a ping, got {other:?}"),
        }
    }
    ws.send(Message::text("still here")).await.unwrap();
    loop {
        match ws.next().await.unwrap().unwrap() {
            Message::Ping(_) => continue,
            message => {
                assert_eq!(message, Message::text("still here"));
                break;
            }
        }
    }
    assert_eq!(
        next_event(&mut events).await,
        Event::Message("still here".into())
    );
}

#[tokio::test]
async fn a_client_that_keeps_talking_is_never_pinged() {
    // Messages count as signs of life: no ping while they keep coming.
    let (server, mut events) = echo_server(quick_heartbeat()).await;
    let mut raw = Raw::connect(&server, b"").await;
    assert_eq!(next_event(&mut events).await, Event::Init);
    // One message every 30 ms for four ping intervals (the pause is the
    // subject of the test, not a wait for the server).
    for i in 0..12 {
        let text = format!("{i}");
        raw.send(&frame(true, 1, text.as_bytes())).await;
        assert_eq!(raw.read_frame().await, Some((1, text.into_bytes())));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// Custom messages from a broadcast channel (a chat room: every member's
/// loop subscribed), and `Next::ContinueWith` moving a loop to a stream of
/// the application's own.
#[tokio::test]
async fn custom_messages_from_a_broadcast_and_then_a_stream() {
    let (room, _) = tokio::sync::broadcast::channel::<String>(16);
    let (joined_tx, mut joined) = mpsc::unbounded_channel();
    let server = serve(move |req: Request<Connection>| {
        let room = room.clone();
        let joined = joined_tx.clone();
        async move {
            let speak = room.clone();
            mist::websocket(
                req,
                move |_conn| {
                    let subscribed = room.subscribe();
                    let _ = joined.send(());
                    ((), Some(subscribed))
                },
                move |_state, conn, message| match message {
                    WebsocketMessage::Text(text) if text == "switch" => {
                        let own = futures_util::stream::iter(["x", "y"].map(String::from));
                        Next::ContinueWith(mist::Messages::from_stream(own))
                    }
                    WebsocketMessage::Text(text) => {
                        let _ = speak.send(text);
                        Next::Continue
                    }
                    WebsocketMessage::Custom(text) => {
                        mist::send_text_frame(conn, &format!("custom: {text}")).unwrap();
                        Next::Continue
                    }
                    _ => Next::Continue,
                },
                |_state| {},
            )
        }
    })
    .await;
    let (mut a, _) = tokio_tungstenite::connect_async(ws_url(&server, "/"))
        .await
        .unwrap();
    let (mut b, _) = tokio_tungstenite::connect_async(ws_url(&server, "/"))
        .await
        .unwrap();
    for _ in 0..2 {
        tokio::time::timeout(SAFETY_TIMEOUT, joined.recv())
            .await
            .expect("both members join")
            .unwrap();
    }
    a.send(Message::text("hi")).await.unwrap();
    for member in [&mut a, &mut b] {
        assert_eq!(
            member.next().await.unwrap().unwrap(),
            Message::text("custom: hi")
        );
    }
    b.send(Message::text("switch")).await.unwrap();
    for expected in ["custom: x", "custom: y"] {
        assert_eq!(b.next().await.unwrap().unwrap(), Message::text(expected));
    }
}
