//! The showcase server: every feature of mist behind one route each.
//!
//! ```text
//! cargo run --release --example complete -- [--port N] [--bind ADDR] [--ipv6] [--root DIR]
//!                                          [--tls-cert PEM --tls-key PEM] [--http2]
//!                                          [--unix PATH]
//! ```
//!
//! `--root` is the folder `/file/` serves (default `examples/static`).
//! `--tls-cert` and `--tls-key` (together) serve HTTPS instead of HTTP.
//! `--http2` serves HTTP/2 as well: chosen by ALPN over HTTPS, with prior
//! knowledge over HTTP (`curl --http2-prior-knowledge`).
//! `--unix PATH` listens on a Unix domain socket at PATH instead of TCP
//! (`curl --unix-socket PATH http://localhost/hello`): a stale socket file
//! there is replaced, the file is removed at shutdown, and the line printed
//! is `Listening on unix:PATH (http)`.
//!
//! Its command line and routes are a contract that black-box tests rely
//! on: see `shared/docs/complete-example.md` in the project.

use bytes::{Bytes, BytesMut};
use futures_util::stream;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use mist::{Chunk, Connection, Messages, Next, ReadError, ResponseData, WebsocketMessage};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

/// Bodies `/echo` and `/stream` accept.
const ECHO_LIMIT: usize = 4_000_000;
/// How long requests in flight get to finish after SIGINT or SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

struct Args {
    port: u16,
    bind: String,
    ipv6: bool,
    root: PathBuf,
    /// `--tls-cert` and `--tls-key`: serve HTTPS with these PEM files.
    tls: Option<(PathBuf, PathBuf)>,
    /// `--http2`: serve HTTP/2 as well.
    http2: bool,
    /// `--unix`: listen on a Unix domain socket at this path instead.
    unix: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        port: 4000,
        bind: "localhost".to_string(),
        ipv6: false,
        root: PathBuf::from("examples/static"),
        tls: None,
        http2: false,
        unix: None,
    };
    let (mut tls_cert, mut tls_key) = (None, None);
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--port" => {
                let v = value("--port")?;
                args.port = v.parse().map_err(|_| format!("invalid port {v:?}"))?;
            }
            "--bind" => args.bind = value("--bind")?,
            "--ipv6" => args.ipv6 = true,
            "--root" => args.root = PathBuf::from(value("--root")?),
            "--tls-cert" => tls_cert = Some(PathBuf::from(value("--tls-cert")?)),
            "--tls-key" => tls_key = Some(PathBuf::from(value("--tls-key")?)),
            "--http2" => args.http2 = true,
            "--unix" => args.unix = Some(PathBuf::from(value("--unix")?)),
            "-h" | "--help" => {
                return Err(
                    "usage: complete [--port N] [--bind ADDR] [--ipv6] [--root DIR] \
                     [--tls-cert PEM --tls-key PEM] [--http2] [--unix PATH]"
                        .to_string(),
                )
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    args.tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".to_string()),
    };
    Ok(args)
}

