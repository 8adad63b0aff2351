//! Server-sent events through real sockets.

mod support;

use http::{Request, Response};
use mist::{Connection, Next, SendError, SseOptions};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{get, serve, Client};
use tokio::sync::mpsc;

/// A stream driven by a channel the test holds: each message is sent as an
/// event as it is; `"stop"` and `"fail"` end the stream.
type Feed = Arc<Mutex<Option<mpsc::Receiver<mist::SseEvent>>>>;

async fn feed_server(
    options: SseOptions,
) -> (
    mist::Server,
    mpsc::Sender<mist::SseEvent>,
    mpsc::UnboundedReceiver<Result<(), SendError>>,
) {
    let (tx, rx) = mpsc::channel(16);
    let feed: Feed = Arc::new(Mutex::new(Some(rx)));
    let (results_tx, results) = mpsc::unbounded_channel();
    let server = serve(move |req: Request<Connection>| {
        let feed = Arc::clone(&feed);
        let results = results_tx.clone();
        let options = options.clone();
        async move {
            let initial = Response::builder()
                .header("x-stream", "ticks")
                .body(())
                .unwrap();
            mist::server_sent_events_with_options(
                req,
                options,
                initial,
                move || {
                    feed.lock()
                        .unwrap()
                        .take()
                        .map(|rx| ((), rx))
                        .ok_or("only one stream")
                },
                move |event: mist::SseEvent, conn, _state| {
                    let sent = mist::send_event(conn, event.clone());
                    let _ = results.send(sent);
                    if event == mist::event("stop") {
                        return Next::Stop;
                    }
                    if event == mist::event("fail") {
                        return Next::AbnormalStop("asked to fail".into());
                    }
                    Next::Continue
                },
            )
        }
    })
    .await;
    (server, tx, results)
}

