//! `ResponseData::upgrade`: protocols of the handler's own after a `101`
//! (HTTP/1.1) or a `2xx` to CONNECT (HTTP/1.1 and HTTP/2), through real
//! sockets, plain and over TLS; and the handler's mistakes.

mod support;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use mist::{Connection, ResponseData};
use support::{serve, Client, SAFETY_TIMEOUT};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Echoes every byte until the client ends its side, then ends its own.
fn echo_body() -> ResponseData {
    ResponseData::upgrade(|mut io| async move {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = io.read(&mut buf).await {
            if io.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
        let _ = io.shutdown().await;
    })
}

/// `/switch` answers 101 with the echo (its `connection: close` replaced
/// by the engine); `/tunnel` is the echo as a 200 (a mistake unless the
/// request is a CONNECT); `/bare` a 101 without `upgrade` (a mistake);
/// `/panic` switches, then panics; `/reset` switches, then resets;
/// `/stopping` switches, then waits for the server's shutdown; `/stubborn`
/// switches and never ends. CONNECT
/// opens the echo as a tunnel, with a 204 to `nocontent.example`.
async fn handler(req: Request<Connection>) -> Response<ResponseData> {
    let status = match (req.method(), req.uri().path()) {
        (&Method::CONNECT, _) if req.uri().host() == Some("nocontent.example") => {
            StatusCode::NO_CONTENT
        }
        (&Method::CONNECT, _) | (_, "/tunnel") => StatusCode::OK,
        (_, "/bare") => {
            let mut bare = Response::new(echo_body());
            *bare.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            return bare;
        }
        (_, "/panic") => {
            return switching(ResponseData::upgrade(|mut io| async move {
                let _ = io.write_all(b"about to panic").await;
                let _ = io.flush().await;
                panic!("an upgraded connection's code panics on purpose");
            }));
        }
        (_, "/reset") => {
            return switching(ResponseData::upgrade(|mut io| async move {
                let _ = io.write_all(b"about to panic").await;
                let _ = io.flush().await;
                io.reset();
            }));
        }
        (_, "/stubborn") => {
            return switching(ResponseData::upgrade(|io| async move {
                let _keep = io;
                std::future::pending::<()>().await;
            }));
        }
        (_, "/stopping") => {
            return switching(ResponseData::upgrade(|mut io| async move {
                io.stopping().await;
                let _ = io.write_all(b"stopping").await;
                let _ = io.shutdown().await;
            }));
        }
        _ => StatusCode::SWITCHING_PROTOCOLS,
    };
    let mut response = switching(echo_body());
    *response.status_mut() = status;
    response
}

fn switching(body: ResponseData) -> Response<ResponseData> {
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "echo")
        .header(header::CONNECTION, "close")
        .body(body)
        .unwrap()
}

/// Reads up to the end of a response head; the bytes after it stay.
async fn read_head<S: AsyncRead + Unpin>(io: &mut S, rest: &mut Vec<u8>) -> String {
    let mut buf = [0u8; 1024];
    loop {
        if let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8(rest[..end + 4].to_vec()).unwrap();
            rest.drain(..end + 4);
            return head;
        }
        let n = tokio::time::timeout(SAFETY_TIMEOUT, io.read(&mut buf))
            .await
            .expect("a head in time")
            .expect("read");
        assert!(n > 0, "the connection closed before a head: {rest:?}");
        rest.extend_from_slice(&buf[..n]);
    }
}

/// Reads exactly `len` bytes, starting with `rest`.
async fn read_exactly<S: AsyncRead + Unpin>(io: &mut S, rest: &mut Vec<u8>, len: usize) -> Vec<u8> {
    while rest.len() < len {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(SAFETY_TIMEOUT, io.read(&mut buf))
            .await
            .expect("bytes in time")
            .expect("read");
        assert!(n > 0, "the connection closed early");
        rest.extend_from_slice(&buf[..n]);
    }
    rest.drain(..len).collect()
}

/// The whole exchange on one stream: the request with bytes of the new
/// protocol right behind it, the head, those bytes echoed, more bytes
/// echoed, and the end answered with the end.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S, request: &str) -> String {
    io.write_all(format!("{request}early").as_bytes())
        .await
        .unwrap();
    io.flush().await.unwrap();
    let mut rest = Vec::new();
    let head = read_head(io, &mut rest).await;
    assert_eq!(read_exactly(io, &mut rest, 5).await, b"early", "{head}");
    io.write_all(b"and later").await.unwrap();
    io.flush().await.unwrap();
    assert_eq!(read_exactly(io, &mut rest, 9).await, b"and later");
    io.shutdown().await.unwrap();
    let mut end = Vec::new();
    tokio::time::timeout(SAFETY_TIMEOUT, io.read_to_end(&mut end))
        .await
        .expect("the end in time")
        .expect("a clean end");
    assert!(rest.is_empty() && end.is_empty(), "{rest:?} {end:?}");
    head
}