fn main() -> ExitCode {
    // On one core (a container limited to one CPU, or `taskset`), a
    // current-thread runtime: work-stealing buys nothing there, and its
    // fairness costs tail latency (512 connections on one core: p99 7.8 ms
    // against 49.8 ms on the multi-thread runtime, same throughput; see
    // docs/performance.md). On more cores, tokio's multi-thread runtime.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut runtime = if cores == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    match runtime.enable_all().build() {
        Ok(runtime) => runtime.block_on(run()),
        Err(err) => {
            eprintln!("cannot start the tokio runtime: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    // The root is resolved once; `/file/` only serves what lies inside it.
    let root = match std::fs::canonicalize(&args.root) {
        Ok(path) => Root {
            dir: std::fs::File::open(&path).ok(),
            path,
        },
        Err(err) => {
            eprintln!(
                "warning: --root {}: {err}; /file/ will answer 404",
                args.root.display()
            );
            Root {
                path: args.root.clone(),
                dir: None,
            }
        }
    };
    let root = Arc::new(root);
    let mut builder = mist::new(move |req: Request<Connection>| handle(req, Arc::clone(&root)))
        .port(args.port)
        .bind(&args.bind);
    if args.ipv6 {
        builder = builder.with_ipv6();
    }
    if args.http2 {
        builder = builder.with_http2();
    }
    if let Some(path) = &args.unix {
        match bind_unix(path) {
            Ok(listener) => builder = builder.unix_listener(listener),
            Err(err) => {
                eprintln!("cannot start: cannot listen on {}: {err}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    // The signal handlers go in before the server starts: a supervisor may
    // send SIGTERM as soon as it sees the Listening line, and a signal that
    // came before them would kill the process outright, dropping the
    // requests in flight instead of finishing them.
    let signals = Signals::install();
    let started = match &args.tls {
        Some((cert, key)) => builder.start_https(cert, key).await.map_err(|err| {
            format!(
                "{err} (--tls-cert {}, --tls-key {})",
                cert.display(),
                key.display()
            )
        }),
        None => builder.start_http().await.map_err(|err| err.to_string()),
    };
    let server = match started {
        Ok(server) => server,
        Err(err) => {
            eprintln!("cannot start: {err}");
            if let Some(path) = &args.unix {
                let _ = std::fs::remove_file(path);
            }
            return ExitCode::FAILURE;
        }
    };
    signals.wait().await;
    eprintln!("shutting down");
    server.shutdown(SHUTDOWN_GRACE);
    server.wait().await;
    if let Some(path) = &args.unix {
        let _ = std::fs::remove_file(path);
    }
    ExitCode::SUCCESS
}

/// Binds a Unix domain socket at `path`, first removing a socket file an
/// earlier run left there: never a file of another kind, nor the socket of
/// a server still listening on it.
fn bind_unix(path: &Path) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::{fs::FileTypeExt, net::UnixStream};
    if std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_socket()) {
        match UnixStream::connect(path) {
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another server listens on it",
                ))
            }
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path)?;
            }
            Err(_) => {}
        }
    }
    std::os::unix::net::UnixListener::bind(path)
}

/// SIGINT and SIGTERM, listened for from the moment they are installed.
struct Signals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
        }
    }

    /// Completes at the first SIGINT or SIGTERM (at Ctrl-C alone if the
    /// handlers could not be installed).
    async fn wait(self) {
        match (self.int, self.term) {
            (Some(mut int), Some(mut term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

async fn handle(req: Request<Connection>, root: Arc<Root>) -> Response<ResponseData> {
    if let Some(file_path) = req.uri().path().strip_prefix("/file/") {
        return match *req.method() {
            Method::GET | Method::HEAD => serve_file(&req, &root, file_path),
            _ => status(StatusCode::NOT_FOUND),
        };
    }
    match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/hello") => text(StatusCode::OK, "Hello, world!"),
        (&Method::POST | &Method::PUT | &Method::PATCH, "/echo") => echo(req).await,
        (&Method::POST, "/stream") => stream_echo(req).await,
        (&Method::POST, "/duplex") => duplex(req),
        (&Method::GET, "/chunked") => chunked(&req),
        (&Method::GET, "/info") => info(&req),
        (&Method::GET, "/slow") => slow(&req).await,
        (&Method::GET, "/panic") => panic!("the /panic route panics on purpose"),
        (&Method::GET, "/") => showcase(),
        (&Method::GET, "/sse") => ticks(req),
        (&Method::GET, "/ws") => websocket_echo(req),
        (&Method::GET, "/ws/chat") => websocket_chat(req),
        (&Method::GET, "/upgrade") => upgrade_echo(&req),
        _ => status(StatusCode::NOT_FOUND),
    }
}

/// `GET /upgrade` with `Upgrade: echo` (HTTP/1.1): a protocol of the
/// example's own after `101 Switching Protocols`, in which every byte comes
/// back until the client ends its side. Without the field, 426.
fn upgrade_echo(req: &Request<Connection>) -> Response<ResponseData> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let asked = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"echo"));
    if !asked || req.version() != http::Version::HTTP_11 {
        let mut refused = text(StatusCode::UPGRADE_REQUIRED, "send Upgrade: echo");
        refused
            .headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static("echo"));
        return refused;
    }
    let body = ResponseData::upgrade(|mut io| async move {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n @ 1..) = io.read(&mut buf).await {
            if io.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
        let _ = io.shutdown().await;
    });
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    response
        .headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static("echo"));
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    response
}

