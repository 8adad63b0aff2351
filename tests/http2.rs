//! HTTP/2 through real sockets, with the `h2` crate's client: prior
//! knowledge over plain TCP, and ALPN over TLS (rustls).
//!
//! Nothing here waits by sleeping: tests wait for a response, a frame, a
//! handler reaching a point (a channel), or the connection's end.

mod support;

use bytes::{Bytes, BytesMut};
use futures_util::{stream, SinkExt, StreamExt};
use h2::client::{ResponseFuture, SendRequest};
use h2::Reason;
use http::{Method, Request, Response, StatusCode, Version};
use mist::{Chunk, Connection, Next, ResponseData, Server, WebsocketMessage};
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{
    echo_handler, start, start_tls, text, tls_client_config, write_leaf, TestCa, TestDir,
    SAFETY_TIMEOUT,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Barrier};
use tokio::task::JoinHandle;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A server with HTTP/2 on, around `handler`.
async fn serve2<H: mist::Handler<Connection>>(handler: H) -> Server {
    start(mist::new(handler).with_http2()).await
}

/// An HTTP/2 client over `io`; the connection runs on its own task, whose
/// handle ends when the connection does.
async fn client_over<T>(io: T) -> (SendRequest<Bytes>, JoinHandle<Result<(), h2::Error>>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (client, connection) = tokio::time::timeout(SAFETY_TIMEOUT, h2::client::handshake(io))
        .await
        .expect("handshake in time")
        .expect("HTTP/2 handshake");
    (client, tokio::spawn(connection))
}

/// An HTTP/2 client with prior knowledge over plain TCP.
async fn connect(server: &Server) -> (SendRequest<Bytes>, JoinHandle<Result<(), h2::Error>>) {
    let tcp = TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .unwrap();
    client_over(tcp).await
}

fn request(method: Method, path: &str) -> Request<()> {
    Request::builder()
        .method(method)
        .uri(format!("http://localhost{path}"))
        .body(())
        .unwrap()
}

/// Sends a request with `body` (none if empty) and waits for the response.
async fn send(client: &mut SendRequest<Bytes>, req: Request<()>, body: &[u8]) -> ResponseFuture {
    let mut client = client.clone().ready().await.expect("connection ready");
    let (response, mut stream) = client.send_request(req, body.is_empty()).unwrap();
    if !body.is_empty() {
        stream
            .send_data(Bytes::copy_from_slice(body), true)
            .unwrap();
    }
    response
}

/// The whole response: its head and body.
async fn complete(response: ResponseFuture) -> (http::response::Parts, Bytes) {
    tokio::time::timeout(SAFETY_TIMEOUT, async {
        let (parts, mut body) = response.await.expect("a response").into_parts();
        let mut all = BytesMut::new();
        while let Some(piece) = body.data().await {
            let piece = piece.expect("the body");
            let _ = body.flow_control().release_capacity(piece.len());
            all.extend_from_slice(&piece);
        }
        (parts, all.freeze())
    })
    .await
    .expect("response in time")
}

async fn get(client: &mut SendRequest<Bytes>, path: &str) -> (http::response::Parts, Bytes) {
    complete(send(client, request(Method::GET, path), b"").await).await
}

/// Reads a body to its end, which must be a reset (`why` says why).
async fn body_reset(body: &mut h2::RecvStream, why: &str) -> h2::Error {
    tokio::time::timeout(SAFETY_TIMEOUT, async {
        loop {
            match body.data().await {
                Some(Ok(_)) => continue,
                Some(Err(err)) => return err,
                None => panic!("{why}"),
            }
        }
    })
    .await
    .expect("the reset reaches the client")
}

/// A response that must end in a reset, with its head unless the reset
/// overtook it on its way to this task.
async fn response_reset(
    response: ResponseFuture,
    why: &str,
) -> (Option<http::response::Parts>, h2::Error) {
    match tokio::time::timeout(SAFETY_TIMEOUT, response)
        .await
        .expect("an answer in time")
    {
        Ok(response) => {
            let (head, mut body) = response.into_parts();
            let reset = body_reset(&mut body, why).await;
            (Some(head), reset)
        }
        Err(reset) => (None, reset),
    }
}

