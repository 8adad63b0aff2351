//! HTTPS through real sockets: certificates made at test time with rcgen,
//! a rustls client trusting the test CA, and `curl --cacert`.
//!
//! Nothing here waits by sleeping: tests wait for a response, the end of a
//! stream, or a log event the server emits (recorded by a subscriber on the
//! test's thread; `#[tokio::test]` runs the server on that thread too).

mod support;

use bytes::Bytes;
use futures_util::stream;
use http::{Request, Response};
use mist::{CertificateError, Chunk, Connection, HttpsError, ResponseData, Scheme};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{
    echo_handler, ring, root_store, start, start_tls, text, tls_client_config,
    tls_client_config_with, write_leaf, Client, TestCa, TestDir, TlsClient, SAFETY_TIMEOUT,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The routes most tests use.
async fn routes(mut req: Request<Connection>) -> Response<ResponseData> {
    match req.uri().path() {
        "/hello" => text(200, "Hello, world!"),
        "/echo" => echo_handler(req).await,
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
        // 40 chunks of growing size, some over 16 KiB.
        "/chunked" => Response::new(ResponseData::chunked_stream(stream::iter(
            (0..40u32).map(|i| Ok::<_, std::convert::Infallible>(chunk(i))),
        ))),
        "/info" => match mist::get_client_info(req.body()) {
            Ok(info) => text(
                200,
                format!(
                    "{} {}",
                    mist::ip_address_to_string(&info.ip_address),
                    info.port
                ),
            ),
            Err(err) => text(500, err.to_string()),
        },
        "/uri" => text(200, req.uri().to_string()),
        // The client's certificate, DER, and how many it sent.
        "/peer" => match req.extensions().get::<mist::PeerCertificates>() {
            Some(chain) => Response::builder()
                .header("x-chain-length", chain.len())
                .body(ResponseData::from(chain[0].to_vec()))
                .unwrap(),
            None => text(401, "no client certificate"),
        },
        // The request body streamed back as it arrives.
        "/stream-back" => {
            let body = mist::stream(&mut req);
            Response::new(ResponseData::chunked_stream(body))
        }
        _ => text(404, "not found"),
    }
}

fn chunk(i: u32) -> Bytes {
    let len = (i as usize) * 997;
    Bytes::from(
        (0..len)
            .map(|k| b'a' + ((k + i as usize) % 26) as u8)
            .collect::<Vec<_>>(),
    )
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")
}

/// A CA, a leaf for `localhost` written to a fresh folder, and a client
/// configuration trusting the CA.
struct Fixture {
    ca: TestCa,
    dir: TestDir,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    client: Arc<rustls::ClientConfig>,
}

fn fixture(tag: &str) -> Fixture {
    let ca = TestCa::new("mist test CA");
    let dir = TestDir::new(tag);
    let (cert, key) = write_leaf(&dir, "server", &ca.leaf("mist test server", false));
    let client = tls_client_config(&ca.pem);
    Fixture {
        ca,
        dir,
        cert,
        key,
        client,
    }
}

async fn serve_tls(fx: &Fixture) -> mist::Server {
    start_tls(mist::new(routes), &fx.cert, &fx.key).await
}

/// Runs curl against the server, trusting the fixture's CA; returns stdout.
async fn curl(fx: &Fixture, args: &[&str]) -> Vec<u8> {
    let ca = fx.dir.write("ca.pem", &fx.ca.pem);
    let out = tokio::time::timeout(
        SAFETY_TIMEOUT,
        tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "20", "--cacert"])
            .arg(&ca)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .expect("curl ended within the safety timeout")
    .expect("run curl");
    assert!(
        out.status.success(),
        "curl {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn sha1(bytes: &[u8]) -> String {
    sha1_smol::Sha1::from(bytes).digest().to_string()
}

fn start_error(result: Result<mist::Server, HttpsError>) -> CertificateError {
    match result {
        Err(HttpsError::Certificate(err)) => err,
        Err(other) => panic!("expected a certificate error, got {other:?}"),
        Ok(_) => panic!("the server started with unusable certificate files"),
    }
}

async fn try_start(cert: &Path, key: &Path) -> Result<mist::Server, HttpsError> {
    mist::new(routes)
        .port(0)
        .bind("127.0.0.1")
        .after_start(|_, _, _| {})
        .start_https(cert, key)
        .await
}

/// Log events on the test's thread: level and fields, with a channel that
/// ticks on each one so that a test can wait for a particular event.
#[derive(Clone)]
struct Events {
    seen: Arc<Mutex<Vec<(tracing::Level, String)>>>,
    tick: Arc<tokio::sync::watch::Sender<usize>>,
}

impl Events {
    fn install() -> (Events, tracing::subscriber::DefaultGuard) {
        let events = Events {
            seen: Arc::default(),
            tick: Arc::new(tokio::sync::watch::channel(0).0),
        };
        let guard = tracing::subscriber::set_default(events.clone());
        (events, guard)
    }

    /// Waits until an event containing `needle` has been logged.
    async fn wait_for(&self, needle: &str) {
        let mut tick = self.tick.subscribe();
        let found =
            tokio::time::timeout(SAFETY_TIMEOUT, tick.wait_for(|_| self.contains(needle))).await;
        assert!(
            matches!(found, Ok(Ok(_))),
            "no log event with {needle:?}; saw {:?}",
            self.seen.lock().unwrap()
        );
    }

    fn contains(&self, needle: &str) -> bool {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .any(|(_, m)| m.contains(needle))
    }

    /// Warnings and errors logged so far.
    fn loud(&self) -> Vec<(tracing::Level, String)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(level, _)| *level <= tracing::Level::WARN)
            .cloned()
            .collect()
    }
}