/// `POST /echo`: the body back, read whole with a limit.
async fn echo(req: Request<Connection>) -> Response<ResponseData> {
    let content_type = content_type(&req);
    match mist::read_body(req, ECHO_LIMIT).await {
        Ok(req) => with_type(ResponseData::from(req.into_body()), content_type),
        Err(err) => read_error(err),
    }
}

/// `POST /stream`: the same echo, pulled 1024 bytes at a time.
async fn stream_echo(mut req: Request<Connection>) -> Response<ResponseData> {
    let content_type = content_type(&req);
    let mut body = mist::stream(&mut req);
    let mut collected = BytesMut::new();
    loop {
        match body.consume(1024).await {
            Ok(Chunk::Data(bytes)) => {
                if collected.len() + bytes.len() > ECHO_LIMIT {
                    return read_error(ReadError::ExcessBody);
                }
                collected.extend_from_slice(&bytes);
            }
            Ok(Chunk::Done) => break,
            Err(err) => return read_error(err),
        }
    }
    with_type(ResponseData::from(collected.freeze()), content_type)
}

/// `POST /duplex`: the body streamed back as it arrives, with the request's
/// content type: each piece goes out as a chunk of the response while the
/// client is still sending the rest (`curl -N -X POST -T - localhost:4000/duplex`
/// echoes each line typed). A body that breaks off ends the response
/// without its last chunk.
fn duplex(mut req: Request<Connection>) -> Response<ResponseData> {
    let content_type = content_type(&req);
    let body = mist::stream(&mut req);
    with_type(ResponseData::chunked_stream(body), content_type)
}

/// `GET /chunked`: `one`, `two`, `three`; or, with `?n=N&size=S&delay_ms=D`,
/// N chunks of S bytes, D ms apart. The body's bytes run `a` to `z` and
/// round again, across chunk boundaries.
fn chunked(req: &Request<Connection>) -> Response<ResponseData> {
    let query = req.uri().query().unwrap_or("");
    if query.is_empty() {
        return Response::new(ResponseData::chunked(["one", "two", "three"]));
    }
    let (Some(n), Some(size), Some(delay)) = (
        param(query, "n").unwrap_or(Some(3)),
        param(query, "size").unwrap_or(Some(5)),
        param(query, "delay_ms").unwrap_or(Some(0)),
    ) else {
        return text(
            StatusCode::BAD_REQUEST,
            "n, size and delay_ms must be numbers",
        );
    };
    if n > 1_000_000 || size > 1 << 20 {
        return text(
            StatusCode::BAD_REQUEST,
            "at most 1000000 chunks of at most 1 MiB",
        );
    }
    let body = stream::unfold(0u64, move |i| async move {
        if i >= n {
            return None;
        }
        if delay > 0 && i > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        let start = i * size;
        let chunk: Vec<u8> = (start..start + size)
            .map(|k| b'a' + (k % 26) as u8)
            .collect();
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(chunk)), i + 1))
    });
    Response::new(ResponseData::chunked_stream(body))
}

/// `GET /info`: the client's address and port (`unknown` over a Unix
/// domain socket, whose clients have none).
fn info(req: &Request<Connection>) -> Response<ResponseData> {
    match mist::get_client_info(req.body()) {
        Ok(info) => text(
            StatusCode::OK,
            format!(
                "{} {}",
                mist::ip_address_to_string(&info.ip_address),
                info.port
            ),
        ),
        Err(mist::ClientInfoUnavailable) => text(StatusCode::OK, "unknown"),
    }
}

/// `GET /slow?ms=T`: answers `ok` after T ms.
async fn slow(req: &Request<Connection>) -> Response<ResponseData> {
    let query = req.uri().query().unwrap_or("");
    match param(query, "ms").unwrap_or(Some(1000)) {
        Some(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            text(StatusCode::OK, "ok")
        }
        None => text(StatusCode::BAD_REQUEST, "ms must be a number"),
    }
}