/// `GET /events`: the head, which must be a 200, and the stream's body.
async fn open_events(client: &mut SendRequest<Bytes>) -> (http::response::Parts, h2::RecvStream) {
    let response = send(client, request(Method::GET, "/events"), b"").await;
    let (head, body) = tokio::time::timeout(SAFETY_TIMEOUT, response)
        .await
        .expect("a response in time")
        .expect("a response")
        .into_parts();
    assert_eq!(head.status, 200);
    (head, body)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

/// The routes most tests use.
async fn routes(mut req: Request<Connection>) -> Response<ResponseData> {
    match req.uri().path() {
        "/hello" => text(200, "Hello, world!"),
        "/echo" => echo_handler(req).await,
        "/version" => text(200, format!("{:?} {}", req.version(), req.uri())),
        // The body pulled with the streaming API; answers its length.
        "/count" => {
            let mut body = mist::stream(&mut req);
            let mut total = 0usize;
            loop {
                match body.consume(1000).await {
                    Ok(Chunk::Data(bytes)) => total += bytes.len(),
                    Ok(Chunk::Done) => break,
                    Err(err) => return text(400, err.to_string()),
                }
            }
            text(200, total.to_string())
        }
        "/duplex" => Response::new(ResponseData::chunked_stream(mist::stream(&mut req))),
        "/chunks" => Response::new(ResponseData::chunked(
            (0..40u32).map(|i| Bytes::from(vec![b'a' + (i % 26) as u8; 1000 * i as usize])),
        )),
        "/info" => match mist::get_client_info(req.body()) {
            Ok(info) => text(200, info.port.to_string()),
            Err(err) => text(500, err.to_string()),
        },
        "/panic" => panic!("this handler panics on purpose"),
        // Echoes text and binary messages; over HTTP/2 through an extended
        // CONNECT (RFC 8441), which the handler sees as a GET.
        "/ws" if req.method() != Method::GET => text(405, ""),
        "/ws" => mist::websocket(
            req,
            |_conn| ((), None::<mpsc::Receiver<()>>),
            |_state, conn, message| {
                match message {
                    WebsocketMessage::Text(text) => mist::send_text_frame(conn, &text).unwrap(),
                    WebsocketMessage::Binary(data) => mist::send_binary_frame(conn, &data).unwrap(),
                    _ => {}
                }
                Next::Continue
            },
            |_state| {},
        ),
        "/hop-by-hop" => Response::builder()
            .header("connection", "close, x-hop")
            .header("x-hop", "named by connection")
            .header("keep-alive", "timeout=5")
            .header("transfer-encoding", "chunked")
            .header("te", "gzip")
            .body(ResponseData::from("fine"))
            .unwrap(),
        _ => text(404, ""),
    }
}

// ---------------------------------------------------------------------------
// Prior knowledge over plain TCP
// ---------------------------------------------------------------------------

#[tokio::test]
async fn prior_knowledge_gets_http2_with_date_and_length() {
    let server = serve2(routes).await;
    let (mut client, _conn) = connect(&server).await;
    let (head, body) = get(&mut client, "/hello").await;
    assert_eq!(head.status, 200);
    assert_eq!(head.version, Version::HTTP_2);
    assert_eq!(&body[..], b"Hello, world!");
    assert_eq!(head.headers["content-length"], "13");
    assert!(head.headers.contains_key("date"));
    // The handler sees HTTP/2 and a URI with scheme and authority.
    let (_, body) = get(&mut client, "/version?x=1").await;
    assert_eq!(&body[..], b"HTTP/2.0 http://localhost/version?x=1");
}

#[tokio::test]
async fn http1_still_works_on_an_http2_server_and_the_preface_without_it_is_505() {
    let server = serve2(routes).await;
    let resp = support::roundtrip(&server, support::get("/hello")).await;
    assert_eq!((resp.status, resp.text()), (200, "Hello, world!"));
    // Without `with_http2` the preface is an unsupported HTTP version.
    let plain = support::serve(routes).await;
    let resp = support::roundtrip(&plain, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    assert_eq!(resp.status, 505);
}

#[tokio::test]
async fn a_connections_streams_run_at_the_same_time() {
    // Every handler waits at the barrier for all the others: this only
    // completes if the ten requests are in their handlers at once.
    let barrier = Arc::new(Barrier::new(10));
    let server = serve2(move |_req: Request<Connection>| {
        let barrier = Arc::clone(&barrier);
        async move {
            barrier.wait().await;
            text(200, "met")
        }
    })
    .await;
    let (mut client, _conn) = connect(&server).await;
    let mut responses = Vec::new();
    for _ in 0..10 {
        responses.push(send(&mut client, request(Method::GET, "/"), b"").await);
    }
    for response in responses {
        let (head, body) = complete(response).await;
        assert_eq!((head.status.as_u16(), &body[..]), (200, &b"met"[..]));
    }
}

#[tokio::test]
async fn bodies_larger_than_every_window_go_both_ways() {
    let server = serve2(routes).await;
    let (mut client, _conn) = connect(&server).await;
    // 900 KB: above h2's default windows both ways, under the echo limit.
    let body = pattern(900_000);
    let (head, echoed) =
        complete(send(&mut client, request(Method::POST, "/echo"), &body).await).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-length"], "900000");
    assert!(echoed[..] == body[..], "the echo differs");
    // Pulled with the streaming API, 1000 bytes at a time.
    let body = pattern(3_000_000);
    let (_, counted) =
        complete(send(&mut client, request(Method::POST, "/count"), &body).await).await;
    assert_eq!(&counted[..], b"3000000");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_and_the_connection_goes_on() {
    let server = serve2(routes).await;
    let (mut client, _conn) = connect(&server).await;
    let req = Request::builder()
        .method(Method::POST)
        .uri("http://localhost/echo")
        .header("content-length", "2000000")
        .body(())
        .unwrap();
    let (head, body) = complete(send(&mut client, req, &pattern(2_000_000)).await).await;
    assert_eq!((head.status.as_u16(), &body[..]), (413, &b"too large"[..]));
    let (head, _) = get(&mut client, "/hello").await;
    assert_eq!(head.status, 200);
}

#[tokio::test]
async fn the_body_streams_back_while_it_arrives() {
    let server = serve2(routes).await;
    let (client, _conn) = connect(&server).await;
    let mut client = client.ready().await.unwrap();
    let (response, mut upload) = client
        .send_request(request(Method::POST, "/duplex"), false)
        .unwrap();
    upload
        .send_data(Bytes::from_static(b"first"), false)
        .unwrap();
    let (head, mut body) = tokio::time::timeout(SAFETY_TIMEOUT, response)
        .await
        .unwrap()
        .unwrap()
        .into_parts();
    assert_eq!(head.status, 200);
    // The first piece comes back before the rest is sent.
    let first = tokio::time::timeout(SAFETY_TIMEOUT, body.data())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"first");
    upload
        .send_data(Bytes::from_static(b"second"), true)
        .unwrap();
    let mut rest = Vec::new();
    while let Some(piece) = tokio::time::timeout(SAFETY_TIMEOUT, body.data())
        .await
        .unwrap()
    {
        rest.extend_from_slice(&piece.unwrap());
    }
    assert_eq!(rest, b"second");
}

#[tokio::test]
async fn chunked_bodies_and_files_arrive_whole_and_head_gets_no_body() {
    let dir = TestDir::new("h2-file");
    let file = dir.write("data.bin", pattern(200_000));
    let server = serve2(move |req: Request<Connection>| {
        let file = file.clone();
        async move {
            match req.uri().path() {
                "/file" => Response::new(mist::send_file(&file, 0, None).unwrap()),
                "/part" => Response::builder()
                    .status(206)
                    .body(mist::send_file(&file, 1000, Some(70_000)).unwrap())
                    .unwrap(),
                _ => routes(req).await,
            }
        }
    })
    .await;
    let (mut client, _conn) = connect(&server).await;
    let (head, body) = get(&mut client, "/chunks").await;
    assert_eq!(head.status, 200);
    assert!(head.headers.get("content-length").is_none());
    let expected: Vec<u8> = (0..40u32)
        .flat_map(|i| vec![b'a' + (i % 26) as u8; 1000 * i as usize])
        .collect();
    assert!(body[..] == expected[..], "chunked body differs");
    let (head, body) = get(&mut client, "/file").await;
    assert_eq!(head.headers["content-length"], "200000");
    assert!(body[..] == pattern(200_000)[..], "file differs");
    let (head, body) = get(&mut client, "/part").await;
    assert_eq!((head.status.as_u16(), body.len()), (206, 70_000));
    assert!(body[..] == pattern(200_000)[1000..71_000], "range differs");
    let (head, body) = complete(send(&mut client, request(Method::HEAD, "/file"), b"").await).await;
    assert_eq!(
        (head.headers["content-length"].to_str().unwrap(), body.len()),
        ("200000", 0)
    );
}

/// A handler's `content-length` on a stream (a proxy passing on its
/// upstream's) and on a HEAD it answers without the body goes out as it
/// said; a stream that gives more is cut at the length, one that gives
/// less is reset.
#[tokio::test]
async fn declared_lengths_of_streams_and_bodiless_heads_are_kept() {
    let server = serve2(|req: Request<Connection>| async move {
        let (declared, pieces): (&str, &[&'static [u8]]) = match req.uri().path() {
            "/exact" => ("11", &[b"hello", b" ", b"world"]),
            "/longer" => ("5", &[b"hel", b"lo world"]),
            "/shorter" => ("20", &[b"hello"]),
            _ => {
                let body = match req.method() == Method::HEAD {
                    true => ResponseData::empty(),
                    false => ResponseData::from(vec![b'x'; 1000]),
                };
                return Response::builder()
                    .header("content-length", "1000")
                    .body(body)
                    .unwrap();
            }
        };
        let chunks = pieces
            .iter()
            .map(|piece| Ok::<_, std::io::Error>(Bytes::from_static(piece)));
        Response::builder()
            .header("content-length", declared)
            .body(ResponseData::chunked_stream(stream::iter(chunks)))
            .unwrap()
    })
    .await;
    let (mut client, _conn) = connect(&server).await;
    let (head, body) = get(&mut client, "/exact").await;
    assert_eq!(head.headers["content-length"], "11");
    assert_eq!(&body[..], b"hello world");
    let (head, body) = get(&mut client, "/longer").await;
    assert_eq!(head.headers["content-length"], "5");
    assert_eq!(&body[..], b"hello");
    let (head, body) = complete(send(&mut client, request(Method::HEAD, "/page"), b"").await).await;
    assert_eq!(head.headers["content-length"], "1000");
    assert!(body.is_empty());

    let response = send(&mut client, request(Method::GET, "/shorter"), b"").await;
    let (head, failure) =
        response_reset(response, "a body 15 bytes short must not end cleanly").await;
    if let Some(head) = head {
        assert_eq!(head.headers["content-length"], "20");
    }
    assert_eq!(failure.reason(), Some(Reason::INTERNAL_ERROR));
    // The connection carries on.
    let (head, _) = get(&mut client, "/exact").await;
    assert_eq!(head.status, 200);
}

#[tokio::test]
async fn a_failing_stream_resets_the_stream_not_the_connection() {
    // The stream fails once the test has read its first piece.
    let (fail_tx, fail_rx) = oneshot::channel::<()>();
    let fail_rx = Arc::new(Mutex::new(Some(fail_rx)));
    let server = serve2(move |req: Request<Connection>| {
        let fail_rx = fail_rx.lock().unwrap().take();
        async move {
            let Some(fail_rx) = fail_rx else {
                return routes(req).await;
            };
            let first = stream::once(async { Ok(Bytes::from_static(b"partial")) });
            let then = stream::once(async move {
                let _ = fail_rx.await;
                Err(std::io::Error::other("backend went away"))
            });
            Response::new(ResponseData::chunked_stream(first.chain(then)))
        }
    })
    .await;
    let (mut client, _conn) = connect(&server).await;
    let response = send(&mut client, request(Method::GET, "/fails"), b"").await;
    let (head, mut body) = response.await.unwrap().into_parts();
    assert_eq!(head.status, 200);
    let first = tokio::time::timeout(SAFETY_TIMEOUT, body.data())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"partial");
    fail_tx.send(()).unwrap();
    let failure = tokio::time::timeout(SAFETY_TIMEOUT, body.data())
        .await
        .unwrap()
        .expect("the body ends with a reset, not cleanly")
        .expect_err("the body ends with a reset, not more data");
    assert_eq!(failure.reason(), Some(Reason::INTERNAL_ERROR));
    let (head, _) = get(&mut client, "/hello").await;
    assert_eq!(head.status, 200);
}

#[tokio::test]
async fn a_panicking_handler_costs_its_stream_a_500() {
    let server = serve2(routes).await;
    let (mut client, _conn) = connect(&server).await;
    let (head, _) = get(&mut client, "/panic").await;
    assert_eq!(head.status, 500);
    let (head, _) = get(&mut client, "/hello").await;
    assert_eq!(head.status, 200);
}

#[tokio::test]
async fn a_reset_stream_drops_its_handler() {
    struct Guard(Option<oneshot::Sender<()>>);
    impl Drop for Guard {
        fn drop(&mut self) {
            let _ = self.0.take().unwrap().send(());
        }
    }
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (dropped_tx, dropped) = oneshot::channel();
    let dropped_tx = Arc::new(Mutex::new(Some(dropped_tx)));
    let server = serve2(move |_req: Request<Connection>| {
        let guard = Guard(dropped_tx.lock().unwrap().take());
        let started_tx = started_tx.clone();
        async move {
            let _guard = guard;
            started_tx.send(()).unwrap();
            std::future::pending::<()>().await;
            text(200, "never")
        }
    })
    .await;
    let (client, _conn) = connect(&server).await;
    let mut client = client.ready().await.unwrap();
    let (_response, mut upload) = client
        .send_request(request(Method::POST, "/"), false)
        .unwrap();
    started.recv().await.unwrap();
    upload.send_reset(Reason::CANCEL);
    tokio::time::timeout(SAFETY_TIMEOUT, dropped)
        .await
        .expect("the handler was dropped")
        .unwrap();
}

/// Sends a request with `expect: 100-continue` to `path`, waits for the
/// interim `100`, then sends `body`; the final response's status and body.
async fn after_continue(path: &str, body: &'static [u8]) -> (u16, Bytes) {
    let server = serve2(routes).await;
    let (client, _conn) = connect(&server).await;
    let mut client = client.ready().await.unwrap();
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://localhost{path}"))
        .header("expect", "100-continue")
        .body(())
        .unwrap();
    let (mut response, mut upload) = client.send_request(req, false).unwrap();
    let interim = tokio::time::timeout(
        SAFETY_TIMEOUT,
        poll_fn(|cx| response.poll_informational(cx)),
    )
    .await
    .expect("an interim response in time")
    .expect("an interim response")
    .unwrap();
    assert_eq!(interim.status(), StatusCode::CONTINUE);
    upload.send_data(Bytes::from_static(body), true).unwrap();
    let (head, body) = complete(response).await;
    (head.status.as_u16(), body)
}

#[tokio::test]
async fn expect_100_continue_is_answered_when_the_body_is_read() {
    let (status, body) = after_continue("/echo", b"after the 100").await;
    assert_eq!((status, &body[..]), (200, &b"after the 100"[..]));
}

#[tokio::test]
async fn limits_apply_per_request() {
    let server = start(
        mist::new(routes)
            .with_http2()
            .max_request_target(100)
            .max_headers(10),
    )
    .await;
    let (mut client, _conn) = connect(&server).await;
    let (head, _) = get(&mut client, &format!("/hello?{}", "x".repeat(200))).await;
    assert_eq!(head.status, 414);
    let mut req = request(Method::GET, "/hello");
    for i in 0..20 {
        req.headers_mut().insert(
            http::HeaderName::try_from(format!("x-field-{i}")).unwrap(),
            http::HeaderValue::from_static("v"),
        );
    }
    let (head, _) = complete(send(&mut client, req, b"").await).await;
    assert_eq!(head.status, 431);
    let (head, _) = get(&mut client, "/hello").await;
    assert_eq!(head.status, 200);
}

#[tokio::test]
async fn a_header_list_over_max_head_size_is_431() {
    let server = start(mist::new(routes).with_http2().max_head_size(1000)).await;
    let (mut client, _conn) = connect(&server).await;
    let mut req = request(Method::GET, "/hello");
    let long = "v".repeat(2000);
    req.headers_mut()
        .insert("x-long", http::HeaderValue::from_str(&long).unwrap());
    let response = send(&mut client, req, b"").await;
    let head = tokio::time::timeout(SAFETY_TIMEOUT, response)
        .await
        .unwrap()
        .expect("a response");
    assert_eq!(head.status(), 431);
    let (head, _) = get(&mut client, "/hello").await;
    assert_eq!(head.status, 200);
}

#[tokio::test]
async fn a_silent_body_times_out() {
    let server = start(
        mist::new(routes)
            .with_http2()
            .body_read_timeout(Duration::from_millis(200)),
    )
    .await;
    let (client, _conn) = connect(&server).await;
    let mut client = client.ready().await.unwrap();
    let (response, _upload) = client
        .send_request(request(Method::POST, "/echo"), false)
        .unwrap();
    let (head, body) = complete(response).await;
    assert_eq!(head.status, 400);
    assert_eq!(&body[..], b"timed out reading the request body");
}

#[tokio::test]
async fn connection_fields_of_a_handler_are_dropped_and_others_answered() {
    let server = serve2(routes).await;
    let (mut client, _conn) = connect(&server).await;
    let (head, body) = get(&mut client, "/hop-by-hop").await;
    assert_eq!((head.status.as_u16(), &body[..]), (200, &b"fine"[..]));
    for name in [
        "connection",
        "x-hop",
        "keep-alive",
        "transfer-encoding",
        "te",
    ] {
        assert!(head.headers.get(name).is_none(), "{name}");
    }
    // A WebSocket over HTTP/2 is an extended CONNECT: a GET is refused.
    let (head, _) = get(&mut client, "/ws").await;
    assert_eq!(head.status, 400);
    // The peer is known.
    let (_, port) = get(&mut client, "/info").await;
    assert!(std::str::from_utf8(&port).unwrap().parse::<u16>().is_ok());
}

#[tokio::test]
async fn read_request_body_works_over_http2() {
    let server = start(
        mist::new(|req: Request<Bytes>| async move { text(200, req.into_body()) })
            .read_request_body(10, Response::builder().status(413).body("too big").unwrap())
            .with_http2(),
    )
    .await;
    let (mut client, _conn) = connect(&server).await;
    let (head, body) =
        complete(send(&mut client, request(Method::POST, "/"), b"small").await).await;
    assert_eq!((head.status.as_u16(), &body[..]), (200, &b"small"[..]));
    let (head, body) =
        complete(send(&mut client, request(Method::POST, "/"), b"far too large").await).await;
    assert_eq!((head.status.as_u16(), &body[..]), (413, &b"too big"[..]));
}

#[tokio::test]
async fn expect_100_continue_goes_ahead_of_a_response_that_streams_the_body_back() {
    let (status, body) = after_continue("/duplex", b"streamed back").await;
    assert_eq!((status, &body[..]), (200, &b"streamed back"[..]));
}

#[tokio::test]
async fn a_smaller_read_after_a_given_up_one_gets_at_most_what_it_asked() {
    let (ready_tx, mut ready) = mpsc::unbounded_channel();
    let server = serve2(move |mut req: Request<Connection>| {
        let ready_tx = ready_tx.clone();
        async move {
            let mut body = mist::stream(&mut req);
            // Gathers what arrives towards 60,000 bytes, and gives up.
            let gave_up = tokio::time::timeout(Duration::from_millis(100), body.consume(60_000))
                .await
                .is_err();
            ready_tx.send(()).unwrap();
            let mut sizes = vec![gave_up.to_string()];
            loop {
                match body.consume(100).await {
                    Ok(Chunk::Data(piece)) => sizes.push(piece.len().to_string()),
                    Ok(Chunk::Done) => break,
                    Err(err) => return text(400, err.to_string()),
                }
                if sizes.len() > 3 {
                    break;
                }
            }
            text(200, sizes.join(" "))
        }
    })
    .await;
    let (client, _conn) = connect(&server).await;
    let mut client = client.ready().await.unwrap();
    let req = Request::builder()
        .method(Method::POST)
        .uri("http://localhost/")
        .header("content-length", "100000")
        .body(())
        .unwrap();
    let (response, mut upload) = client.send_request(req, false).unwrap();
    upload
        .send_data(Bytes::from(pattern(30_000)), false)
        .unwrap();
    ready.recv().await.unwrap();
    upload
        .send_data(Bytes::from(pattern(70_000)), true)
        .unwrap();
    let (head, body) = complete(response).await;
    assert_eq!(head.status, 200);
    assert_eq!(std::str::from_utf8(&body).unwrap(), "true 100 100 100");
}

#[tokio::test]
async fn cookies_are_one_field_and_the_scheme_is_the_connections() {
    let server = serve2(|req: Request<Connection>| async move {
        let cookies: Vec<_> = req.headers().get_all("cookie").iter().collect();
        text(200, format!("{} {cookies:?}", req.uri()))
    })
    .await;
    let (mut client, _conn) = connect(&server).await;
    let mut req = request(Method::GET, "/c");
    // A client's claim of https over plain TCP does not make it so.
    *req.uri_mut() = "https://localhost/c".parse().unwrap();
    req.headers_mut()
        .append("cookie", http::HeaderValue::from_static("a=1"));
    req.headers_mut()
        .append("cookie", http::HeaderValue::from_static("b=2"));
    let (_, body) = complete(send(&mut client, req, b"").await).await;
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        "http://localhost/c [\"a=1; b=2\"]"
    );
}

// ---------------------------------------------------------------------------
// WebSockets over HTTP/2 (RFC 8441)
// ---------------------------------------------------------------------------

/// A client's side of an HTTP/2 stream as a byte stream, for
/// tokio-tungstenite's client to speak WebSocket frames over.
struct Tunnel {
    send: h2::SendStream<Bytes>,
    recv: h2::RecvStream,
    pending: Bytes,
}

impl AsyncRead for Tunnel {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = self.get_mut();
        while this.pending.is_empty() {
            match this.recv.poll_data(cx) {
                Poll::Ready(Some(Ok(data))) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    this.pending = data;
                }
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Err(std::io::Error::other(err))),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        let this = self.get_mut();
        this.send.reserve_capacity(data.len());
        match this.send.poll_capacity(cx) {
            Poll::Ready(Some(Ok(n))) => {
                let n = n.min(data.len());
                this.send
                    .send_data(Bytes::copy_from_slice(&data[..n]), false)
                    .map_err(std::io::Error::other)?;
                Poll::Ready(Ok(n))
            }
            Poll::Ready(_) => Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let _ = self.get_mut().send.send_data(Bytes::new(), true);
        std::task::Poll::Ready(Ok(()))
    }
}

/// Opens a WebSocket on `path` with an extended CONNECT; the response.
async fn extended_connect(
    client: &mut SendRequest<Bytes>,
    path: &str,
    extensions: Option<&'static str>,
) -> (http::response::Parts, Tunnel) {
    // The server's SETTINGS (with SETTINGS_ENABLE_CONNECT_PROTOCOL) have
    // arrived once a first request has been answered.
    let (head, _) = get(client, "/hello").await;
    assert_eq!(head.status, 200);
    assert!(client.is_extended_connect_protocol_enabled());
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://localhost{path}"))
        .header("sec-websocket-version", "13")
        .body(())
        .unwrap();
    if let Some(extensions) = extensions {
        req.headers_mut().insert(
            "sec-websocket-extensions",
            http::HeaderValue::from_static(extensions),
        );
    }
    req.extensions_mut()
        .insert(h2::ext::Protocol::from("websocket"));
    let mut client = client.clone().ready().await.unwrap();
    let (response, send) = client.send_request(req, false).unwrap();
    let (head, recv) = tokio::time::timeout(SAFETY_TIMEOUT, response)
        .await
        .unwrap()
        .unwrap()
        .into_parts();
    (
        head,
        Tunnel {
            send,
            recv,
            pending: Bytes::new(),
        },
    )
}

#[tokio::test]
async fn a_websocket_runs_over_an_extended_connect() {
    use tokio_tungstenite::tungstenite::{protocol::Role, Message};
    let server = serve2(routes).await;
    let (mut client, _conn) = connect(&server).await;
    let (head, tunnel) = extended_connect(&mut client, "/ws", None).await;
    assert_eq!(head.status, 200);
    assert!(head.headers.get("sec-websocket-accept").is_none());
    let mut ws =
        tokio_tungstenite::WebSocketStream::from_raw_socket(tunnel, Role::Client, None).await;
    ws.send(Message::text("over h2")).await.unwrap();
    let big = pattern(300_000);
    ws.send(Message::binary(big.clone())).await.unwrap();
    let echoed = tokio::time::timeout(SAFETY_TIMEOUT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed, Message::text("over h2"));
    let echoed = tokio::time::timeout(SAFETY_TIMEOUT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(echoed.into_data()[..] == big[..], "the binary echo differs");
    // Another request on the same connection meanwhile.
    let (head, _) = get(&mut client, "/hello").await;
    assert_eq!(head.status, 200);
    // The closing handshake: the server answers the close frame, then
    // ends the stream.
    ws.close(None).await.unwrap();
    let answer = tokio::time::timeout(SAFETY_TIMEOUT, ws.next())
        .await
        .unwrap();
    assert!(matches!(answer, Some(Ok(Message::Close(_)))), "{answer:?}");
    let end = tokio::time::timeout(SAFETY_TIMEOUT, ws.next())
        .await
        .unwrap();
    assert!(end.is_none(), "{end:?}");
}

#[tokio::test]
async fn a_connect_not_answered_with_a_websocket_is_not_a_2xx() {
    let server = serve2(|req: Request<Connection>| async move {
        // Every route answers 200, whatever it is asked.
        text(200, format!("{} {}", req.method(), req.uri()))
    })
    .await;
    let (mut client, _conn) = connect(&server).await;
    // A WebSocket asked of a route that is not one: a 2xx would tell the
    // client its WebSocket is open.
    let (head, _tunnel) = extended_connect(&mut client, "/hello", None).await;
    assert_eq!(head.status, 501);
    // A tunnel of another protocol is refused before the handler.
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri("http://localhost/.well-known/masque/udp/192.0.2.1/53/")
        .body(())
        .unwrap();
    req.extensions_mut()
        .insert(h2::ext::Protocol::from("connect-udp"));
    let mut ready = client.clone().ready().await.unwrap();
    let (response, _upload) = ready.send_request(req, false).unwrap();
    let (head, _) = complete(response).await;
    assert_eq!(head.status, 501);
    // A plain CONNECT reaches the handler with its authority-form target,
    // and its 2xx becomes a 501 too: no tunnel is served.
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri("example.com:443")
        .body(())
        .unwrap();
    let mut ready = client.clone().ready().await.unwrap();
    let (response, _upload) = ready.send_request(req, false).unwrap();
    let (head, _) = complete(response).await;
    assert_eq!(head.status, 501);
}

#[tokio::test]
async fn a_websocket_connect_that_ends_its_stream_is_400() {
    let server = serve2(routes).await;
    let (mut client, _conn) = connect(&server).await;
    let (head, _) = get(&mut client, "/hello").await;
    assert_eq!(head.status, 200);
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri("http://localhost/ws")
        .header("sec-websocket-version", "13")
        .body(())
        .unwrap();
    req.extensions_mut()
        .insert(h2::ext::Protocol::from("websocket"));
    let (head, _) = complete(send(&mut client, req, b"").await).await;
    assert_eq!(head.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_small_websocket_messages_keeps_the_connection() {
    let server = serve2(routes).await;
    let (mut client, _conn) = connect(&server).await;
    let (head, mut tunnel) = extended_connect(&mut client, "/ws", None).await;
    assert_eq!(head.status, 200);
    // 5,000 one-byte text messages, each its own DATA frame: more than
    // `h2`'s default budget of small frames held unread.
    let count = 5_000;
    for _ in 0..count {
        let frame = Bytes::from_static(&[0x81, 0x81, 0, 0, 0, 0, b'x']);
        tunnel.send.send_data(frame, false).unwrap();
    }
    // Every echo comes back: three bytes each.
    let mut echoed = 0;
    let mut buf = vec![0u8; 65536];
    while echoed < count * 3 {
        let n = tokio::time::timeout(SAFETY_TIMEOUT, tunnel.read(&mut buf))
            .await
            .expect("echoes in time")
            .expect("the tunnel stays open");
        assert!(n > 0, "the tunnel ended after {echoed} bytes");
        echoed += n;
    }
    let (head, _) = get(&mut client, "/hello").await;
    assert_eq!(head.status, 200);
}

/// A server whose `/ws` tells the test when `on_close` has run.
async fn on_close_server() -> (Server, mpsc::UnboundedReceiver<()>) {
    let (closed_tx, closed) = mpsc::unbounded_channel();
    let server = serve2(move |req: Request<Connection>| {
        let closed_tx = closed_tx.clone();
        async move {
            if req.uri().path() != "/ws" {
                return routes(req).await;
            }
            mist::websocket(
                req,
                |_conn| ((), None::<mpsc::Receiver<()>>),
                |_state, _conn, _message| Next::Continue,
                move |_state| closed_tx.send(()).unwrap(),
            )
        }
    })
    .await;
    (server, closed)
}

#[tokio::test]
async fn shutdown_closes_a_websocket_over_http2_with_1001() {
    use tokio_tungstenite::tungstenite::{protocol::Role, Message};
    let (server, mut closed) = on_close_server().await;
    let (mut client, conn) = connect(&server).await;
    let (head, tunnel) = extended_connect(&mut client, "/ws", None).await;
    assert_eq!(head.status, 200);
    let mut ws =
        tokio_tungstenite::WebSocketStream::from_raw_socket(tunnel, Role::Client, None).await;
    // A grace far longer than the safety timeout: the WebSocket must close
    // at the stop, not at the grace's end.
    server.shutdown(Duration::from_secs(3600));
    let close = tokio::time::timeout(SAFETY_TIMEOUT, ws.next())
        .await
        .unwrap();
    match close {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a close frame with 1001: {other:?}"),
    }
    // Polled once more, the client answers the close frame; the stream ends.
    let end = tokio::time::timeout(SAFETY_TIMEOUT, ws.next())
        .await
        .unwrap();
    assert!(end.is_none(), "{end:?}");
    closed.recv().await.expect("on_close ran");
    tokio::time::timeout(SAFETY_TIMEOUT, server.wait())
        .await
        .expect("the server stopped");
    let _ = tokio::time::timeout(SAFETY_TIMEOUT, conn)
        .await
        .expect("the connection ended");
}

#[tokio::test]
async fn a_client_reset_of_a_websocket_runs_on_close() {
    let (server, mut closed) = on_close_server().await;
    let (mut client, _conn) = connect(&server).await;
    let (head, mut tunnel) = extended_connect(&mut client, "/ws", None).await;
    assert_eq!(head.status, 200);
    tunnel.send.send_reset(Reason::CANCEL);
    tokio::time::timeout(SAFETY_TIMEOUT, closed.recv())
        .await
        .expect("on_close ran after the reset")
        .unwrap();
}

/// A client that ends its side without a close frame gets the stream's
/// end back, as a WebSocket over TCP gets a FIN for its FIN (RFC 8441 §5:
/// END_STREAM is the FIN, a reset the RST); `on_close` runs.
#[tokio::test]
async fn a_client_ending_its_side_of_a_websocket_gets_the_end_not_a_reset() {
    let (server, mut closed) = on_close_server().await;
    let (mut client, _conn) = connect(&server).await;
    let (head, mut tunnel) = extended_connect(&mut client, "/ws", None).await;
    assert_eq!(head.status, 200);
    tunnel.send.send_data(Bytes::new(), true).unwrap();
    tokio::time::timeout(SAFETY_TIMEOUT, closed.recv())
        .await
        .expect("on_close ran after the client's end")
        .unwrap();
    let end = tokio::time::timeout(SAFETY_TIMEOUT, async {
        loop {
            match tunnel.recv.data().await {
                Some(Ok(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the server's side ends");
    assert!(end.is_none(), "END_STREAM, not {end:?}");
}

#[tokio::test]
async fn a_websocket_over_http2_negotiates_permessage_deflate() {
    let server = serve2(routes).await;
    let (mut client, _conn) = connect(&server).await;
    let (head, _tunnel) = extended_connect(
        &mut client,
        "/ws",
        Some("permessage-deflate; client_max_window_bits"),
    )
    .await;
    assert_eq!(head.status, 200);
    let agreed = head.headers["sec-websocket-extensions"].to_str().unwrap();
    assert!(agreed.starts_with("permessage-deflate"), "{agreed}");
}

// ---------------------------------------------------------------------------
// Event streams
// ---------------------------------------------------------------------------

#[tokio::test]
async fn events_stream_and_a_reset_ends_the_loop() {
    let (feed_tx, mut feed_rx) = mpsc::unbounded_channel::<mpsc::Sender<String>>();
    let server = serve2(move |req: Request<Connection>| {
        let feed_tx = feed_tx.clone();
        async move {
            if req.uri().path() != "/events" {
                return routes(req).await;
            }
            mist::server_sent_events(
                req,
                Response::new(()),
                move || {
                    let (tx, rx) = mpsc::channel(8);
                    feed_tx.send(tx).unwrap();
                    Ok::<_, String>(((), rx))
                },
                |message: String, conn, _state| match mist::send_event(conn, mist::event(message)) {
                    Ok(()) => Next::Continue,
                    Err(_) => Next::Stop,
                },
            )
        }
    })
    .await;
    let (mut client, _conn) = connect(&server).await;
    let (head, mut body) = open_events(&mut client).await;
    assert_eq!(head.headers["content-type"], "text/event-stream");
    let feed = feed_rx.recv().await.unwrap();
    feed.send("hello".to_string()).await.unwrap();
    let mut seen = Vec::new();
    while !seen.ends_with(b"data: hello\n\n") {
        let piece = tokio::time::timeout(SAFETY_TIMEOUT, body.data())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.extend_from_slice(&piece);
    }
    // The client leaves: the loop ends and drops its receiver.
    drop(body);
    tokio::time::timeout(SAFETY_TIMEOUT, feed.closed())
        .await
        .expect("the event stream's loop ended");
    // The connection carries on.
    let (head, _) = get(&mut client, "/hello").await;
    assert_eq!(head.status, 200);
}

// ---------------------------------------------------------------------------
// Connection life
// ---------------------------------------------------------------------------

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_keep_alive_timeout() {
    let server = start(
        mist::new(routes)
            .with_http2()
            .keep_alive_timeout(Duration::from_millis(200)),
    )
    .await;
    let (mut client, conn) = connect(&server).await;
    let (head, _) = get(&mut client, "/hello").await;
    assert_eq!(head.status, 200);
    // The client keeps its handle: only the server can end the connection.
    let ended = tokio::time::timeout(SAFETY_TIMEOUT, conn).await;
    assert!(ended.is_ok(), "the server closed the idle connection");
    assert!(client.ready().await.is_err(), "no new streams after GOAWAY");
}

/// A raw client that sends the preface and its SETTINGS, then reads
/// everything and answers nothing (no SETTINGS ack, no PING).
async fn silent_client(server: &Server) -> TcpStream {
    let mut tcp = TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .unwrap();
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    tcp
}

/// Reads until the server closes the connection.
async fn read_to_close(tcp: &mut TcpStream) {
    let mut sink = [0u8; 1024];
    let closed = tokio::time::timeout(SAFETY_TIMEOUT, async {
        loop {
            match tcp.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server closed the connection");
}

#[tokio::test]
async fn a_client_that_answers_nothing_is_closed_after_the_keep_alive_timeout() {
    let server = start(
        mist::new(routes)
            .with_http2()
            .keep_alive_timeout(Duration::from_millis(100)),
    )
    .await;
    let mut tcp = silent_client(&server).await;
    read_to_close(&mut tcp).await;
}

#[tokio::test]
async fn keep_alive_pings_close_a_client_that_does_not_answer() {
    // An idle timeout far longer than the safety timeout: only the PINGs
    // can end this connection.
    let server = start(
        mist::new(routes)
            .with_http2()
            .keep_alive_timeout(Duration::from_secs(3600))
            .http2_keep_alive_interval(Duration::from_millis(100)),
    )
    .await;
    let mut tcp = silent_client(&server).await;
    read_to_close(&mut tcp).await;
}

#[tokio::test]
async fn keep_alive_pings_keep_a_client_that_answers() {
    // A request slower than several PING intervals: `h2`'s client answers
    // the PINGs, and the connection is still there for the response.
    let server = start(
        mist::new(|_req: Request<Connection>| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            text(200, "still here")
        })
        .with_http2()
        .http2_keep_alive_interval(Duration::from_millis(50)),
    )
    .await;
    let (mut client, _conn) = connect(&server).await;
    let (head, body) = get(&mut client, "/").await;
    assert_eq!((head.status.as_u16(), &body[..]), (200, &b"still here"[..]));
    let (head, _) = get(&mut client, "/").await;
    assert_eq!(head.status, 200);
}

#[tokio::test]
async fn a_silent_client_does_not_hold_up_a_shutdown() {
    let server = serve2(routes).await;
    let mut tcp = silent_client(&server).await;
    // The HTTP/2 engine has the connection once the server's SETTINGS come.
    let mut first = [0u8; 9];
    tcp.read_exact(&mut first).await.unwrap();
    assert_eq!(first[3], 0x4, "a SETTINGS frame");
    // A grace far longer than the safety timeout: the server must not
    // wait for it to end a connection with no stream open.
    server.shutdown(Duration::from_secs(3600));
    tokio::time::timeout(SAFETY_TIMEOUT, server.wait())
        .await
        .expect("the server stopped without waiting out the grace");
    read_to_close(&mut tcp).await;
}

#[tokio::test]
async fn a_preface_in_pieces_is_still_http2() {
    let server = serve2(routes).await;
    let mut tcp = TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .unwrap();
    // Twelve bytes, enough for the HTTP/1.1 parser to refuse the version:
    // the server answers them (an HTTP/1.1 505 without the fix, HTTP/2's
    // SETTINGS with it), so the rest is sent after they were parsed.
    tcp.write_all(b"PRI * HTTP/2").await.unwrap();
    let (kind, flags) = read_frame(&mut tcp).await;
    assert_eq!((kind, flags), (0x4, 0), "the server's SETTINGS");
    tcp.write_all(b".0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    // The server acknowledges the client's SETTINGS: it read the preface.
    while read_frame(&mut tcp).await != (0x4, 0x1) {}
}

/// Reads one HTTP/2 frame: its type and flags. Panics on an HTTP/1.1
/// response.
async fn read_frame(tcp: &mut TcpStream) -> (u8, u8) {
    let mut head = [0u8; 9];
    tokio::time::timeout(SAFETY_TIMEOUT, tcp.read_exact(&mut head))
        .await
        .expect("a frame in time")
        .expect("a frame");
    assert!(!head.starts_with(b"HTTP/1.1 "), "an HTTP/1.1 response");
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await.unwrap();
    (head[3], head[4])
}

#[tokio::test]
async fn shutdown_lets_the_request_in_flight_finish() {
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (release_tx, release) = oneshot::channel::<()>();
    let release = Arc::new(tokio::sync::Mutex::new(Some(release)));
    let server = serve2(move |_req: Request<Connection>| {
        let started_tx = started_tx.clone();
        let release = Arc::clone(&release);
        async move {
            started_tx.send(()).unwrap();
            let release = release.lock().await.take().unwrap();
            let _ = release.await;
            text(200, "finished")
        }
    })
    .await;
    let (mut client, conn) = connect(&server).await;
    let response = send(&mut client, request(Method::GET, "/"), b"").await;
    started.recv().await.unwrap();
    server.shutdown(SAFETY_TIMEOUT);
    release_tx.send(()).unwrap();
    let (head, body) = complete(response).await;
    assert_eq!((head.status.as_u16(), &body[..]), (200, &b"finished"[..]));
    // The client keeps its handle: the server ends the connection.
    tokio::time::timeout(SAFETY_TIMEOUT, server.wait())
        .await
        .expect("the server stopped");
    tokio::time::timeout(SAFETY_TIMEOUT, conn)
        .await
        .expect("the connection ended")
        .unwrap()
        .ok();
    assert!(client.ready().await.is_err(), "no new streams after GOAWAY");
}

// ---------------------------------------------------------------------------
// ALPN over TLS
// ---------------------------------------------------------------------------

/// A TLS client offering `alpn`; returns the stream and what was agreed.
async fn connect_tls(
    port: u16,
    ca_pem: &str,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut config = Arc::unwrap_or_clone(tls_client_config(ca_pem));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    tokio::time::timeout(SAFETY_TIMEOUT, connector.connect(name, tcp))
        .await
        .unwrap()
        .expect("TLS handshake")
}

#[tokio::test]
async fn alpn_chooses_h2_only_when_the_server_has_it() {
    let ca = TestCa::new("mist test CA");
    let dir = TestDir::new("h2-tls");
    let (cert, key) = write_leaf(&dir, "localhost", &ca.leaf("localhost", true));
    let server = start_tls(mist::new(routes).with_http2(), &cert, &key).await;
    let tls = connect_tls(server.port(), &ca.pem, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut client, _conn) = client_over(tls).await;
    let mut req = request(Method::GET, "/version");
    *req.uri_mut() = "https://localhost/version".parse().unwrap();
    let (head, body) = complete(send(&mut client, req, b"").await).await;
    assert_eq!(head.version, Version::HTTP_2);
    assert_eq!(&body[..], b"HTTP/2.0 https://localhost/version");
    let big = pattern(500_000);
    let (_, echoed) = complete(send(&mut client, request(Method::POST, "/echo"), &big).await).await;
    assert!(echoed[..] == big[..], "the echo over TLS differs");
    // A client that offers only HTTP/1.1 gets it.
    let tls = connect_tls(server.port(), &ca.pem, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    // A server without HTTP/2 does not agree to it.
    let plain = start_tls(mist::new(routes), &cert, &key).await;
    let tls = connect_tls(plain.port(), &ca.pem, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
}

/// An event stream whose client grants no window is let go after the
/// server's write timeout, and reset: its end would otherwise queue
/// behind bytes the client does not take and keep the stream open.
#[tokio::test]
async fn an_event_stream_to_a_client_granting_no_window_is_reset_after_the_write_timeout() {
    struct Ended(mpsc::UnboundedSender<()>);
    impl Drop for Ended {
        fn drop(&mut self) {
            let _ = self.0.send(());
        }
    }
    let (ended_tx, mut ended) = mpsc::unbounded_channel();
    let builder = mist::new(move |req: Request<Connection>| {
        let ended = Ended(ended_tx.clone());
        async move {
            mist::server_sent_events(
                req,
                Response::new(()),
                move || {
                    let flood = stream::repeat(());
                    Ok::<_, String>((ended, mist::Messages::from_stream(flood)))
                },
                |(), conn, _ended| {
                    let _ = mist::send_event(conn, mist::event("x".repeat(16 * 1024)));
                    Next::Continue
                },
            )
        }
    })
    .with_http2()
    .write_timeout(Duration::from_millis(300));
    let server = start(builder).await;
    let (mut client, _conn) = connect(&server).await;
    let (_, mut body) = open_events(&mut client).await;
    // The client takes frames but never gives the window back.
    tokio::time::timeout(SAFETY_TIMEOUT, ended.recv())
        .await
        .expect("the stream ends after the write timeout")
        .unwrap();
    let failure = body_reset(
        &mut body,
        "the stream must be reset, not ended behind stalled bytes",
    )
    .await;
    assert_eq!(failure.reason(), Some(Reason::CANCEL));
}

/// An event stream whose source of messages panics is reset, not ended
/// as if it were whole.
#[tokio::test]
async fn an_event_stream_whose_source_panics_is_reset() {
    let server = serve2(|req: Request<Connection>| async move {
        if req.uri().path() != "/events" {
            return routes(req).await;
        }
        mist::server_sent_events(
            req,
            Response::new(()),
            || {
                let mut polls = 0;
                let source = stream::poll_fn(move |_| {
                    polls += 1;
                    if polls > 1 {
                        panic!("the message source panics on purpose");
                    }
                    std::task::Poll::Ready(Some(()))
                });
                Ok::<_, String>(((), mist::Messages::from_stream(source)))
            },
            |(), conn, ()| {
                let _ = mist::send_event(conn, mist::event("x"));
                Next::Continue
            },
        )
    })
    .await;
    let (mut client, _conn) = connect(&server).await;
    let response = send(&mut client, request(Method::GET, "/events"), b"").await;
    let (_, failure) = response_reset(
        response,
        "a stream cut short by a panic must not end cleanly",
    )
    .await;
    assert_eq!(failure.reason(), Some(Reason::INTERNAL_ERROR));
    // The connection carries on.
    let (head, _) = get(&mut client, "/hello").await;
    assert_eq!(head.status, 200);
}

/// Found by an HTTP/2 probe: what mist's HTTP/1.1 parser refuses, `h2`
/// let through, and a proxy passing the request on over HTTP/1.1 could
/// read otherwise. Each is a 400 on its stream; the connection serves on.
#[tokio::test]
async fn hrs_targets_and_hosts_refused_over_http1_are_refused_over_http2() {
    let server = serve2(support::fixed("served")).await;
    let (mut client, _connection) = connect(&server).await;
    let with_header = |uri: &str, name: &'static str, values: &[&'static str]| {
        let mut req = Request::get(uri).body(()).unwrap();
        for value in values {
            req.headers_mut()
                .append(name, http::HeaderValue::from_static(value));
        }
        req
    };
    for (req, why) in [
        (
            with_header("http://localhost/", "host", &["evil.example"]),
            "another host",
        ),
        (
            with_header("http://localhost/", "host", &["localhost", "localhost"]),
            "two hosts",
        ),
        (with_header("http://u:p@localhost/", "x", &[]), "userinfo"),
        (
            with_header("http://localhost:abc/", "x", &[]),
            "a port that is no number",
        ),
        (
            with_header("http://localhost/", "x-foo", &[" bar"]),
            "leading space",
        ),
        (
            with_header("http://localhost/", "x-foo", &["bar\t"]),
            "trailing tab",
        ),
    ] {
        let (parts, _) = complete(send(&mut client, req, b"").await).await;
        assert_eq!(parts.status, 400, "{why}");
    }
    for uri in [
        "http://localhost/",
        "http://LOCALHOST/",
        "http://localhost:8080/a?b",
    ] {
        let (parts, body) =
            complete(send(&mut client, with_header(uri, "x", &[]), b"").await).await;
        assert_eq!(
            (parts.status.as_u16(), &body[..]),
            (200, &b"served"[..]),
            "{uri}"
        );
    }
    let default_port = with_header("http://localhost/", "host", &["localhost:80"]);
    assert_eq!(
        complete(send(&mut client, default_port, b"").await)
            .await
            .0
            .status,
        200,
        "the scheme's default port, written or not, is the same host"
    );
    let same = with_header("http://localhost:8080/", "host", &["LocalHost:8080"]);
    assert_eq!(
        complete(send(&mut client, same, b"").await).await.0.status,
        200
    );
}