impl tracing::Subscriber for Events {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                let _ = write!(self.0, "{}={:?} ", field.name(), value);
            }
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.seen
            .lock()
            .unwrap()
            .push((*event.metadata().level(), fields.0));
        self.tick.send_modify(|n| *n += 1);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// The server still serves a real client.
async fn assert_serves(server: &mist::Server, fx: &Fixture) {
    let mut client = TlsClient::connect_tls(server.port(), &fx.client).await;
    client.send(get("/hello")).await;
    let resp = client.response().await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "Hello, world!");
}

// ---------------------------------------------------------------------------
// Certificate errors
// ---------------------------------------------------------------------------

#[tokio::test]
async fn missing_files_give_mists_certificate_errors() {
    let fx = fixture("missing");
    let nothing = fx.dir.path("nothing.pem");
    let cases = [
        (&nothing, &fx.key, "NoCertificate"),
        (&fx.cert, &nothing, "NoKey"),
        (&nothing, &nothing, "NoKeyOrCertificate"),
    ];
    for (cert, key, expected) in cases {
        let err = start_error(try_start(cert, key).await);
        assert!(format!("{err:?}").starts_with(expected), "{err:?}");
        // The message names the missing file(s), not the present one.
        let message = err.to_string();
        assert!(message.contains("nothing.pem"), "{message}");
        let named = |path: &Path| message.contains(&path.display().to_string());
        assert!(!named(&fx.key), "{message}");
        assert!(!named(&fx.cert), "{message}");
    }
    let err = start_error(try_start(&nothing, &fx.key).await);
    assert!(
        matches!(&err, CertificateError::NoCertificate { path } if path == &nothing),
        "{err:?}"
    );
    // A folder is not a certificate file either.
    let err = start_error(try_start(&fx.dir.0, &fx.key).await);
    assert!(
        matches!(err, CertificateError::NoCertificate { .. }),
        "{err:?}"
    );
    // The free function says the same.
    let err = start_error(mist::start_https(mist::new(routes).port(0), &nothing, &fx.key).await);
    assert!(
        matches!(err, CertificateError::NoCertificate { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn files_without_pem_name_the_file_at_fault() {
    let fx = fixture("no-pem");
    let junk = fx.dir.write("junk.pem", b"this is not PEM\n\x00\x01\x02");
    let empty = fx.dir.write("empty.pem", b"");

    for bad in [&junk, &empty, &fx.key] {
        // A key where the certificate should be holds no certificate.
        let err = start_error(try_start(bad, &fx.key).await);
        match &err {
            CertificateError::InvalidCertificate { path, .. } => assert_eq!(path, bad),
            other => panic!("expected InvalidCertificate, got {other:?}"),
        }
        assert!(
            err.to_string().contains(&bad.display().to_string()),
            "{err}"
        );
    }
    for bad in [&junk, &empty, &fx.cert] {
        let err = start_error(try_start(&fx.cert, bad).await);
        match &err {
            CertificateError::InvalidKey { path, .. } => assert_eq!(path, bad),
            other => panic!("expected InvalidKey, got {other:?}"),
        }
        assert!(
            err.to_string().contains(&bad.display().to_string()),
            "{err}"
        );
    }
    // PEM framing around bytes that are no certificate.
    let bogus = fx.dir.write(
        "bogus.pem",
        "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
    );
    let err = start_error(try_start(&bogus, &fx.key).await);
    assert!(
        matches!(&err, CertificateError::InvalidCertificate { path, .. } if *path == bogus),
        "{err:?}"
    );
    // An encrypted key is named as such.
    let encrypted = fx.dir.write(
        "encrypted.pem",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\naGVsbG8=\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let err = start_error(try_start(&fx.cert, &encrypted).await);
    assert!(err.to_string().contains("encrypted"), "{err}");
}

#[tokio::test]
async fn a_key_of_another_certificate_is_a_mismatch() {
    let fx = fixture("mismatch");
    let (_, other_key) = write_leaf(&fx.dir, "other", &fx.ca.leaf("other", false));
    let err = start_error(try_start(&fx.cert, &other_key).await);
    match &err {
        CertificateError::KeyMismatch { certfile, keyfile } => {
            assert_eq!(certfile, &fx.cert);
            assert_eq!(keyfile, &other_key);
        }
        other => panic!("expected KeyMismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("does not belong"), "{err}");
}

#[tokio::test]
async fn sec1_and_pkcs1_keys_are_accepted() {
    let fx = fixture("key-formats");
    let openssl = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
    };
    if openssl(&["version"]).is_err() {
        println!("note: skipped, no openssl command to convert keys with");
        return;
    }
    // SEC1 (`EC PRIVATE KEY`) of the fixture's ECDSA key.
    let sec1 = fx.dir.path("sec1.key");
    let out = openssl(&[
        "ec",
        "-in",
        fx.key.to_str().unwrap(),
        "-out",
        sec1.to_str().unwrap(),
    ])
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(std::fs::read_to_string(&sec1)
        .unwrap()
        .contains("BEGIN EC PRIVATE KEY"));
    let server = start_tls(mist::new(routes), &fx.cert, &sec1).await;
    assert_serves(&server, &fx).await;

    // PKCS#1 (`RSA PRIVATE KEY`) with a self-signed certificate for it.
    let rsa = fx.dir.path("rsa.key");
    let rsa_cert = fx.dir.path("rsa.crt");
    let out = openssl(&[
        "genrsa",
        "-traditional",
        "-out",
        rsa.to_str().unwrap(),
        "2048",
    ])
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(std::fs::read_to_string(&rsa)
        .unwrap()
        .contains("BEGIN RSA PRIVATE KEY"));
    let out = openssl(&[
        "req",
        "-x509",
        "-key",
        rsa.to_str().unwrap(),
        "-out",
        rsa_cert.to_str().unwrap(),
        "-days",
        "1",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=DNS:localhost,IP:127.0.0.1",
    ])
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let server = start_tls(mist::new(routes), &rsa_cert, &rsa).await;
    let url = format!("https://127.0.0.1:{}/hello", server.port());
    // curl trusts the self-signed certificate itself.
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&rsa_cert)
        .arg(&url)
        .output()
        .await
        .expect("run curl");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"Hello, world!");
}

#[tokio::test]
async fn a_chain_with_an_intermediate_is_sent_whole() {
    let fx = fixture("chain");
    let intermediate = fx.ca.intermediate("mist test intermediate");
    let (cert, key) = write_leaf(&fx.dir, "chained", &intermediate.leaf("chained", true));
    let server = start_tls(mist::new(routes), &cert, &key).await;
    // The client trusts the root only: the intermediate must come along.
    assert_serves(&server, &fx).await;
}

// ---------------------------------------------------------------------------
// The basics over TLS
// ---------------------------------------------------------------------------

#[tokio::test]
async fn after_start_receives_https_and_uris_carry_the_https_scheme() {
    let fx = fixture("scheme");
    let (tx, rx) = std::sync::mpsc::channel();
    let server = mist::new(routes)
        .port(0)
        .bind("127.0.0.1")
        .after_start(move |port, scheme, ip| {
            let _ = tx.send((port, scheme, ip));
        })
        .start_https(&fx.cert, &fx.key)
        .await
        .expect("HTTPS server starts");
    let (port, scheme, ip) = rx
        .try_recv()
        .expect("after_start ran before start returned");
    assert_eq!(scheme, Scheme::Https);
    assert_eq!(port, server.port());
    assert_eq!(mist::ip_address_to_string(&ip), "127.0.0.1");

    let mut client = TlsClient::connect_tls(server.port(), &fx.client).await;
    assert_eq!(client.alpn().as_deref(), Some(&b"http/1.1"[..]));
    client.send(get("/uri?x=1")).await;
    let resp = client.response().await;
    assert_eq!(resp.text(), "https://localhost/uri?x=1");
}

#[tokio::test]
async fn keep_alive_and_pipelining_work_over_tls() {
    let fx = fixture("keep-alive");
    let server = serve_tls(&fx).await;
    let mut client = TlsClient::connect_tls(server.port(), &fx.client).await;
    for _ in 0..3 {
        client.send(get("/hello")).await;
        assert_eq!(client.response().await.text(), "Hello, world!");
    }
    client.send(get("/hello").repeat(5)).await;
    for _ in 0..5 {
        assert_eq!(client.response().await.text(), "Hello, world!");
    }
    client
        .send("GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await;
    let resp = client.response().await;
    assert!(resp.closes());
    assert!(client.is_closed().await);
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_both_served() {
    let fx = fixture("versions");
    let server = serve_tls(&fx).await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let config = rustls::ClientConfig::builder_with_provider(ring())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(root_store(&fx.ca.pem))
            .with_no_client_auth();
        let mut client = TlsClient::connect_tls(server.port(), &Arc::new(config)).await;
        assert_eq!(
            client.stream.get_ref().1.protocol_version(),
            Some(version.version)
        );
        client.send(get("/hello")).await;
        assert_eq!(client.response().await.text(), "Hello, world!");
    }
}

#[tokio::test]
async fn curl_gets_hello_over_https() {
    let fx = fixture("curl");
    let server = serve_tls(&fx).await;
    let url = format!("https://127.0.0.1:{}/hello", server.port());
    assert_eq!(curl(&fx, &[&url]).await, b"Hello, world!");
    // HTTP/1.0 over TLS, as curl --http1.0 asks with ALPN `http/1.0`.
    assert_eq!(curl(&fx, &["--http1.0", &url]).await, b"Hello, world!");
}

#[tokio::test]
async fn plain_http_is_not_served_by_an_https_server_and_vice_versa() {
    let fx = fixture("not-https");
    let server = start(mist::new(routes)).await;
    assert!(matches!(
        server.reload_certificate(&fx.cert, &fx.key),
        Err(CertificateError::NotHttps)
    ));
    // A TLS client on a plain port fails its handshake, nothing more.
    assert!(TlsClient::try_connect_tls(server.port(), &fx.client)
        .await
        .is_err());
    let mut client = Client::connect(&server).await;
    client.send(get("/hello")).await;
    assert_eq!(client.response().await.status, 200);
}

// ---------------------------------------------------------------------------
// Bodies and files over TLS
// ---------------------------------------------------------------------------

#[tokio::test]
async fn request_bodies_are_read_whole_streamed_and_dechunked() {
    let fx = fixture("bodies");
    let server = serve_tls(&fx).await;
    let mut client = TlsClient::connect_tls(server.port(), &fx.client).await;

    // read_body, with a body larger than a TLS record.
    let body: Vec<u8> = (0..300_000).map(|i| (i % 251) as u8).collect();
    client.send(support::post("/echo", &body)).await;
    let resp = client.response().await;
    assert_eq!(resp.status, 200);
    assert!(resp.body == body, "the echo comes back unchanged");

    // stream + consume.
    client.send(support::post("/count", &body)).await;
    assert_eq!(client.response().await.text(), "300000");

    // A chunked request body.
    client
        .send(
            "POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\n1;ext=1\r\n,\r\n6\r\n world\r\n0\r\n\r\n",
        )
        .await;
    let resp = client.response().await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "hello, world");
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let fx = fixture("continue");
    let server = serve_tls(&fx).await;
    let mut client = TlsClient::connect_tls(server.port(), &fx.client).await;
    client
        .send(
            "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\
             Expect: 100-continue\r\n\r\n",
        )
        .await;
    // The interim response arrives through TLS before any body was sent:
    // the body reader flushed it.
    let interim = client.response().await;
    assert_eq!(interim.status, 100);
    client.send("hello").await;
    let resp = client.response().await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "hello");
}

/// A response stream that reads the request body works through TLS: each
/// piece leaves (flushed through rustls) before the client sends the next.
#[tokio::test]
async fn a_response_stream_reads_the_request_body_over_tls() {
    let fx = fixture("stream-back");
    let server = serve_tls(&fx).await;
    let mut client = TlsClient::connect_tls(server.port(), &fx.client).await;
    client
        .send("POST /stream-back HTTP/1.1\r\nHost: localhost\r\nContent-Length: 8\r\n\r\nping")
        .await;
    assert_eq!(client.head_response().await.status, 200);
    assert_eq!(client.next_chunk().await.unwrap(), b"ping");
    client.send("pong").await;
    assert_eq!(client.next_chunk().await.unwrap(), b"pong");
    assert_eq!(client.next_chunk().await, None);
}

#[tokio::test]
async fn chunked_responses_arrive_whole() {
    let fx = fixture("chunked");
    let server = serve_tls(&fx).await;
    let expected: Vec<u8> = (0..40).flat_map(|i| chunk(i).to_vec()).collect();
    let mut client = TlsClient::connect_tls(server.port(), &fx.client).await;
    for _ in 0..2 {
        client.send(get("/chunked")).await;
        let resp = client.response().await;
        assert_eq!(resp.header("transfer-encoding"), Some("chunked"));
        assert!(resp.body == expected, "{} bytes", resp.body.len());
    }
    // HTTP/1.0: the body runs until the close.
    client
        .send("GET /chunked HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await;
    let resp = client.response().await;
    assert!(resp.body == expected, "{} bytes", resp.body.len());
}

#[tokio::test]
async fn files_are_streamed_over_tls_intact() {
    let fx = fixture("file");
    // A few MiB and an odd tail, so that pieces and records do not align.
    let contents: Vec<u8> = (0..(3 << 20) + 12_345u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let path = fx.dir.write("big.bin", &contents);
    let file = Arc::new(path.clone());
    let server = start_tls(
        mist::new(move |req: Request<Connection>| {
            let file = Arc::clone(&file);
            async move {
                let range = req.uri().query() == Some("range");
                let (offset, limit) = if range {
                    (1_000_001, Some(2_000_000))
                } else {
                    (0, None)
                };
                Response::new(mist::send_file(&*file, offset, limit).expect("the file opens"))
            }
        }),
        &fx.cert,
        &fx.key,
    )
    .await;

    let mut client = TlsClient::connect_tls(server.port(), &fx.client).await;
    client.send(get("/big.bin")).await;
    let resp = client.response().await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("content-length"),
        Some(contents.len().to_string().as_str())
    );
    assert_eq!(sha1(&resp.body), sha1(&contents));
    // A part of it, on the same connection.
    client.send(get("/big.bin?range")).await;
    let resp = client.response().await;
    assert_eq!(sha1(&resp.body), sha1(&contents[1_000_001..3_000_001]));

    // And through curl.
    let url = format!("https://127.0.0.1:{}/big.bin", server.port());
    assert_eq!(sha1(&curl(&fx, &[&url]).await), sha1(&contents));
}

#[tokio::test]
async fn client_info_is_the_tls_clients_address() {
    let fx = fixture("info");
    let server = serve_tls(&fx).await;
    let mut client = TlsClient::connect_tls(server.port(), &fx.client).await;
    let local = client.stream.get_ref().0.local_addr().unwrap();
    client.send(get("/info")).await;
    assert_eq!(
        client.response().await.text(),
        format!("127.0.0.1 {}", local.port())
    );
}

// ---------------------------------------------------------------------------
// Certificate reload
// ---------------------------------------------------------------------------

#[tokio::test]
async fn reload_serves_the_new_certificate_to_new_connections_only() {
    let fx = fixture("reload");
    let first = fx.ca.leaf("first", false);
    let second = fx.ca.leaf("second", false);
    let (first_cert, first_key) = write_leaf(&fx.dir, "first", &first);
    let (second_cert, second_key) = write_leaf(&fx.dir, "second", &second);
    let server = start_tls(mist::new(routes), &first_cert, &first_key).await;

    let mut old = TlsClient::connect_tls(server.port(), &fx.client).await;
    assert!(old.server_certificate() == first.der);
    old.send(get("/hello")).await;
    assert_eq!(old.response().await.status, 200);

    server
        .reload_certificate(&second_cert, &second_key)
        .expect("the new certificate is usable");

    let mut new = TlsClient::connect_tls(server.port(), &fx.client).await;
    assert!(
        new.server_certificate() == second.der,
        "a new connection gets the new certificate"
    );
    new.send(get("/hello")).await;
    assert_eq!(new.response().await.status, 200);

    // The connection made before the reload carries on.
    old.send(get("/hello")).await;
    let resp = old.response().await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "Hello, world!");

    // A reload that fails keeps the certificate in use.
    let missing = fx.dir.path("missing.crt");
    assert!(matches!(
        server.reload_certificate(&missing, &first_key),
        Err(CertificateError::NoCertificate { .. })
    ));
    assert!(matches!(
        server.reload_certificate(&second_cert, &first_key),
        Err(CertificateError::KeyMismatch { .. })
    ));
    let again = TlsClient::connect_tls(server.port(), &fx.client).await;
    assert!(again.server_certificate() == second.der);
}

// ---------------------------------------------------------------------------
// A rustls configuration of the caller's: client certificates
// ---------------------------------------------------------------------------

/// A server configuration for the fixture's certificate that asks for
/// client certificates from `clients` (and requires one unless
/// `optional`).
fn client_auth_config(
    fx: &Fixture,
    clients: &TestCa,
    optional: bool,
) -> mist::rustls::ServerConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let roots = Arc::new(root_store(&clients.pem));
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, ring());
    let verifier = match optional {
        true => verifier.allow_unauthenticated(),
        false => verifier,
    };
    let chain = CertificateDer::pem_file_iter(&fx.cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&fx.key).unwrap();
    rustls::ServerConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier.build().unwrap())
        .with_single_cert(chain, key)
        .unwrap()
}

