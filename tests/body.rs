//! Request bodies read lazily from the socket, through a real client.

mod support;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response};
use mist::{Chunk, Connection, ReadError, ResponseData};
use support::{post, roundtrip, serve, start, text, Client};

/// Reads the body whole with a limit of 100 bytes and reports the outcome.
async fn read_100(req: Request<Connection>) -> Response<ResponseData> {
    match mist::read_body(req, 100).await {
        Ok(req) => Response::new(ResponseData::from(req.into_body())),
        Err(ReadError::ExcessBody) => text(413, "excess"),
        Err(ReadError::MalformedBody) => text(400, "malformed"),
        Err(err) => text(500, err.to_string()),
    }
}

#[tokio::test]
async fn read_body_returns_content_length_body() {
    let server = serve(read_100).await;
    assert_eq!(
        roundtrip(&server, post("/", b"hello body")).await.text(),
        "hello body"
    );
}

#[tokio::test]
async fn read_body_accepts_body_exactly_at_limit() {
    let server = serve(read_100).await;
    let body = [b'z'; 100];
    assert_eq!(roundtrip(&server, post("/", &body)).await.body, body);
}

#[tokio::test]
async fn read_body_refuses_declared_excess_without_reading_it() {
    let server = serve(read_100).await;
    let mut client = Client::connect(&server).await;
    // Only the head is sent: the answer cannot depend on reading the body.
    client
        .send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n")
        .await;
    let resp = client.response().await;
    assert_eq!(resp.status, 413);
    assert!(resp.closes(), "a large unread body cannot be skipped");
}

#[tokio::test]
async fn read_body_refuses_chunked_excess_as_soon_as_decoded() {
    let server = serve(read_100).await;
    let mut client = Client::connect(&server).await;
    // 60 + 60 bytes in two chunks, and the body never ends: the limit must
    // trip on what was decoded, not wait for the end.
    let chunk = format!("3c\r\n{}\r\n", "a".repeat(60));
    client
        .send(format!(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}"
        ))
        .await;
    let resp = client.response().await;
    assert_eq!(resp.status, 413);
}

#[tokio::test]
async fn read_body_reads_chunked_with_extensions_and_trailers() {
    let server = serve(read_100).await;
    let resp = roundtrip(
        &server,
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Checksum: abc\r\n\r\n",
    )
    .await;
    assert_eq!(resp.text(), "hello world");
}

#[tokio::test]
async fn read_body_reports_malformed_chunked_body() {
    let server = serve(read_100).await;
    let mut client = Client::connect(&server).await;
    client
        .send("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
        .await;
    let resp = client.response().await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.text(), "malformed");
    assert!(resp.closes());
}

#[tokio::test]
async fn read_body_reports_short_body_as_malformed() {
    let server = serve(read_100).await;
    let mut client = Client::connect(&server).await;
    client
        .send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 50\r\n\r\nonly this")
        .await;
    // The client gives up sending, but can still read the answer.
    client.stream.shutdown().await.unwrap();
    let resp = client.response().await;
    assert_eq!(resp.status, 400);
}

#[tokio::test]
async fn read_body_times_out_on_a_silent_client() {
    let server =
        start(mist::new(read_100).body_read_timeout(std::time::Duration::from_millis(100))).await;
    let mut client = Client::connect(&server).await;
    client
        .send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 50\r\n\r\nsome")
        .await;
    let resp = client.response().await;
    assert_eq!(resp.status, 500);
    assert_eq!(resp.text(), ReadError::Timeout.to_string());
    assert!(resp.closes());
}

#[tokio::test]
async fn read_body_of_bodyless_request_is_empty() {
    let server = serve(|req: Request<Connection>| async move {
        let body = mist::read_body(req, 0).await.unwrap().into_body();
        text(200, format!("{} bytes", body.len()))
    })
    .await;
    assert_eq!(
        roundtrip(&server, support::get("/")).await.text(),
        "0 bytes"
    );
}

/// Streams the body with `consume(7)` and reports the piece sizes.
async fn consume_7(mut req: Request<Connection>) -> Response<ResponseData> {
    let mut body = mist::stream(&mut req);
    let mut pieces = Vec::new();
    let mut all = Vec::new();
    loop {
        match body.consume(7).await {
            Ok(Chunk::Data(bytes)) => {
                pieces.push(bytes.len());
                all.extend_from_slice(&bytes);
            }
            Ok(Chunk::Done) => break,
            Err(err) => return text(400, err.to_string()),
        }
    }
    assert!(
        matches!(body.consume(7).await, Ok(Chunk::Done)),
        "done stays done"
    );
    assert!(pieces.iter().all(|&n| (1..=7).contains(&n)), "{pieces:?}");
    Response::new(ResponseData::from(all))
}

#[tokio::test]
async fn stream_pulls_content_length_body_in_pieces() {
    let server = serve(consume_7).await;
    let body: Vec<u8> = (0..1000u32).map(|i| (i % 256) as u8).collect();
    assert_eq!(roundtrip(&server, post("/", &body)).await.body, body);
}