/// The folder `/file/` serves: its resolved path, and the folder itself,
/// held open so that a file is opened relative to it in one system call.
struct Root {
    path: PathBuf,
    dir: Option<std::fs::File>,
}

/// `GET, HEAD /file/<path>`: a file under the root, zero-copy, with
/// `Range` (one range), `Last-Modified` and `If-Modified-Since`.
fn serve_file(req: &Request<Connection>, root: &Root, url_path: &str) -> Response<ResponseData> {
    let (file, name) = match open_under(root, url_path) {
        Ok(opened) => opened,
        Err(code) => return status(code),
    };
    let Ok(metadata) = file.metadata() else {
        return status(StatusCode::NOT_FOUND);
    };
    if !metadata.is_file() {
        return status(StatusCode::NOT_FOUND);
    }
    let size = metadata.len();
    let modified = metadata.modified().ok().map(whole_seconds);
    let mut headers = http::HeaderMap::new();
    let mime = mime_guess::from_path(&name).first_or_octet_stream();
    if let Ok(value) = HeaderValue::from_str(mime.as_ref()) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some(modified) = modified {
        if let Ok(value) = HeaderValue::from_str(&httpdate::fmt_http_date(modified)) {
            headers.insert(header::LAST_MODIFIED, value);
        }
        // RFC 9110 §13.1.3: not modified since the client's copy.
        let since = req
            .headers()
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        if since.is_some_and(|since| modified <= since) {
            return with_headers(StatusCode::NOT_MODIFIED, ResponseData::empty(), headers);
        }
    }
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| parse_range(v, size));
    let (code, offset, length) = match range {
        None | Some(Range::Ignored) => (StatusCode::OK, 0, size),
        Some(Range::Unsatisfiable) => {
            let value = format!("bytes */{size}");
            headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&value).unwrap(),
            );
            return with_headers(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ResponseData::empty(),
                headers,
            );
        }
        Some(Range::Bytes { start, end }) => {
            let value = format!("bytes {start}-{end}/{size}");
            headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&value).unwrap(),
            );
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
    };
    // Opened and measured above: the body needs no second open or stat.
    with_headers(code, mist::send_open_file(file, offset, length), headers)
}

/// Opens the file a `/file/` path names, if it lies inside the root, with
/// the path's last segment: the content type comes from the name asked
/// for, as in nginx (a symlink `notes` to `a.txt` is served as octet
/// stream). The path is percent-decoded and `..` refused. On Linux the file
/// is opened relative to the open root with `openat2(RESOLVE_BENEATH)`,
/// which refuses any symlink that leads out of the root in the same system
/// call; a symlink it cannot follow that way (an absolute one) takes the
/// slow path below. Like nginx, the file is opened before its type is
/// known (the caller serves regular files only), non-blocking, so that a
/// FIFO under the root cannot hang the server. The error is the status to
/// answer: 404 for what does not exist or may not be reached, 403 for a
/// file that may not be read, 500 for the server's own trouble (out of
/// descriptors, say), which must not look like a missing file.
fn open_under(root: &Root, url_path: &str) -> Result<(std::fs::File, String), StatusCode> {
    let decoded = percent_decode(url_path).ok_or(StatusCode::NOT_FOUND)?;
    let mut relative = PathBuf::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => return Err(StatusCode::NOT_FOUND),
            s if s.contains('\0') => return Err(StatusCode::NOT_FOUND),
            s => relative.push(s),
        }
    }
    let name = relative
        .file_name()
        .and_then(|name| name.to_str())
        .ok_or(StatusCode::NOT_FOUND)?
        .to_string();
    #[cfg(target_os = "linux")]
    if let Some(dir) = &root.dir {
        use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
        use rustix::io::Errno;
        match openat2(
            dir,
            &relative,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => return Ok((fd.into(), name)),
            // An absolute symlink (or one leading out), a kernel without
            // openat2, or a rename racing the lookup (EAGAIN): decide on
            // the resolved path below.
            Err(Errno::XDEV | Errno::NOSYS | Errno::PERM | Errno::AGAIN) => {}
            Err(err) => return Err(open_error(err.into())),
        }
    }
    resolve(&root.path, &relative).map(|file| (file, name))
}