/// The fixture's client configuration, presenting `leaf` when asked.
fn client_with_certificate(fx: &Fixture, leaf: &support::Leaf) -> Arc<rustls::ClientConfig> {
    tls_client_config_with(&fx.ca.pem, Some(leaf))
}

async fn start_with_config<H: mist::Handler<Connection>>(
    builder: mist::Builder<H, Connection>,
    config: mist::rustls::ServerConfig,
) -> mist::Server {
    builder
        .port(0)
        .bind("127.0.0.1")
        .after_start(|_, _, _| {})
        .start_https_with_config(config)
        .await
        .expect("HTTPS server starts")
}

#[tokio::test]
async fn a_client_certificate_reaches_every_request_over_http1_and_http2() {
    let fx = fixture("client-auth");
    let clients = TestCa::new("mist test clients");
    let alice = clients.leaf("alice", false);
    let builder = mist::new(routes).with_http2();
    let server = start_with_config(builder, client_auth_config(&fx, &clients, false)).await;

    // HTTP/1.1: each request of the connection carries the certificate.
    let mut client =
        TlsClient::connect_tls(server.port(), &client_with_certificate(&fx, &alice)).await;
    for _ in 0..2 {
        client.send(get("/peer")).await;
        let resp = client.response().await;
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("x-chain-length"), Some("1"));
        assert!(
            resp.body == alice.der,
            "the handler sees alice's certificate"
        );
    }

    // HTTP/2 through curl (ALPN h2): every stream carries it too (curl
    // sends both requests on one connection, and says how many it made).
    let (cert, key) = write_leaf(&fx.dir, "alice", &alice);
    let url = format!("https://localhost:{}/peer", server.port());
    let mut args = vec!["--http2", "--cert"];
    args.push(cert.to_str().unwrap());
    args.extend(["--key", key.to_str().unwrap()]);
    args.extend(["-w", "%{http_version} %{num_connects}\n"]);
    let out = curl(&fx, &[&args[..], &[url.as_str(), url.as_str()]].concat()).await;
    let mut expected = alice.der.clone();
    expected.extend_from_slice(b"2 1\n");
    expected.extend_from_slice(&alice.der);
    expected.extend_from_slice(b"2 0\n");
    assert!(
        out == expected,
        "both HTTP/2 streams of one connection see alice's certificate"
    );

    // Without a certificate, the handshake is refused: no request arrives.
    match TlsClient::try_connect_tls(server.port(), &fx.client).await {
        Err(_) => {}
        Ok(mut anonymous) => {
            // TLS 1.3: the client learns of the refusal on its first read.
            let _ = anonymous.try_send(get("/peer")).await;
            let answer = tokio::time::timeout(
                SAFETY_TIMEOUT,
                anonymous.stream.read_to_end(&mut Vec::new()),
            )
            .await
            .expect("refused within the safety timeout");
            assert!(
                answer.is_err() || answer.unwrap() == 0,
                "no response without a certificate"
            );
        }
    }
}