#[tokio::test]
async fn stream_pulls_chunked_body_in_pieces() {
    let server = serve(consume_7).await;
    let resp = roundtrip(
        &server,
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10;x=y\r\n0123456789abcdef\r\n3\r\nxyz\r\n0\r\nTrailer: t\r\n\r\n",
    )
    .await;
    assert_eq!(resp.text(), "0123456789abcdefxyz");
}

#[tokio::test]
async fn stream_works_as_futures_stream() {
    let server = serve(|mut req: Request<Connection>| async move {
        let mut body = mist::stream(&mut req);
        let mut total = 0;
        while let Some(piece) = body.next().await {
            total += piece.unwrap().len();
        }
        text(200, total.to_string())
    })
    .await;
    let body = vec![7u8; 300_000];
    assert_eq!(roundtrip(&server, post("/", &body)).await.text(), "300000");
}

#[tokio::test]
async fn stream_reports_malformed_chunked_body() {
    let server = serve(consume_7).await;
    let mut client = Client::connect(&server).await;
    client
        .send("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX")
        .await;
    assert_eq!(client.response().await.status, 400);
}

#[tokio::test]
async fn read_request_body_hands_bytes_to_the_handler() {
    let failure = Response::builder()
        .status(413)
        .body("too big for me")
        .unwrap();
    let builder = mist::new(|req: Request<Bytes>| async move {
        text(
            200,
            format!("{} {}", req.method(), String::from_utf8_lossy(req.body())),
        )
    })
    .read_request_body(10, failure);
    let server = start(builder).await;
    assert_eq!(
        roundtrip(&server, post("/", b"small")).await.text(),
        "POST small"
    );
    let resp = roundtrip(&server, post("/", b"far too large a body")).await;
    assert_eq!(resp.status, 413);
    assert_eq!(resp.text(), "too big for me");
    let resp = roundtrip(
        &server,
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nq\r\n",
    )
    .await;
    assert_eq!(
        resp.status, 413,
        "malformed bodies get the failure response too"
    );
}

#[tokio::test]
async fn client_info_reports_the_peer() {
    let server = serve(|req: Request<Connection>| async move {
        let info = mist::get_client_info(req.body()).unwrap();
        text(
            200,
            format!(
                "{} {}",
                mist::ip_address_to_string(&info.ip_address),
                info.port
            ),
        )
    })
    .await;
    let mut client = Client::connect(&server).await;
    let local = client.stream.local_addr().unwrap();
    client.send(support::get("/")).await;
    assert_eq!(
        client.response().await.text(),
        format!("127.0.0.1 {}", local.port())
    );
}

#[tokio::test]
async fn client_info_reports_ipv6_loopback_as_short_form() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this machine; skipping");
        return;
    }
    let server = mist::new(|req: Request<Connection>| async move {
        let info = mist::get_client_info(req.body()).unwrap();
        text(200, mist::ip_address_to_string(&info.ip_address))
    })
    .port(0)
    .bind("::1")
    .after_start(|_, _, _| {})
    .start_http()
    .await
    .unwrap();
    let stream = tokio::net::TcpStream::connect(("::1", server.port()))
        .await
        .unwrap();
    let mut client = Client::from_stream(stream);
    client.send(support::get("/")).await;
    assert_eq!(client.response().await.text(), "::1");
}

use tokio::io::AsyncWriteExt;

/// Streams the request body back as the response's chunks, as it arrives.
async fn stream_back(mut req: Request<Connection>) -> Response<ResponseData> {
    let body = mist::stream(&mut req);
    Response::new(ResponseData::chunked_stream(body))
}

/// The response's stream reads the request body while the response is
/// written: the first piece comes back before the client sends the rest,
/// and the connection goes on afterwards.
#[tokio::test]
async fn a_response_stream_reads_the_request_body_as_it_arrives() {
    let server = serve(stream_back).await;
    let mut client = Client::connect(&server).await;
    client
        .send("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhello")
        .await;
    let head = client.head_response().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("transfer-encoding"), Some("chunked"));
    assert_eq!(client.next_chunk().await.unwrap(), b"hello");
    client.send("world").await;
    assert_eq!(client.next_chunk().await.unwrap(), b"world");
    assert_eq!(client.next_chunk().await, None);
    client.send(post("/", b"again")).await;
    assert_eq!(client.response().await.text(), "again");
}

/// A chunked request body streams back the same way.
#[tokio::test]
async fn a_chunked_request_body_streams_into_the_response() {
    let server = serve(stream_back).await;
    let mut client = Client::connect(&server).await;
    client
        .send("POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n")
        .await;
    assert_eq!(client.head_response().await.status, 200);
    assert_eq!(client.next_chunk().await.unwrap(), b"one");
    client.send("3\r\ntwo\r\n0\r\n\r\n").await;
    assert_eq!(client.next_chunk().await.unwrap(), b"two");
    assert_eq!(client.next_chunk().await, None);
}

