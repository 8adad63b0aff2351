//! hyper 1.x with hyper-util's TokioIo on a multi-thread runtime: the
//! routes of the mist example, written as a hyper user would. With
//! `--http2`, hyper-util's auto builder serves HTTP/2 with prior knowledge
//! beside HTTP/1.1, as axum's `serve` does.

use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::io::ReaderStream;

type Body = BoxBody<Bytes, std::io::Error>;

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(body.into())
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp
}

async fn handle(req: Request<Incoming>, root: Arc<PathBuf>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    Ok(match (req.method(), path.as_str()) {
        (&Method::GET, "/hello") => {
            let mut resp = full(StatusCode::OK, "Hello, world!");
            resp.headers_mut()
                .insert("content-type", "text/plain".parse().unwrap());
            resp
        }
        (&Method::POST, "/echo") => match Limited::new(req.into_body(), mist_bench::ECHO_LIMIT)
            .collect()
            .await
        {
            Ok(body) => full(StatusCode::OK, body.to_bytes()),
            Err(_) => full(StatusCode::PAYLOAD_TOO_LARGE, ""),
        },
        (&Method::GET, p) if p.starts_with("/file/") => {
            let file = root.join(&p["/file/".len()..]);
            match tokio::fs::File::open(&file).await {
                Ok(f) => {
                    let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
                    let stream = ReaderStream::with_capacity(f, 64 * 1024).map_ok(Frame::data);
                    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
                    resp.headers_mut().insert("content-length", len.into());
                    resp
                }
                Err(_) => full(StatusCode::NOT_FOUND, ""),
            }
        }
        _ => full(StatusCode::NOT_FOUND, ""),
    })
}

#[tokio::main]
async fn main() {
    let args = mist_bench::args();
    let root = Arc::new(args.root);
    let listener = TcpListener::bind(("127.0.0.1", args.port)).await.unwrap();
    mist_bench::listening(listener.local_addr().unwrap().port());
    let http2 = args.http2;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let root = Arc::clone(&root);
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, Arc::clone(&root)));
            if http2 {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            } else {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        });
    }
}
