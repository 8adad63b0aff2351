//! Serving on Unix domain sockets (`Builder::unix_listener`): HTTP/1.1,
//! files, HTTP/2 and TLS over them, beside TCP listeners, and a shutdown.

mod support;

use bytes::Bytes;
use http::{Request, Response};
use mist::{Connection, ResponseData};
use std::os::unix::net::UnixListener;
use std::path::Path;
use support::{get, Client, TestDir, SAFETY_TIMEOUT};
use tokio::net::UnixStream;

/// What the tests' server answers: `/who` the client's address or
/// `unknown`, `/cred` the client's credentials as `UID GID PID` or
/// `none`, `/file/NAME` a file of `dir` (zero-copy where the socket
/// allows), anything else `over unix`.
fn handler(
    dir: std::path::PathBuf,
) -> impl Fn(Request<Connection>) -> std::future::Ready<Response<ResponseData>> + Send + Sync + 'static
{
    move |req: Request<Connection>| {
        let path = req.uri().path();
        let body = if path == "/who" {
            match mist::get_client_info(req.body()) {
                Ok(info) => ResponseData::from(info.to_string()),
                Err(mist::ClientInfoUnavailable) => ResponseData::from("unknown"),
            }
        } else if path == "/cred" {
            match req.extensions().get::<mist::PeerCredentials>() {
                Some(peer) => {
                    ResponseData::from(format!("{} {} {:?}", peer.uid, peer.gid, peer.pid))
                }
                None => ResponseData::from("none"),
            }
        } else if let Some(name) = path.strip_prefix("/file/") {
            mist::send_file(dir.join(name), 0, None).expect("the file exists")
        } else {
            ResponseData::from("over unix")
        };
        std::future::ready(Response::new(body))
    }
}

/// `UID GID Some(PID)` of this process, as `/cred` writes them: its
/// effective user and group, which Linux gives `/proc/self`, and its ID.
fn ours() -> String {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata("/proc/self").unwrap();
    format!("{} {} Some({})", meta.uid(), meta.gid(), std::process::id())
}

async fn connect(path: &Path) -> Client<UnixStream> {
    Client::over(UnixStream::connect(path).await.expect("connect"))
}

/// A server on a Unix socket only: it lists the socket, has no TCP address
/// (and so no `after_start`), and serves keep-alive and pipelined requests,
/// with no client address and files sent whole.
#[tokio::test]
async fn http1_is_served_on_a_unix_socket() {
    let dir = TestDir::new("unix-http1");
    let path = dir.path("http.sock");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    dir.write("big.bin", &big);
    let server = mist::new(handler(dir.0.clone()))
        .unix_listener(UnixListener::bind(&path).unwrap())
        .after_start(|_, _, _| panic!("after_start speaks of ports: not run"))
        .start_http()
        .await
        .unwrap();
    assert!(server.local_addrs().is_empty());
    assert_eq!(server.unix_addrs().len(), 1);
    assert_eq!(server.unix_addrs()[0].as_pathname(), Some(path.as_path()));
    let no_port = server.clone();
    assert!(
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || no_port.port())).is_err()
    );

    let mut client = connect(&path).await;
    client.send(get("/")).await;
    assert_eq!(client.response().await.text(), "over unix");
    client.send(format!("{}{}", get("/who"), get("/"))).await;
    let who = client.response().await;
    assert_eq!((who.status, who.text()), (200, "unknown"));
    assert_eq!(client.response().await.text(), "over unix");
    // The client is this process: its user, group and ID.
    client.send(get("/cred")).await;
    assert_eq!(client.response().await.text(), ours());
    client.send(get("/file/big.bin")).await;
    let file = client.response().await;
    assert_eq!(file.header("content-length"), Some("3000000"));
    assert!(file.body == big, "the file arrives whole and unchanged");
    client.send(get("/")).await;
    assert_eq!(client.response().await.text(), "over unix");

    // A graceful shutdown closes the idle connection and ends the server.
    server.shutdown(std::time::Duration::from_secs(5));
    tokio::time::timeout(SAFETY_TIMEOUT, server.wait())
        .await
        .expect("the server stops");
    assert!(client.is_closed().await);
    assert!(
        UnixStream::connect(&path).await.is_err(),
        "nothing accepts any more"
    );
}

