//! Test helpers: start a server on port 0, and talk to it with raw bytes
//! over a real `TcpStream`.
#![allow(dead_code)]

use bytes::Bytes;
use http::{Request, Response};
use mist::{Builder, Connection, Handler, ResponseData, Server};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A guard against a test hanging forever on a broken server; never used to
/// wait for something to happen.
pub const SAFETY_TIMEOUT: Duration = Duration::from_secs(20);

/// Starts `builder` on a free loopback port, silently.
pub async fn start<H: Handler<Connection>>(builder: Builder<H, Connection>) -> Server {
    builder
        .port(0)
        .bind("127.0.0.1")
        .after_start(|_, _, _| {})
        .start_http()
        .await
        .expect("server starts")
}

/// Starts a server around a handler with default settings.
pub async fn serve<H: Handler<Connection>>(handler: H) -> Server {
    start(mist::new(handler)).await
}

/// A response with a text body and a content type.
pub fn text(status: u16, body: impl Into<ResponseData>) -> Response<ResponseData> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(body.into())
        .unwrap()
}

/// Echoes the body back, read whole with `limit`; 413/400 on errors.
pub async fn echo_handler(req: Request<Connection>) -> Response<ResponseData> {
    match mist::read_body(req, 1_000_000).await {
        Ok(req) => Response::new(ResponseData::from(req.into_body())),
        Err(mist::ReadError::ExcessBody) => text(413, "too large"),
        Err(err) => text(400, err.to_string()),
    }
}

/// One parsed response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| std::str::from_utf8(v).unwrap())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| std::str::from_utf8(v).unwrap())
            .collect()
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// A raw HTTP/1.1 client on a real socket: plain TCP, or TLS
/// ([`TlsClient`]).
pub struct Client<S = TcpStream> {
    pub stream: S,
    buf: Vec<u8>,
}

impl Client<TcpStream> {
    pub async fn connect(server: &Server) -> Client {
        Client::connect_port(server.port()).await
    }

    pub async fn connect_port(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        Client::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Client<S> {
    /// A client over a stream already connected (a Unix domain socket, a
    /// TLS stream made elsewhere).
    pub fn over(stream: S) -> Client<S> {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).await.expect("send");
        // A no-op on TCP; TLS buffers until flushed.
        self.stream.flush().await.expect("flush");
    }

    /// Sends, ignoring a failure (the server may already have closed).
    pub async fn try_send(&mut self, bytes: impl AsRef<[u8]>) -> std::io::Result<()> {
        self.stream.write_all(bytes.as_ref()).await
    }

    /// Reads more bytes; false at the end of the stream.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        let read = tokio::time::timeout(SAFETY_TIMEOUT, self.stream.read(&mut chunk))
            .await
            .expect("server answered within the safety timeout");
        match read {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Reads one response to a request that was not HEAD.
    pub async fn response(&mut self) -> Resp {
        self.read_response(false).await
    }

    /// Reads one response to a HEAD request (no body follows the head).
    pub async fn head_response(&mut self) -> Resp {
        self.read_response(true).await
    }

    async fn read_response(&mut self, head_only: bool) -> Resp {
        let (status, headers, head_len) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut slots);
            match parsed.parse(&self.buf).expect("well-formed response head") {
                httparse::Status::Complete(len) => {
                    let headers = parsed
                        .headers
                        .iter()
                        .map(|h| (h.name.to_string(), h.value.to_vec()))
                        .collect::<Vec<_>>();
                    break (parsed.code.unwrap(), headers, len);
                }
                httparse::Status::Partial => {
                    assert!(
                        self.fill().await,
                        "connection closed before a complete response head: {:?}",
                        String::from_utf8_lossy(&self.buf)
                    );
                }
            }
        };
        self.buf.drain(..head_len);
        let mut resp = Resp {
            status,
            headers,
            body: Vec::new(),
        };
        if head_only || status < 200 || status == 204 || status == 304 {
            return resp;
        }
        if let Some(len) = resp.header("content-length") {
            let len: usize = len.parse().unwrap();
            while self.buf.len() < len {
                assert!(self.fill().await, "connection closed inside the body");
            }
            resp.body = self.buf.drain(..len).collect();
        } else if resp.header("transfer-encoding") == Some("chunked") {
            resp.body = self.read_chunked().await.expect("complete chunked body");
        } else {
            while self.fill().await {}
            resp.body = std::mem::take(&mut self.buf);
        }
        resp
    }