#[tokio::test]
async fn without_a_client_certificate_there_is_no_extension() {
    let fx = fixture("client-auth-optional");
    let clients = TestCa::new("mist test clients");
    let server =
        start_with_config(mist::new(routes), client_auth_config(&fx, &clients, true)).await;
    let mut client = TlsClient::connect_tls(server.port(), &fx.client).await;
    client.send(get("/peer")).await;
    let resp = client.response().await;
    assert_eq!(resp.status, 401);
    assert_eq!(resp.text(), "no client certificate");
}

/// The engines speak what ALPN agrees on, so mist sets the protocols even
/// in a configuration of the caller's: `h2` without `with_http2` would
/// have the HTTP/1.1 parser read HTTP/2 frames.
#[tokio::test]
async fn a_custom_configuration_offers_only_the_protocols_mist_speaks() {
    let fx = fixture("custom-alpn");
    let clients = TestCa::new("unused");
    let mut config = client_auth_config(&fx, &clients, true);
    config.alpn_protocols = vec![b"h2".to_vec()];
    let server = start_with_config(mist::new(routes), config).await;
    let mut offering_h2 = (*fx.client).clone();
    offering_h2.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut client = TlsClient::connect_tls(server.port(), &Arc::new(offering_h2)).await;
    assert_eq!(client.alpn().as_deref(), Some(&b"http/1.1"[..]));
    client.send(get("/hello")).await;
    assert_eq!(client.response().await.text(), "Hello, world!");
}