/// TCP and Unix listeners serve side by side; `after_start` reports the
/// TCP one.
#[tokio::test]
async fn tcp_and_unix_listeners_serve_together() {
    let dir = TestDir::new("unix-mixed");
    let path = dir.path("mixed.sock");
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let server = mist::new(handler(dir.0.clone()))
        .unix_listener(UnixListener::bind(&path).unwrap())
        .listener(tcp)
        .after_start(move |port, _, _| tx.send(port).unwrap())
        .start_http()
        .await
        .unwrap();
    assert_eq!(rx.recv().await, Some(port));
    assert_eq!(server.port(), port);
    assert_eq!(server.unix_addrs().len(), 1);

    let mut over_tcp = Client::connect_port(port).await;
    over_tcp.send(get("/who")).await;
    let who = over_tcp.response().await;
    assert!(who.text().starts_with("127.0.0.1:"), "{}", who.text());
    over_tcp.send(get("/cred")).await;
    assert_eq!(over_tcp.response().await.text(), "none");
    let mut over_unix = connect(&path).await;
    over_unix.send(get("/who")).await;
    assert_eq!(over_unix.response().await.text(), "unknown");
}

/// HTTP/2 with prior knowledge works on a Unix socket, as on TCP.
#[tokio::test]
async fn http2_is_served_on_a_unix_socket() {
    let dir = TestDir::new("unix-h2");
    let path = dir.path("h2.sock");
    dir.write("small.txt", "a small file");
    let _server = mist::new(handler(dir.0.clone()))
        .with_http2()
        .unix_listener(UnixListener::bind(&path).unwrap())
        .start_http()
        .await
        .unwrap();
    let io = UnixStream::connect(&path).await.unwrap();
    let (mut client, connection) = h2::client::handshake(io).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);
    for (target, expected) in [
        ("/", "over unix"),
        ("/file/small.txt", "a small file"),
        ("/who", "unknown"),
        ("/cred", &ours()),
    ] {
        let request = Request::get(format!("http://localhost{target}"))
            .body(())
            .unwrap();
        let (response, _) = client.send_request(request, true).unwrap();
        let response = tokio::time::timeout(SAFETY_TIMEOUT, response)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(data) = body.data().await {
            let data: Bytes = data.unwrap();
            let _ = body.flow_control().release_capacity(data.len());
            bytes.extend_from_slice(&data);
        }
        assert_eq!(bytes, expected.as_bytes());
    }
}

/// TLS works on a Unix socket: the handshake, then requests; files go
/// through user space, encrypted.
#[tokio::test]
async fn https_is_served_on_a_unix_socket() {
    let dir = TestDir::new("unix-tls");
    let path = dir.path("tls.sock");
    dir.write("small.txt", "an encrypted file");
    let ca = support::TestCa::new("unix test CA");
    let (cert, key) = support::write_leaf(&dir, "localhost", &ca.leaf("localhost", false));
    let _server = mist::new(handler(dir.0.clone()))
        .unix_listener(UnixListener::bind(&path).unwrap())
        .start_https(&cert, &key)
        .await
        .unwrap();
    let config = support::tls_client_config(&ca.pem);
    let connector = tokio_rustls::TlsConnector::from(config);
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let io = UnixStream::connect(&path).await.unwrap();
    let tls = tokio::time::timeout(SAFETY_TIMEOUT, connector.connect(name, io))
        .await
        .unwrap()
        .expect("TLS handshake");
    let mut client = Client::over(tls);
    client.send(get("/")).await;
    assert_eq!(client.response().await.text(), "over unix");
    client.send(get("/file/small.txt")).await;
    assert_eq!(client.response().await.text(), "an encrypted file");
}

/// A Unix socket that was bound but never listened is refused with a
/// reason, as a TCP one is.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_unix_socket_that_is_not_listening_is_refused() {
    let dir = TestDir::new("unix-unlistened");
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&socket2::SockAddr::unix(dir.path("quiet.sock")).unwrap())
        .unwrap();
    let listener = UnixListener::from(std::os::fd::OwnedFd::from(socket));
    let result = mist::new(support::fixed("x"))
        .unix_listener(listener)
        .start_http()
        .await;
    support::assert_not_listening(result);
}

/// The credentials reach a handler behind `read_request_body` too.
#[tokio::test]
async fn credentials_reach_a_handler_that_takes_the_body_read() {
    let dir = TestDir::new("unix-read-body");
    let path = dir.path("body.sock");
    let _server = mist::new(|req: Request<Bytes>| async move {
        let uid = req
            .extensions()
            .get::<mist::PeerCredentials>()
            .map(|peer| peer.uid);
        Response::new(ResponseData::from(format!("{uid:?} {}", req.body().len())))
    })
    .read_request_body(1024, Response::new(""))
    .unix_listener(UnixListener::bind(&path).unwrap())
    .start_http()
    .await
    .unwrap();
    let mut client = connect(&path).await;
    client.send(support::post("/", b"12345")).await;
    let uid = ours().split(' ').next().unwrap().to_string();
    assert_eq!(client.response().await.text(), format!("Some({uid}) 5"));
}
