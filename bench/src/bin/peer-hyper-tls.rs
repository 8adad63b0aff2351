//! hyper 1.x over tokio-rustls (rustls with ring, TLS 1.3 and 1.2, ALPN
//! `http/1.1`), as a hyper user would serve HTTPS: the peer of mist's TLS
//! scenarios. `GET /hello` only.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/hello") => {
            let mut resp = Response::new(Full::new(Bytes::from_static(b"Hello, world!")));
            resp.headers_mut()
                .insert("content-type", "text/plain".parse().unwrap());
            resp
        }
        _ => {
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::NOT_FOUND;
            resp
        }
    })
}

#[tokio::main]
async fn main() {
    let args = mist_bench::args();
    let cert = args.tls_cert.expect("--tls-cert PEM");
    let key = args.tls_key.expect("--tls-key PEM");
    let chain = CertificateDer::pem_file_iter(&cert)
        .expect("open the certificate")
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM certificates");
    let key = PrivateKeyDer::from_pem_file(&key).expect("a PEM private key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("a usable certificate and key");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));

    let listener = TcpListener::bind(("127.0.0.1", args.port)).await.unwrap();
    println!(
        "Listening on https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            // The handshake in the connection's task, bounded, as mist does.
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
            else {
                return;
            };
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service_fn(handle))
                .await;
        });
    }
}
