//! The server's life: binding, the connection limit, graceful shutdown.

mod support;

use http::{Request, Response};
use mist::{Connection, ResponseData, StartError};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{get, roundtrip, serve, start, text, Client, SAFETY_TIMEOUT};
use tokio::sync::{mpsc, Notify};

#[tokio::test]
async fn invalid_interface_is_an_error_not_a_crash() {
    let result = mist::new(support::fixed("x"))
        .bind("not an address")
        .port(0)
        .start_http()
        .await;
    match result {
        Err(StartError::InvalidInterface(interface)) => assert_eq!(interface, "not an address"),
        other => panic!("expected InvalidInterface, got {other:?}"),
    }
}

#[tokio::test]
async fn port_in_use_is_a_bind_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let result = mist::new(support::fixed("x"))
        .bind("127.0.0.1")
        .port(port)
        .after_start(|_, _, _| {})
        .start_http()
        .await;
    match result {
        Err(err @ StartError::Bind { .. }) => assert!(err.to_string().contains(&port.to_string())),
        other => panic!("expected Bind error, got {other:?}"),
    }
}

#[tokio::test]
async fn port_zero_reports_the_real_port_to_after_start() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = mist::new(support::fixed("x"))
        .port(0)
        .after_start(move |port, scheme, ip| {
            tx.send((port, scheme, ip)).unwrap();
        })
        .start_http()
        .await
        .unwrap();
    let (port, scheme, ip) = rx.recv().await.unwrap();
    assert_eq!(port, server.port());
    assert_ne!(port, 0);
    assert_eq!(scheme, mist::Scheme::Http);
    assert_eq!(ip, mist::IpAddress::V4(127, 0, 0, 1));
}

#[tokio::test]
async fn with_ipv6_on_localhost_listens_on_both_families() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this machine; skipping");
        return;
    }
    let server = mist::new(support::fixed("both"))
        .port(0)
        .with_ipv6()
        .after_start(|_, _, _| {})
        .start_http()
        .await
        .unwrap();
    assert_eq!(server.local_addrs().len(), 2);
    let port = server.port();
    for host in ["127.0.0.1", "::1"] {
        let stream = tokio::net::TcpStream::connect((host, port)).await.unwrap();
        let mut client = Client::from_stream(stream);
        client.send(get("/")).await;
        assert_eq!(client.response().await.text(), "both");
    }
}

/// Listeners bound by the caller are served, all of them, and the port
/// and interface settings are not used.
#[tokio::test]
async fn listeners_the_caller_bound_are_served() {
    let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let second = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ports = [
        first.local_addr().unwrap().port(),
        second.local_addr().unwrap().port(),
    ];
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = mist::new(support::fixed("adopted"))
        .port(1)
        .bind("not an address")
        .listener(first)
        .listener(second)
        .after_start(move |port, _, _| tx.send(port).unwrap())
        .start_http()
        .await
        .unwrap();
    assert_eq!(rx.recv().await, Some(ports[0]));
    assert_eq!(server.port(), ports[0]);
    assert_eq!(server.local_addrs().len(), 2);
    for port in ports {
        let mut client = Client::connect_port(port).await;
        client.send(get("/")).await;
        assert_eq!(client.response().await.text(), "adopted");
    }
}

/// A socket that was bound but never listened would fail every accept;
/// starting refuses it with a reason instead.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_bound_socket_that_is_not_listening_is_refused() {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let loopback: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    socket.bind(&loopback.into()).unwrap();
    let result = mist::new(support::fixed("x"))
        .listener(socket.into())
        .after_start(|_, _, _| panic!("must not start"))
        .start_http()
        .await;
    support::assert_not_listening(result);
}

#[tokio::test]
async fn connection_limit_holds_new_connections_until_one_closes() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&log);
    let builder = mist::new(move |req: Request<Connection>| {
        seen.lock().unwrap().push(req.uri().path().to_string());
        async { text(200, "ok") }
    })
    .max_connections(1);
    let server = start(builder).await;
    let mut first = Client::connect(&server).await;
    first.send(get("/first-1")).await;
    first.response().await;
    // Queued in the kernel's backlog: the server does not take it yet.
    let mut second = Client::connect(&server).await;
    second.send(get("/second")).await;
    first.send(get("/first-2")).await;
    first.response().await;
    drop(first);
    assert_eq!(second.response().await.text(), "ok");
    assert_eq!(*log.lock().unwrap(), ["/first-1", "/first-2", "/second"]);
}

type BoxedResponse =
    std::pin::Pin<Box<dyn std::future::Future<Output = Response<ResponseData>> + Send>>;

/// A handler that reports when it starts and finishes only when told.
struct Gated {
    handler: Box<dyn Fn(Request<Connection>) -> BoxedResponse + Send + Sync>,
    started: mpsc::UnboundedReceiver<()>,
    release: Arc<Notify>,
}

fn gated() -> Gated {
    let (started_tx, started) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let gate = Arc::clone(&release);
    let handler = move |req: Request<Connection>| -> BoxedResponse {
        let started = started_tx.clone();
        let gate = Arc::clone(&gate);
        Box::pin(async move {
            if req.uri().path() == "/gated" {
                let _ = started.send(());
                gate.notified().await;
            }
            text(200, "finished")
        })
    };
    Gated {
        handler: Box::new(handler),
        started,
        release,
    }
}