    /// Decodes a chunked body; `None` if the connection ends before the
    /// last chunk.
    pub async fn read_chunked(&mut self) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.line().await?;
            let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16)
                .expect("chunk size");
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.line().await?.is_empty() {}
                return Some(body);
            }
            while self.buf.len() < size + 2 {
                if !self.fill().await {
                    return None;
                }
            }
            body.extend(self.buf.drain(..size));
            assert_eq!(self.buf.drain(..2).collect::<Vec<_>>(), b"\r\n");
        }
    }

    /// The next chunk of a chunked body; `None` after the last chunk (and
    /// its trailers), or if the connection ends first.
    pub async fn next_chunk(&mut self) -> Option<Vec<u8>> {
        let line = self.line().await?;
        let size =
            usize::from_str_radix(line.split(';').next().unwrap().trim(), 16).expect("chunk size");
        if size == 0 {
            while !self.line().await?.is_empty() {}
            return None;
        }
        while self.buf.len() < size + 2 {
            if !self.fill().await {
                return None;
            }
        }
        let chunk = self.buf.drain(..size).collect();
        assert_eq!(self.buf.drain(..2).collect::<Vec<_>>(), b"\r\n");
        Some(chunk)
    }

    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8(self.buf.drain(..at).collect()).unwrap();
                self.buf.drain(..2);
                return Some(line);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// True when the server closed the connection (end of stream or reset)
    /// with nothing more to read.
    pub async fn is_closed(&mut self) -> bool {
        !self.fill().await && self.buf.is_empty()
    }

    /// Everything until the server closes.
    pub async fn read_to_close(&mut self) -> Vec<u8> {
        while self.fill().await {}
        std::mem::take(&mut self.buf)
    }
}

/// Sends `request` on a new connection and reads one response.
pub async fn roundtrip(server: &Server, request: impl AsRef<[u8]>) -> Resp {
    let mut client = Client::connect(server).await;
    client.send(request).await;
    client.response().await
}

pub fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")
}

pub fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// What starting a server on a socket that was bound but never listened
/// must give: `StartError::Listener`, saying so.
pub fn assert_not_listening(result: Result<Server, mist::StartError>) {
    match result {
        Err(err @ mist::StartError::Listener(_)) => {
            assert!(err.to_string().contains("not listening"), "{err}")
        }
        other => panic!("expected a Listener error, got {other:?}"),
    }
}

/// A bytes body from a handler that ignores its request.
pub fn fixed(
    body: &'static str,
) -> impl Fn(Request<Connection>) -> std::future::Ready<Response<ResponseData>> + Send + Sync + 'static
{
    move |_req| {
        std::future::ready(Response::new(ResponseData::from(Bytes::from_static(
            body.as_bytes(),
        ))))
    }
}

// ---------------------------------------------------------------------------
// TLS: certificates made at test time, files for them, and a client
// ---------------------------------------------------------------------------