/// A head after which the bytes are the new protocol's: no framing fields.
fn assert_unframed(head: &str) {
    assert!(
        !head.contains("content-length") && !head.contains("transfer-encoding"),
        "{head}"
    );
}

/// A plain TCP connection to `server`.
async fn tcp(server: &mist::Server) -> TcpStream {
    TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .unwrap()
}

/// Asks `path` to switch to the echo protocol; the connection after its
/// `101`, and the bytes already read past the head.
async fn switched(server: &mist::Server, path: &str) -> (TcpStream, Vec<u8>) {
    let mut tcp = tcp(server).await;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut rest = Vec::new();
    let head = read_head(&mut tcp, &mut rest).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{path}: {head}");
    (tcp, rest)
}

/// Reads to the end of the connection into `all`, within the safety
/// timeout; how it ended.
async fn read_end(tcp: &mut TcpStream, all: &mut Vec<u8>) -> std::io::Result<usize> {
    tokio::time::timeout(SAFETY_TIMEOUT, tcp.read_to_end(all))
        .await
        .expect("the end in time")
}

#[tokio::test]
async fn a_101_hands_the_connection_to_the_handlers_code() {
    let server = serve(handler).await;
    let head = exchange(
        &mut tcp(&server).await,
        "GET /switch HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await;
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    assert!(head.contains("upgrade: echo\r\n"), "{head}");
    assert!(
        head.contains("connection: upgrade\r\n") && !head.contains("close"),
        "the handler's connection: close is replaced: {head}"
    );
    assert_unframed(&head);
}

/// A 2xx to CONNECT opens a tunnel, without framing fields (RFC 9110
/// §9.3.6).
#[tokio::test]
async fn a_2xx_to_connect_opens_a_tunnel() {
    let server = serve(handler).await;
    let head = exchange(
        &mut tcp(&server).await,
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_unframed(&head);
}

#[tokio::test]
async fn an_upgrade_works_over_tls() {
    let dir = support::TestDir::new("upgrade-tls");
    let ca = support::TestCa::new("upgrade test CA");
    let (cert, key) = support::write_leaf(&dir, "localhost", &ca.leaf("localhost", false));
    let server = support::start_tls(mist::new(handler), &cert, &key).await;
    let config = support::tls_client_config(&ca.pem);
    let mut client = Client::connect_tls(server.port(), &config).await;
    let head = exchange(
        &mut client.stream,
        "GET /switch HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
}

/// The handler's mistakes: an upgrade with a status that switches nothing,
/// a 101 to HTTP/1.0 (which has none), and a request whose body was not
/// read (its bytes would reach the code as the protocol's).
#[tokio::test]
async fn an_upgrade_that_switches_nothing_is_refused() {
    let server = serve(handler).await;
    for (request, status) in [
        ("GET /tunnel HTTP/1.1\r\nHost: a\r\n\r\n", 500),
        ("GET /bare HTTP/1.1\r\nHost: a\r\nUpgrade: echo\r\n\r\n", 500),
        ("GET /switch HTTP/1.0\r\nHost: a\r\n\r\n", 500),
        (
            "POST /switch HTTP/1.1\r\nHost: a\r\nUpgrade: echo\r\nConnection: upgrade\r\nContent-Length: 5\r\n\r\nhello",
            400,
        ),
    ] {
        let mut client = Client::connect(&server).await;
        client.send(request).await;
        let resp = client.response().await;
        assert_eq!(resp.status, status, "{request}");
        assert!(resp.closes(), "{request}");
        assert!(client.is_closed().await, "{request}");
    }
}

/// Code that panics costs its connection, reset so that the client does
/// not take the end for a finished exchange, and so does code that asks
/// for a reset; the server carries on.
#[tokio::test]
async fn a_panic_in_the_code_or_a_reset_resets_its_connection() {
    let server = serve(handler).await;
    for path in ["/panic", "/reset"] {
        let (mut tcp, mut all) = switched(&server, path).await;
        let end = read_end(&mut tcp, &mut all).await;
        assert_eq!(
            end.map_err(|err| err.kind()),
            Err(std::io::ErrorKind::ConnectionReset),
            "{path}: {all:?}"
        );
        assert_eq!(all, b"about to panic", "{path}");
    }
    let mut client = Client::connect(&server).await;
    client.send("GET /tunnel HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(client.response().await.status, 500, "the server carries on");
}

/// `Upgraded::stopping` tells the code that a graceful shutdown began, in
/// time to end its protocol cleanly.
#[tokio::test]
async fn the_code_learns_of_a_graceful_shutdown() {
    let server = serve(handler).await;
    let (mut tcp, mut all) = switched(&server, "/stopping").await;
    server.shutdown(std::time::Duration::from_secs(60));
    read_end(&mut tcp, &mut all).await.expect("a clean end");
    assert_eq!(all, b"stopping");
    tokio::time::timeout(SAFETY_TIMEOUT, server.wait())
        .await
        .expect("the server stops without waiting out its grace");
}

/// Code that outlives a shutdown's grace is dropped, and its connection
/// reset: a tunnel cut short must not look finished.
#[tokio::test]
async fn code_that_outlives_the_grace_is_cut_with_a_reset() {
    let server = serve(handler).await;
    let (mut tcp, mut rest) = switched(&server, "/stubborn").await;
    server.shutdown(std::time::Duration::from_millis(100));
    let end = read_end(&mut tcp, &mut rest).await;
    assert_eq!(
        end.map_err(|err| err.kind()),
        Err(std::io::ErrorKind::ConnectionReset)
    );
    tokio::time::timeout(SAFETY_TIMEOUT, server.wait())
        .await
        .expect("the server stops");
}

/// Sends `req` on a connection of its own, and for a 2xx sends `through`
/// the tunnel and reads the echo to END_STREAM. The status, and the echo.
async fn over_http2(
    server: &mist::Server,
    req: Request<()>,
    through: &'static [u8],
) -> (StatusCode, Vec<u8>) {
    let (client, connection) = h2::client::handshake(tcp(server).await)
        .await
        .expect("HTTP/2 handshake");
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let (response, mut send) = client.send_request(req, false).unwrap();
    let response = tokio::time::timeout(SAFETY_TIMEOUT, response)
        .await
        .expect("a response in time")
        .expect("a response");
    let status = response.status();
    let mut echoed = Vec::new();
    if !status.is_success() {
        return (status, echoed);
    }
    let mut recv = response.into_body();
    send.send_data(Bytes::from_static(through), true).unwrap();
    while let Some(data) = tokio::time::timeout(SAFETY_TIMEOUT, recv.data())
        .await
        .expect("data in time")
    {
        let data = data.expect("no reset");
        let _ = recv.flow_control().release_capacity(data.len());
        echoed.extend_from_slice(&data);
    }
    (status, echoed)
}

/// Over HTTP/2 a tunnel is a CONNECT's stream (there is no 101): DATA both
/// ways, END_STREAM answered with END_STREAM, also after a 204. An
/// upgrade to anything else is the handler's mistake, and a CONNECT
/// without a port malformed.
#[tokio::test]
async fn a_2xx_to_an_http2_connect_opens_a_tunnel_on_its_stream() {
    let server = support::start(mist::new(handler).with_http2()).await;
    let connect = |authority: &str| {
        Request::builder()
            .method(Method::CONNECT)
            .uri(authority)
            .body(())
            .unwrap()
    };
    let (status, echoed) =
        over_http2(&server, connect("example.com:443"), b"through the tunnel").await;
    assert_eq!(
        (status, &echoed[..]),
        (StatusCode::OK, &b"through the tunnel"[..])
    );
    let (status, echoed) =
        over_http2(&server, connect("nocontent.example:443"), b"after a 204").await;
    assert_eq!(
        (status, &echoed[..]),
        (StatusCode::NO_CONTENT, &b"after a 204"[..])
    );
    let (status, _) = over_http2(&server, connect("example.com"), b"").await;
    assert_eq!(status, 400, "a CONNECT needs a port");
    for path in ["/switch", "/tunnel"] {
        let get = Request::get(format!("http://localhost{path}"))
            .body(())
            .unwrap();
        let (status, _) = over_http2(&server, get, b"").await;
        assert_eq!(
            status, 500,
            "{path}: HTTP/2 has no 101, and a GET no tunnel"
        );
    }
}