/// The slow path of [`open_under`]: symlinks resolved, then the result
/// checked to be a regular file still under the root.
fn resolve(root: &Path, relative: &Path) -> Result<std::fs::File, StatusCode> {
    use std::os::unix::fs::OpenOptionsExt;
    let real = std::fs::canonicalize(root.join(relative)).map_err(|_| StatusCode::NOT_FOUND)?;
    if !(real.starts_with(root) && real.is_file()) {
        return Err(StatusCode::NOT_FOUND);
    }
    // Non-blocking: it may have become a FIFO since `is_file`.
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(real)
        .map_err(open_error)
}

/// The status for a file that exists but could not be opened.
fn open_error(err: std::io::Error) -> StatusCode {
    use std::io::ErrorKind;
    match err.kind() {
        ErrorKind::NotFound | ErrorKind::NotADirectory | ErrorKind::IsADirectory => {
            StatusCode::NOT_FOUND
        }
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        // A symlink loop, or a name too long: nothing to find there.
        _ if matches!(err.raw_os_error(), Some(code)
            if code == rustix::io::Errno::LOOP.raw_os_error()
                || code == rustix::io::Errno::NAMETOOLONG.raw_os_error()
                || code == rustix::io::Errno::NXIO.raw_os_error()) =>
        {
            StatusCode::NOT_FOUND
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex = [bytes.next()?, bytes.next()?];
            out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out).ok()
}

/// A `Range` header as it applies to a file of a given size.
#[derive(Debug, PartialEq, Eq)]
enum Range {
    /// Not one to honour: another unit, several ranges, or malformed (RFC 9110
    /// §14.2 lets a server ignore those and send the whole file).
    Ignored,
    /// No byte of the range exists: 416.
    Unsatisfiable,
    /// First and last byte, inclusive.
    Bytes { start: u64, end: u64 },
}

/// RFC 9110 §14.1.2: `bytes=a-b`, `bytes=a-`, `bytes=-n`.
fn parse_range(value: &str, size: u64) -> Range {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Range::Ignored;
    };
    if spec.contains(',') {
        return Range::Ignored;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Range::Ignored;
    };
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (number(first), number(last), first.is_empty()) {
        // A suffix: the last n bytes.
        (None, Some(n), true) => {
            if n == 0 || size == 0 {
                Range::Unsatisfiable
            } else {
                Range::Bytes {
                    start: size - n.min(size),
                    end: size - 1,
                }
            }
        }
        (Some(start), None, false) if last.is_empty() => {
            if start >= size {
                Range::Unsatisfiable
            } else {
                Range::Bytes {
                    start,
                    end: size - 1,
                }
            }
        }
        (Some(start), Some(end), false) if start <= end => {
            if start >= size {
                Range::Unsatisfiable
            } else {
                Range::Bytes {
                    start,
                    end: end.min(size - 1),
                }
            }
        }
        _ => Range::Ignored,
    }
}