async fn read_until(client: &mut Client, needle: &str) -> String {
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        use tokio::io::AsyncReadExt;
        let n = tokio::time::timeout(support::SAFETY_TIMEOUT, client.stream.read(&mut buf))
            .await
            .expect("within the safety timeout")
            .unwrap();
        assert!(n > 0, "closed before {needle:?}: {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    seen
}

#[tokio::test]
async fn events_are_written_in_the_event_stream_format() {
    let (server, tx, mut results) = feed_server(SseOptions::default()).await;
    let mut client = Client::connect(&server).await;
    client.send(get("/events")).await;
    tx.send(
        mist::event("line one\nline two")
            .id("1")
            .name("tick")
            .retry(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    let seen = read_until(&mut client, "data: line two\n\n").await;
    assert!(seen.starts_with("HTTP/1.1 200 OK\r\n"), "{seen}");
    assert!(
        seen.contains("content-type: text/event-stream\r\n"),
        "{seen}"
    );
    assert!(seen.contains("cache-control: no-cache\r\n"), "{seen}");
    assert!(
        seen.contains("x-stream: ticks\r\n"),
        "the initial response's headers go out: {seen}"
    );
    assert!(seen.contains("transfer-encoding: chunked\r\n"), "{seen}");
    assert!(
        seen.contains("event: tick\nid: 1\nretry: 1000\ndata: line one\ndata: line two\n\n"),
        "{seen}"
    );
    assert_eq!(results.recv().await.unwrap(), Ok(()));
}

#[tokio::test]
async fn stopping_the_loop_ends_the_stream_cleanly() {
    let (server, tx, _results) = feed_server(SseOptions::default()).await;
    let mut client = Client::connect(&server).await;
    client.send(get("/events")).await;
    tx.send(mist::event("first")).await.unwrap();
    tx.send(mist::event("stop")).await.unwrap();
    let resp = client.response().await;
    let body = resp.text();
    assert_eq!(
        body, "data: first\n\ndata: stop\n\n",
        "a complete chunked body, last chunk included"
    );
}

#[tokio::test]
async fn closing_the_channel_ends_the_stream_cleanly() {
    let (server, tx, _results) = feed_server(SseOptions::default()).await;
    let mut client = Client::connect(&server).await;
    client.send(get("/events")).await;
    tx.send(mist::event("only")).await.unwrap();
    drop(tx);
    assert_eq!(client.response().await.text(), "data: only\n\n");
}

#[tokio::test]
async fn abnormal_stop_resets_instead_of_ending() {
    let (server, tx, _results) = feed_server(SseOptions::default()).await;
    let mut client = Client::connect(&server).await;
    client.send(get("/events")).await;
    tx.send(mist::event("fail")).await.unwrap();
    let raw = String::from_utf8_lossy(&client.read_to_close().await).into_owned();
    assert!(
        !raw.ends_with("0\r\n\r\n"),
        "a failed stream must not look complete: {raw:?}"
    );
}

#[tokio::test]
async fn client_leaving_ends_the_loop_promptly() {
    let (server, tx, _results) = feed_server(SseOptions::default()).await;
    let mut client = Client::connect(&server).await;
    client.send(get("/events")).await;
    tx.send(mist::event("hello")).await.unwrap();
    read_until(&mut client, "data: hello").await;
    drop(client);
    // The loop's task drops its receiver when it ends: nothing lingers.
    tokio::time::timeout(support::SAFETY_TIMEOUT, tx.closed())
        .await
        .expect("the stream's task ended");
}

#[tokio::test]
async fn init_failure_is_a_500_and_nothing_starts() {
    let server = serve(|req: Request<Connection>| async move {
        mist::server_sent_events(
            req,
            Response::new(()),
            || Err::<((), mpsc::Receiver<()>), _>("no backend"),
            |_message, _conn, _state| -> Next<()> { panic!("the loop must not run") },
        )
    })
    .await;
    let resp = support::roundtrip(&server, get("/events")).await;
    assert_eq!(resp.status, 500);
    assert_eq!(resp.header("content-type"), None);
}

#[tokio::test]
async fn line_breaks_in_id_or_name_are_refused() {
    let (server, tx, mut results) = feed_server(SseOptions::default()).await;
    let mut client = Client::connect(&server).await;
    client.send(get("/events")).await;
    tx.send(mist::event("x").id("1\nevent: forged"))
        .await
        .unwrap();
    tx.send(mist::event("x").name("a\rb")).await.unwrap();
    tx.send(mist::event("fine")).await.unwrap();
    assert_eq!(results.recv().await.unwrap(), Err(SendError::InvalidEvent));
    assert_eq!(results.recv().await.unwrap(), Err(SendError::InvalidEvent));
    let seen = read_until(&mut client, "data: fine\n\n").await;
    assert!(!seen.contains("forged"), "{seen}");
}

#[tokio::test]
async fn keep_alive_comments_flow_while_idle() {
    let (server, _tx, _results) =
        feed_server(SseOptions::default().keep_alive(Duration::from_millis(50))).await;
    let mut client = Client::connect(&server).await;
    client.send(get("/events")).await;
    read_until(&mut client, ": keep-alive\n\n").await;
}

#[tokio::test]
async fn http10_stream_is_close_delimited() {
    let (server, tx, _results) = feed_server(SseOptions::default()).await;
    let mut client = Client::connect(&server).await;
    client.send("GET /events HTTP/1.0\r\n\r\n").await;
    tx.send(mist::event("one")).await.unwrap();
    tx.send(mist::event("stop")).await.unwrap();
    let raw = String::from_utf8(client.read_to_close().await).unwrap();
    assert!(!raw.contains("transfer-encoding"), "{raw}");
    assert!(
        raw.ends_with("\r\n\r\ndata: one\n\ndata: stop\n\n"),
        "{raw}"
    );
}

#[tokio::test]
async fn events_from_a_spawned_producer_arrive_in_order() {
    let server = serve(|req: Request<Connection>| async move {
        mist::server_sent_events(
            req,
            Response::new(()),
            || {
                let (tx, rx) = mpsc::channel(4);
                tokio::spawn(async move {
                    for i in 1..=3u32 {
                        let _ = tx.send(i).await;
                    }
                });
                Ok::<_, String>(((), rx))
            },
            |i, conn, _state| {
                let _ = mist::send_event(
                    conn,
                    mist::event(i.to_string()).id(i.to_string()).name("tick"),
                );
                Next::Continue
            },
        )
    })
    .await;
    let resp = support::roundtrip(&server, get("/")).await;
    assert_eq!(resp.text(), "event: tick\nid: 1\ndata: 1\n\nevent: tick\nid: 2\ndata: 2\n\nevent: tick\nid: 3\ndata: 3\n\n");
}

/// A connection handle cloned into another task sends on its own: each
/// event wakes the idle stream and goes out without any message to the
/// loop.
#[tokio::test]
async fn events_sent_from_another_task_wake_the_stream() {
    let server = serve(|req: Request<Connection>| async move {
        mist::server_sent_events(
            req,
            Response::new(()),
            || {
                let (tx, rx) = mpsc::channel(1);
                tx.try_send(()).unwrap();
                // The sender is kept as the loop's state: the channel
                // stays open, and only the other task sends.
                Ok::<_, String>((tx, rx))
            },
            |(), conn, _sender| {
                let conn = conn.clone();
                tokio::spawn(async move {
                    for data in ["a", "b", "c"] {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        mist::send_event(&conn, mist::event(data)).unwrap();
                    }
                });
                Next::Continue
            },
        )
    })
    .await;
    let mut client = Client::connect(&server).await;
    client.send(get("/")).await;
    let seen = read_until(&mut client, "data: c\n\n").await;
    let a = seen.find("data: a\n\n").expect("a");
    let b = seen.find("data: b\n\n").expect("b");
    assert!(a < b, "{seen:?}");
}

/// Line endings in data: CRLF, LF and CR each start a new `data:` line,
/// and a trailing one leaves an empty last line.
#[tokio::test]
async fn data_lines_split_at_every_kind_of_line_ending() {
    let (server, tx, mut results) = feed_server(SseOptions::default()).await;
    let mut client = Client::connect(&server).await;
    client.send(get("/")).await;
    tx.send(mist::event("a\r\nb\nc\rd\r\r\ne\n")).await.unwrap();
    assert_eq!(results.recv().await, Some(Ok(())));
    let seen = read_until(&mut client, "data: e\ndata: \n\n").await;
    assert!(
        seen.contains("data: a\ndata: b\ndata: c\ndata: d\ndata: \ndata: e\ndata: \n\n"),
        "{seen:?}"
    );
}

/// A stream subscribed to a broadcast channel that fell further behind than
/// the channel holds skips the oldest messages and goes on with the rest;
/// the channel's close ends the stream cleanly.
#[tokio::test]
async fn a_lagging_broadcast_subscriber_skips_the_oldest() {
    let server = serve(|req: Request<Connection>| async move {
        mist::server_sent_events(
            req,
            Response::new(()),
            || {
                // Five messages into a channel of two before the loop has
                // taken any: it lags by three. The sender's drop closes it.
                let (tx, rx) = tokio::sync::broadcast::channel(2);
                for i in 1..=5u32 {
                    tx.send(i).unwrap();
                }
                Ok::<_, String>(((), rx))
            },
            |i, conn, _state| {
                let _ = mist::send_event(conn, mist::event(i.to_string()));
                Next::Continue
            },
        )
    })
    .await;
    let resp = support::roundtrip(&server, get("/")).await;
    assert_eq!(resp.text(), "data: 4\n\ndata: 5\n\n");
}

/// Streams subscribed to one broadcast channel each get every event.
#[tokio::test]
async fn broadcast_subscribers_share_one_feed() {
    let (feed, _) = tokio::sync::broadcast::channel::<String>(16);
    let subscribe = feed.clone();
    let server = serve(move |req: Request<Connection>| {
        let feed = subscribe.clone();
        async move {
            mist::server_sent_events(
                req,
                Response::new(()),
                move || Ok::<_, String>(((), feed.subscribe())),
                |data: String, conn, _state| {
                    let _ = mist::send_event(conn, mist::event(data.as_str()));
                    if data == "end" {
                        Next::Stop
                    } else {
                        Next::Continue
                    }
                },
            )
        }
    })
    .await;
    let mut clients = Vec::new();
    for _ in 0..2 {
        let mut client = Client::connect(&server).await;
        client.send(get("/")).await;
        // The head goes out after `init`: this client is subscribed.
        read_until(&mut client, "\r\n\r\n").await;
        clients.push(client);
    }
    assert_eq!(feed.send("news".to_string()).unwrap(), 2);
    feed.send("end".to_string()).unwrap();
    for mut client in clients {
        let seen = read_until(&mut client, "0\r\n\r\n").await;
        assert!(seen.contains("data: news\n\n"), "{seen}");
        assert!(seen.contains("data: end\n\n"), "{seen}");
    }
}

/// A stream of the application's own drives the loop, and one that is
/// always ready cannot keep the connection's task from yielding: on a
/// one-thread runtime, another client is still answered.
#[test]
fn an_always_ready_stream_does_not_starve_other_connections() {
    use std::io::{Read, Write};
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    // The server's own one-thread runtime, so that a starved runtime shows
    // as a read timeout here rather than as a test that never ends.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let server = serve(|req: Request<Connection>| async move {
                if req.uri().path() == "/hello" {
                    return support::text(200, "hello");
                }
                mist::server_sent_events(
                    req,
                    Response::new(()),
                    || {
                        let spin = futures_util::stream::repeat(());
                        Ok::<_, String>((0u64, mist::Messages::from_stream(spin)))
                    },
                    |(), conn, taken| {
                        *taken += 1;
                        if *taken == 1 {
                            let _ = mist::send_event(conn, mist::event("spinning"));
                        }
                        Next::Continue
                    },
                )
            })
            .await;
            port_tx.send(server.port()).unwrap();
            std::future::pending::<()>().await;
        });
    });
    let port = port_rx.recv().unwrap();
    let read_until = |stream: &mut std::net::TcpStream, needle: &str| {
        stream
            .set_read_timeout(Some(support::SAFETY_TIMEOUT))
            .unwrap();
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        while !seen.contains(needle) {
            let n = stream
                .read(&mut buf)
                .expect("an answer: the runtime is not starved");
            assert!(n > 0, "closed before {needle:?}: {seen:?}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        seen
    };
    let mut spinning = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    spinning.write_all(get("/spin").as_bytes()).unwrap();
    read_until(&mut spinning, "data: spinning\n\n");
    let mut other = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    other.write_all(get("/hello").as_bytes()).unwrap();
    let seen = read_until(&mut other, "hello");
    assert!(seen.starts_with("HTTP/1.1 200 OK\r\n"), "{seen}");
}

/// Sends on `tx` when the stream's state is dropped: when its loop ended.
struct Ended(mpsc::UnboundedSender<()>);

impl Drop for Ended {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// A stream of 64 KiB events as fast as the client takes them, whose
/// state reports its end; with these options, and this write timeout for
/// the server (its default when `None`).
async fn flooding_server(
    options: SseOptions,
    server_write_timeout: Option<Duration>,
) -> (mist::Server, mpsc::UnboundedReceiver<()>) {
    let (ended_tx, ended) = mpsc::unbounded_channel();
    let builder = mist::new(move |req: Request<Connection>| {
        let ended = Ended(ended_tx.clone());
        let options = options.clone();
        async move {
            mist::server_sent_events_with_options(
                req,
                options,
                Response::new(()),
                move || {
                    let flood = futures_util::stream::repeat(());
                    Ok::<_, String>((ended, mist::Messages::from_stream(flood)))
                },
                |(), conn, _ended| {
                    let _ = mist::send_event(conn, mist::event("x".repeat(64 * 1024)));
                    Next::Continue
                },
            )
        }
    });
    let builder = match server_write_timeout {
        Some(timeout) => builder.write_timeout(timeout),
        None => builder,
    };
    (support::start(builder).await, ended)
}

/// Reads nothing from a flooding stream until it has ended.
async fn stop_reading_until_ended(
    server: &mist::Server,
    ended: &mut mpsc::UnboundedReceiver<()>,
) -> Client {
    let mut client = Client::connect(server).await;
    client.send(get("/events")).await;
    tokio::time::timeout(support::SAFETY_TIMEOUT, ended.recv())
        .await
        .expect("the stream ends after the write timeout, not the old 30 s")
        .unwrap();
    client
}

/// A client that stops reading is let go after the server's write timeout
/// (`Builder::write_timeout`), as for any response; event streams used a
/// fixed 30 s.
#[tokio::test]
async fn a_client_that_stops_reading_is_let_go_after_the_servers_write_timeout() {
    let server_timeout = Some(Duration::from_millis(300));
    let (server, mut ended) = flooding_server(SseOptions::default(), server_timeout).await;
    let mut client = stop_reading_until_ended(&server, &mut ended).await;
    assert!(
        tokio::time::timeout(support::SAFETY_TIMEOUT, client.read_to_close())
            .await
            .is_ok(),
        "the connection is closed"
    );
}

/// The write timeout bounds a stall, not the whole backlog: a slow but
/// steady client gets an event larger than it reads in the timeout.
#[tokio::test]
async fn the_write_timeout_bounds_stalls_not_slow_steady_readers() {
    use tokio::io::AsyncReadExt;
    // Well beyond what the kernel's socket buffers hold on loopback.
    const SIZE: usize = 24 << 20;
    let builder = mist::new(|req: Request<Connection>| async move {
        mist::server_sent_events_with_options(
            req,
            SseOptions::default().max_pending_output(2 * SIZE),
            Response::new(()),
            || {
                let once = futures_util::stream::iter([()]);
                Ok::<_, String>(((), mist::Messages::from_stream(once)))
            },
            |(), conn, ()| {
                mist::send_event(conn, mist::event("x".repeat(SIZE))).unwrap();
                Next::Continue
            },
        )
    })
    .write_timeout(Duration::from_millis(1000));
    let server = support::start(builder).await;
    let mut client = Client::connect(&server).await;
    client.send(get("/events")).await;
    let mut total = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    while total < SIZE {
        let n = client.stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the stream was cut off after {total} bytes");
        total += n;
        // At most ~6 MB/s: the event takes seconds to read, longer than
        // the write timeout, while no single stall comes near it.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `SseOptions::write_timeout` overrides the server's (30 s here).
#[tokio::test]
async fn the_streams_own_write_timeout_overrides_the_servers() {
    let options = SseOptions::default().write_timeout(Duration::from_millis(300));
    let (server, mut ended) = flooding_server(options, None).await;
    stop_reading_until_ended(&server, &mut ended).await;
}