/// A client waiting for `100 Continue` gets it ahead of the response whose
/// stream will read its body.
#[tokio::test]
async fn a_streamed_body_is_asked_for_with_100_continue() {
    let server = serve(stream_back).await;
    let mut client = Client::connect(&server).await;
    client
        .send("POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        .await;
    assert_eq!(client.head_response().await.status, 100);
    assert_eq!(client.head_response().await.status, 200);
    client.send("body").await;
    assert_eq!(client.next_chunk().await.unwrap(), b"body");
    assert_eq!(client.next_chunk().await, None);
}

/// A body larger than the server would discard is no reason to close when
/// the response's stream reads all of it.
#[tokio::test]
async fn a_large_streamed_body_keeps_the_connection() {
    let server = serve(stream_back).await;
    let mut client = Client::connect(&server).await;
    let body = vec![b'x'; 1024 * 1024];
    client.send(post("/", &body)).await;
    let resp = client.response().await;
    assert_eq!(resp.body.len(), body.len());
    assert_eq!(resp.header("connection"), None);
    client.send(post("/", b"still open")).await;
    assert_eq!(client.response().await.text(), "still open");
}

/// A stream that stops reading early: the rest of a large body is not
/// read, and the connection closes after the complete response.
#[tokio::test]
async fn a_stream_that_stops_early_closes_after_a_large_body() {
    let server = serve(|mut req: Request<Connection>| async move {
        let first = mist::stream(&mut req).take(1);
        Response::new(ResponseData::chunked_stream(first))
    })
    .await;
    let mut client = Client::connect(&server).await;
    let body = vec![b'y'; 1024 * 1024];
    // The client may still be sending when the server closes.
    let _ = client.try_send(post("/", &body)).await;
    let resp = client.response().await;
    assert!(!resp.body.is_empty() && resp.body.iter().all(|&b| b == b'y'));
    assert!(client.is_closed().await);
}

/// A client that goes silent halfway through a body that streams back:
/// the body's read timeout fails the stream, and the connection ends
/// without the last chunk (a reset), so the client cannot take the
/// response as whole. Nothing waits forever.
#[tokio::test]
async fn a_silent_client_fails_a_streamed_body_without_a_last_chunk() {
    let server =
        start(mist::new(stream_back).body_read_timeout(std::time::Duration::from_millis(100)))
            .await;
    let mut client = Client::connect(&server).await;
    client
        .send("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 50\r\n\r\nsome")
        .await;
    assert_eq!(client.head_response().await.status, 200);
    assert_eq!(client.next_chunk().await.unwrap(), b"some");
    let rest = client.read_to_close().await;
    assert!(!rest.ends_with(b"0\r\n\r\n"), "no last chunk: {rest:?}");
}

/// A stream that swallows the body's error ends cleanly, but what follows
/// a malformed chunk is not a request: the connection closes after the
/// response, and the bytes after the bad chunk are never answered.
#[tokio::test]
async fn bytes_after_a_malformed_streamed_body_are_not_a_request() {
    let server = serve(|mut req: Request<Connection>| async move {
        if req.uri().path() == "/admin" {
            return text(200, "smuggled");
        }
        let pieces = mist::stream(&mut req).filter_map(|piece| {
            std::future::ready(piece.ok().map(Ok::<_, std::convert::Infallible>))
        });
        Response::new(ResponseData::chunked_stream(pieces))
    })
    .await;
    let mut client = Client::connect(&server).await;
    client
        .send(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\nXGET /admin HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .await;
    let first = client.response().await;
    assert_eq!(first.text(), "hello");
    let rest = client.read_to_close().await;
    assert!(
        !String::from_utf8_lossy(&rest).contains("smuggled"),
        "{rest:?}"
    );
}

/// A response that will not write its stream (HEAD) does not ask for the
/// body with `100 Continue`: the client never sends it, and the
/// connection closes after the head as for any unread body.
#[tokio::test]
async fn no_100_continue_when_the_stream_is_not_written() {
    let server = serve(stream_back).await;
    let mut client = Client::connect(&server).await;
    client
        .send("HEAD / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 10000000\r\n\r\n")
        .await;
    let head = client.head_response().await;
    assert_eq!(head.status, 200);
    assert!(head.closes(), "{:?}", head.header("connection"));
    assert!(client.is_closed().await);
}

/// A request pipelined right behind a body that streams back is answered
/// after it, in order, on the same connection.
#[tokio::test]
async fn a_request_pipelined_after_a_streamed_body_is_answered_in_order() {
    let server = serve(|req: Request<Connection>| async move {
        if req.method() == http::Method::GET {
            return text(200, "next");
        }
        stream_back(req).await
    })
    .await;
    let mut client = Client::connect(&server).await;
    client
        .send(
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nfirst\
             GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        )
        .await;
    assert_eq!(client.response().await.text(), "first");
    assert_eq!(client.response().await.text(), "next");
}