#[tokio::test]
async fn reload_tls_config_replaces_the_configuration_and_then_files_are_refused() {
    let fx = fixture("reload-config");
    let clients = TestCa::new("mist test clients");
    let alice = clients.leaf("alice", false);
    // Started from files, without client certificates.
    let server = serve_tls(&fx).await;
    let alice_client = client_with_certificate(&fx, &alice);
    let mut before = TlsClient::connect_tls(server.port(), &alice_client).await;
    before.send(get("/peer")).await;
    assert_eq!(before.response().await.status, 401, "not asked for yet");

    server
        .reload_tls_config(client_auth_config(&fx, &clients, false))
        .unwrap();
    let mut after = TlsClient::connect_tls(server.port(), &alice_client).await;
    after.send(get("/peer")).await;
    let resp = after.response().await;
    assert_eq!(resp.status, 200);
    assert!(resp.body == alice.der);
    // The connection made before carries on as it was.
    before.send(get("/peer")).await;
    assert_eq!(before.response().await.status, 401);

    // Reloading from files would drop the client verification.
    assert!(matches!(
        server.reload_certificate(&fx.cert, &fx.key),
        Err(CertificateError::CustomConfig)
    ));
    let mut again = TlsClient::connect_tls(server.port(), &alice_client).await;
    again.send(get("/peer")).await;
    assert_eq!(again.response().await.status, 200);

    // A plain HTTP server has no configuration to replace.
    let plain = start(mist::new(routes)).await;
    assert!(matches!(
        plain.reload_tls_config(client_auth_config(&fx, &clients, false)),
        Err(CertificateError::NotHttps)
    ));
}