/// A certificate authority made for one test: its PEM certificate is what
/// clients trust (`curl --cacert`, [`tls_client_config`]).
pub struct TestCa {
    pub pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A server certificate for `localhost` and `127.0.0.1`.
pub struct Leaf {
    /// The certificate, then the intermediates that signed it, if any.
    pub chain_pem: String,
    /// Its private key, PKCS#8.
    pub key_pem: String,
    /// The certificate itself, as a client sees it in the handshake.
    pub der: Vec<u8>,
}

impl TestCa {
    pub fn new(common_name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().expect("generate a CA key");
        let params = ca_params(common_name);
        let cert = params.self_signed(&key).expect("self-sign the CA");
        TestCa {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// An intermediate CA signed by this one; its `pem` is the
    /// intermediate's certificate, which servers send along.
    pub fn intermediate(&self, common_name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().expect("generate a key");
        let params = ca_params(common_name);
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        TestCa {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A server certificate signed by this CA, with `common_name` as its
    /// subject. An intermediate's own certificate follows it in the chain
    /// when `self` is an intermediate (`send_chain`).
    pub fn leaf(&self, common_name: &str, send_chain: bool) -> Leaf {
        let key = rcgen::KeyPair::generate().expect("generate a key");
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("certificate parameters");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let mut chain_pem = cert.pem();
        if send_chain {
            chain_pem.push_str(&self.pem);
        }
        Leaf {
            chain_pem,
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

fn ca_params(common_name: &str) -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params
}

/// A folder of its own in the temporary directory, removed on drop.
pub struct TestDir(pub std::path::PathBuf);

impl TestDir {
    pub fn new(tag: &str) -> TestDir {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("mist-test-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temporary folder");
        TestDir(path)
    }

    /// Writes a file in the folder; returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> std::path::PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write a temporary file");
        path
    }

    /// The path of a file in the folder, which need not exist.
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.0.join(name)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A leaf's certificate and key written to `dir` as `NAME.crt` and
/// `NAME.key`.
pub fn write_leaf(
    dir: &TestDir,
    name: &str,
    leaf: &Leaf,
) -> (std::path::PathBuf, std::path::PathBuf) {
    (
        dir.write(&format!("{name}.crt"), &leaf.chain_pem),
        dir.write(&format!("{name}.key"), &leaf.key_pem),
    )
}

/// Starts `builder` over HTTPS on a free loopback port, silently.
pub async fn start_tls<H: Handler<Connection>>(
    builder: Builder<H, Connection>,
    certfile: &std::path::Path,
    keyfile: &std::path::Path,
) -> Server {
    builder
        .port(0)
        .bind("127.0.0.1")
        .after_start(|_, _, _| {})
        .start_https(certfile, keyfile)
        .await
        .expect("HTTPS server starts")
}

/// The certificates of `ca_pem`, trusted.
pub fn root_store(ca_pem: &str) -> rustls::RootCertStore {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("trust the CA");
    }
    roots
}

/// The `ring` provider, named rather than rustls' process-wide default.
pub fn ring() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client configuration trusting only `ca_pem`, offering ALPN
/// `http/1.1`, and presenting `client`'s certificate when asked.
pub fn tls_client_config_with(
    ca_pem: &str,
    client: Option<&Leaf>,
) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let builder = rustls::ClientConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(root_store(ca_pem));
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(leaf) => {
            let chain = CertificateDer::pem_slice_iter(leaf.chain_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("the client's PEM chain");
            let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("its key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("a usable client certificate")
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    std::sync::Arc::new(config)
}

/// A rustls client configuration trusting only `ca_pem`, offering ALPN
/// `http/1.1`.
pub fn tls_client_config(ca_pem: &str) -> std::sync::Arc<rustls::ClientConfig> {
    tls_client_config_with(ca_pem, None)
}

/// A raw HTTP/1.1 client over TLS (rustls, verifying the server's
/// certificate for `localhost`).
pub type TlsClient = Client<tokio_rustls::client::TlsStream<TcpStream>>;

impl Client<tokio_rustls::client::TlsStream<TcpStream>> {
    pub async fn connect_tls(
        port: u16,
        config: &std::sync::Arc<rustls::ClientConfig>,
    ) -> TlsClient {
        Self::try_connect_tls(port, config)
            .await
            .expect("TLS handshake")
    }

    pub async fn try_connect_tls(
        port: u16,
        config: &std::sync::Arc<rustls::ClientConfig>,
    ) -> std::io::Result<TlsClient> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        tcp.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::clone(config));
        let stream = tokio::time::timeout(SAFETY_TIMEOUT, connector.connect(name, tcp))
            .await
            .expect("handshake within the safety timeout")?;
        Ok(Client {
            stream,
            buf: Vec::new(),
        })
    }

    /// The certificate the server presented, DER.
    pub fn server_certificate(&self) -> Vec<u8> {
        let (_, session) = self.stream.get_ref();
        session.peer_certificates().expect("a server certificate")[0].to_vec()
    }

    /// The protocol agreed with ALPN.
    pub fn alpn(&self) -> Option<Vec<u8>> {
        self.stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
    }
}