#[tokio::test]
async fn shutdown_lets_request_in_flight_finish() {
    let Gated {
        handler,
        mut started,
        release,
    } = gated();
    let server = serve(handler).await;
    let mut busy = Client::connect(&server).await;
    busy.send(get("/gated")).await;
    started.recv().await.unwrap();

    let mut idle = Client::connect(&server).await;
    idle.send(get("/")).await;
    idle.response().await;

    server.shutdown(Duration::from_secs(10));
    // The idle keep-alive connection is closed right away.
    assert!(idle.is_closed().await);
    release.notify_one();
    let resp = busy.response().await;
    assert_eq!(resp.text(), "finished");
    assert!(resp.closes());
    assert!(busy.is_closed().await);
    tokio::time::timeout(SAFETY_TIMEOUT, server.wait())
        .await
        .expect("server stops");
    // Nothing accepts any more.
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .is_err());
}

#[tokio::test]
async fn shutdown_closes_connections_still_busy_after_grace() {
    let Gated {
        handler,
        mut started,
        release: _release,
    } = gated();
    let server = serve(handler).await;
    let mut stuck = Client::connect(&server).await;
    stuck.send(get("/gated")).await;
    started.recv().await.unwrap();
    server.shutdown(Duration::from_millis(50));
    tokio::time::timeout(SAFETY_TIMEOUT, server.wait())
        .await
        .expect("server stops after grace");
    assert!(stuck.is_closed().await);
}

#[tokio::test]
async fn server_keeps_serving_when_its_handle_is_dropped() {
    let server = serve(support::fixed("still here")).await;
    let port = server.port();
    drop(server);
    let mut client = Client::connect_port(port).await;
    client.send(get("/")).await;
    assert_eq!(client.response().await.text(), "still here");
}

#[tokio::test]
async fn many_concurrent_connections_are_served() {
    let server = serve(support::fixed("hi")).await;
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let port = server.port();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect_port(port).await;
            for _ in 0..10 {
                client.send(get("/")).await;
                assert_eq!(client.response().await.text(), "hi");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(roundtrip(&server, get("/")).await.text(), "hi");
}

/// Every kind of waiting connection is woken by a graceful stop at once:
/// idle keep-alive, connected but silent, WebSocket and event stream, on a
/// multi-thread runtime, while other clients keep sending requests. With
/// keep-alive and header timeouts of 120 s and a grace of 60 s, a
/// connection the stop failed to wake would hold the server for a minute.
/// (From a review's stress test, which failed with the wake removed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_wakes_every_waiting_connection() {
    use mist::Next;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    let keep: Arc<Mutex<Vec<mpsc::Sender<String>>>> = Arc::default();
    let kept = Arc::clone(&keep);
    let server = start(
        mist::new(move |req: Request<Connection>| {
            let kept = Arc::clone(&kept);
            async move {
                match req.uri().path() {
                    "/ws" => mist::websocket(
                        req,
                        |_conn| ((), None::<mpsc::Receiver<()>>),
                        |_state, _conn, _message| Next::Continue,
                        |_state| {},
                    ),
                    "/sse" => {
                        let (tx, rx) = mpsc::channel::<String>(1);
                        kept.lock().unwrap().push(tx);
                        mist::server_sent_events(
                            req,
                            Response::builder().body(()).unwrap(),
                            move || Ok::<_, String>(((), rx)),
                            |_message, _conn, _state| Next::Continue,
                        )
                    }
                    _ => text(200, "ok"),
                }
            }
        })
        .keep_alive_timeout(Duration::from_secs(120))
        .header_read_timeout(Duration::from_secs(120)),
    )
    .await;
    let port = server.port();
    // Each waiting client reads until the server closes (answering a
    // WebSocket close frame, so that the closing handshake can end).
    let until_closed = |mut stream: TcpStream| async move {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            if buf[..n].contains(&0x88) {
                let close = [0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xe9 ^ 2];
                let _ = stream.write_all(&close).await;
            }
        }
    };
    let mut waiting = Vec::new();
    for _ in 0..40 {
        let mut idle = Client::connect_port(port).await;
        idle.send(get("/")).await;
        assert_eq!(idle.response().await.status, 200);
        waiting.push(tokio::spawn(until_closed(idle.stream)));
        let silent = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        waiting.push(tokio::spawn(until_closed(silent)));
    }
    for (path, upgrade) in [("/ws", true), ("/sse", false)] {
        for _ in 0..10 {
            let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
            let head = if upgrade {
                format!(
                    "GET {path} HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                     Sec-WebSocket-Version: 13\r\n\r\n"
                )
            } else {
                format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n")
            };
            stream.write_all(head.as_bytes()).await.unwrap();
            let mut buf = [0u8; 512];
            let n = stream.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(if upgrade {
                b"HTTP/1.1 101"
            } else {
                b"HTTP/1.1 200"
            }));
            waiting.push(tokio::spawn(until_closed(stream)));
        }
    }
    // Clients that keep sending requests through the stop, each reading
    // its response (ending in "ok") before the next, until the close.
    let mut busy = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        busy.push(tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            'requests: while stream.write_all(get("/").as_bytes()).await.is_ok() {
                let mut got = Vec::new();
                while !got.ends_with(b"ok") {
                    match stream.read(&mut buf).await {
                        Ok(n @ 1..) => got.extend_from_slice(&buf[..n]),
                        _ => break 'requests,
                    }
                }
            }
        }));
    }
    server.shutdown(Duration::from_secs(60));
    tokio::time::timeout(SAFETY_TIMEOUT, server.wait())
        .await
        .expect("every waiting connection was woken by the stop");
    for client in waiting.into_iter().chain(busy) {
        tokio::time::timeout(SAFETY_TIMEOUT, client)
            .await
            .expect("the client saw its connection close")
            .unwrap();
    }
    drop(keep);
}