// ---------------------------------------------------------------------------
// Bad clients: only their own connection pays, quietly
// ---------------------------------------------------------------------------

#[tokio::test]
async fn plain_http_to_the_tls_port_is_closed_and_logged_at_debug() {
    let (events, _guard) = Events::install();
    let fx = fixture("plain-to-tls");
    let server = serve_tls(&fx).await;
    let mut stream = TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .unwrap();
    stream.write_all(get("/hello").as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(SAFETY_TIMEOUT, stream.read_to_end(&mut answer))
        .await
        .expect("closed within the safety timeout");
    // At most a TLS alert (or a reset), never an HTTP response.
    let _ = read;
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");
    events.wait_for("TLS handshake failed").await;
    assert_serves(&server, &fx).await;
    assert!(events.loud().is_empty(), "{:?}", events.loud());
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_handshake_timeout() {
    let (events, _guard) = Events::install();
    let fx = fixture("silent");
    let timeout = Duration::from_millis(300);
    let server = start_tls(
        mist::new(routes).tls_handshake_timeout(timeout),
        &fx.cert,
        &fx.key,
    )
    .await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .unwrap();
    // Meanwhile, other clients are served: the handshake does not hold up
    // the accept loop.
    assert_serves(&server, &fx).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(SAFETY_TIMEOUT, stream.read_to_end(&mut answer))
        .await
        .expect("closed within the safety timeout");
    assert!(matches!(read, Ok(0)), "{read:?}");
    assert!(answer.is_empty());
    assert!(
        started.elapsed() >= timeout,
        "closed after {:?}",
        started.elapsed()
    );
    events.wait_for("TLS handshake timed out").await;
    assert_serves(&server, &fx).await;
    assert!(events.loud().is_empty(), "{:?}", events.loud());
}

#[tokio::test]
async fn a_client_vanishing_mid_handshake_costs_only_its_connection() {
    let (events, _guard) = Events::install();
    let fx = fixture("vanish");
    let server = serve_tls(&fx).await;

    // A real ClientHello, then gone once the server has answered it.
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = rustls::ClientConnection::new(Arc::clone(&fx.client), name).unwrap();
    let mut hello = Vec::new();
    tls.write_tls(&mut hello).unwrap();
    let mut stream = TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .unwrap();
    stream.write_all(&hello).await.unwrap();
    let mut server_hello = [0u8; 1];
    let read = tokio::time::timeout(SAFETY_TIMEOUT, stream.read(&mut server_hello))
        .await
        .expect("the server answered within the safety timeout")
        .unwrap();
    assert_eq!(read, 1);
    assert_eq!(server_hello[0], 0x16, "a TLS handshake record");
    drop(stream);
    events.wait_for("TLS handshake failed").await;

    // Half a record header's promise, then gone.
    let mut stream = TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .unwrap();
    stream
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00])
        .await
        .unwrap();
    drop(stream);

    assert_serves(&server, &fx).await;
    let failed = events
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(level, m)| *level == tracing::Level::DEBUG && m.contains("handshake failed"))
        .count();
    assert!(failed >= 1);
    assert!(events.loud().is_empty(), "{:?}", events.loud());
}