fn whole_seconds(time: SystemTime) -> SystemTime {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn with_headers(
    code: StatusCode,
    body: ResponseData,
    headers: http::HeaderMap,
) -> Response<ResponseData> {
    let mut response = Response::new(body);
    *response.status_mut() = code;
    *response.headers_mut() = headers;
    response
}

/// `GET /`: a page that joins the chat room and subscribes to `/sse`.
fn showcase() -> Response<ResponseData> {
    let page = include_str!("showcase.html");
    let mut response = Response::new(ResponseData::from(page));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// `GET /sse?count=N&interval_ms=T` (defaults 10 and 1000): N events with
/// `id: i`, `event: tick`, `data: i` for i from 1, the first also with
/// `retry: 1000`; then the stream ends.
fn ticks(req: Request<Connection>) -> Response<ResponseData> {
    let query = req.uri().query().unwrap_or("").to_string();
    let (Some(count), Some(interval)) = (
        param(&query, "count").unwrap_or(Some(10)),
        param(&query, "interval_ms").unwrap_or(Some(1000)),
    ) else {
        return text(
            StatusCode::BAD_REQUEST,
            "count and interval_ms must be numbers",
        );
    };
    mist::server_sent_events(
        req,
        Response::new(()),
        move || {
            // The ticks are a stream the stream's loop polls: no task, and
            // nothing left running when the client leaves.
            let ticks = stream::unfold(1, move |i| async move {
                if i > count {
                    return None;
                }
                if i > 1 {
                    tokio::time::sleep(Duration::from_millis(interval)).await;
                }
                Some((i, i + 1))
            });
            Ok::<_, std::convert::Infallible>((count, Messages::from_stream(ticks)))
        },
        |i, conn, count| {
            let mut tick = mist::event(i.to_string()).id(i.to_string()).name("tick");
            if i == 1 {
                tick = tick.retry(Duration::from_millis(1000));
            }
            match mist::send_event(conn, tick) {
                Ok(()) if i < *count => Next::Continue,
                _ => Next::Stop,
            }
        },
    )
}

/// `GET /ws`: every text and binary message comes back unchanged;
/// `permessage-deflate` is accepted when the client offers it.
fn websocket_echo(req: Request<Connection>) -> Response<ResponseData> {
    mist::websocket(
        req,
        |_conn| ((), None::<Messages<()>>),
        |_state, conn, message| {
            let sent = match message {
                WebsocketMessage::Text(text) => mist::send_text_frame(conn, &text),
                WebsocketMessage::Binary(data) => mist::send_binary_frame(conn, &data),
                _ => Ok(()),
            };
            match sent {
                Ok(()) => Next::Continue,
                Err(_) => Next::Stop,
            }
        },
        |_state| {},
    )
}

/// The `/ws/chat` room: one broadcast channel, to which every member's
/// loop is subscribed.
static ROOM: LazyLock<broadcast::Sender<String>> =
    LazyLock::new(|| broadcast::channel(CHAT_BACKLOG).0);

/// Messages a slow member may have waiting before it misses the oldest.
const CHAT_BACKLOG: usize = 256;

/// `GET /ws/chat`: a chat room. Every text message goes to every member,
/// the sender included, as the custom messages of each member's loop.
fn websocket_chat(req: Request<Connection>) -> Response<ResponseData> {
    mist::websocket(
        req,
        |_conn| ((), Some(ROOM.subscribe())),
        |_state, conn, message| match message {
            WebsocketMessage::Text(text) => {
                // Nobody in the room is not an error; a member too slow to
                // keep up misses messages rather than slowing the room down.
                let _ = ROOM.send(text);
                Next::Continue
            }
            WebsocketMessage::Custom(text) => match mist::send_text_frame(conn, &text) {
                Ok(()) => Next::Continue,
                Err(_) => Next::Stop,
            },
            _ => Next::Continue,
        },
        |_state| {},
    )
}

/// `None` when absent, `Some(None)` when present but not a number.
fn param(query: &str, name: &str) -> Option<Option<u64>> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.parse().ok())
}

fn content_type(req: &Request<Connection>) -> HeaderValue {
    req.headers()
        .get(header::CONTENT_TYPE)
        .cloned()
        .unwrap_or(HeaderValue::from_static("application/octet-stream"))
}

fn read_error(err: ReadError) -> Response<ResponseData> {
    let code = match err {
        ReadError::ExcessBody => StatusCode::PAYLOAD_TOO_LARGE,
        ReadError::Timeout => StatusCode::REQUEST_TIMEOUT,
        _ => StatusCode::BAD_REQUEST,
    };
    text(code, err.to_string())
}

fn with_type(body: ResponseData, content_type: HeaderValue) -> Response<ResponseData> {
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    response
}

fn text(code: StatusCode, body: impl Into<ResponseData>) -> Response<ResponseData> {
    let mut response = with_type(body.into(), HeaderValue::from_static("text/plain"));
    *response.status_mut() = code;
    response
}

fn status(code: StatusCode) -> Response<ResponseData> {
    let mut response = Response::new(ResponseData::empty());
    *response.status_mut() = code;
    response
}