#[tokio::test]
async fn shutdown_closes_connections_still_in_their_handshake() {
    let fx = fixture("shutdown");
    let server = serve_tls(&fx).await;
    let mut stream = TcpStream::connect(("127.0.0.1", server.port()))
        .await
        .unwrap();
    // Served alongside, so the silent connection is surely accepted.
    assert_serves(&server, &fx).await;
    server.shutdown(SAFETY_TIMEOUT);
    tokio::time::timeout(SAFETY_TIMEOUT, server.wait())
        .await
        .expect("the server stopped without waiting for the handshake");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    assert!(answer.is_empty());
}

// ---------------------------------------------------------------------------
// WebSockets over TLS
// ---------------------------------------------------------------------------

#[tokio::test]
async fn websockets_work_over_wss() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let fx = fixture("wss");
    let server = start_tls(
        mist::new(|req: Request<Connection>| async move {
            mist::websocket(
                req,
                |_conn| ((), None::<tokio::sync::mpsc::Receiver<()>>),
                |_state, conn, message| {
                    let sent = match message {
                        mist::WebsocketMessage::Text(text) => mist::send_text_frame(conn, &text),
                        mist::WebsocketMessage::Binary(data) => {
                            mist::send_binary_frame(conn, &data)
                        }
                        _ => Ok(()),
                    };
                    match sent {
                        Ok(()) => mist::Next::Continue,
                        Err(_) => mist::Next::Stop,
                    }
                },
                |_state| {},
            )
        }),
        &fx.cert,
        &fx.key,
    )
    .await;
    let tls = TlsClient::connect_tls(server.port(), &fx.client).await;
    let url = format!("wss://localhost:{}/ws", server.port());
    let (mut ws, response) = tokio::time::timeout(
        SAFETY_TIMEOUT,
        tokio_tungstenite::client_async(url, tls.stream),
    )
    .await
    .expect("upgrade within the safety timeout")
    .expect("WebSocket upgrade over TLS");
    assert_eq!(response.status(), 101);
    let big = "x".repeat(100_000);
    for text in ["hello", big.as_str()] {
        ws.send(Message::text(text)).await.unwrap();
        let echoed = tokio::time::timeout(SAFETY_TIMEOUT, ws.next())
            .await
            .expect("echo within the safety timeout")
            .expect("a message")
            .unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let echoed = ws.next().await.unwrap().unwrap();
    assert_eq!(echoed.into_data().as_ref(), &[1u8, 2, 3]);
    ws.close(None).await.unwrap();
}
