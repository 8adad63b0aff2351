//! Black-box tests of `examples/complete.rs` against its contract
//! (`shared/docs/complete-example.md`): the example runs as its own process,
//! and is driven through real sockets by `curl` and by the raw `Client` of
//! `tests/support`.
//!
//! The binary is `<target>/<profile>/examples/complete`, made up to date by
//! the first test that needs it (see `example_binary`). Every test starts
//! its own server on `--port 0` and kills it when it ends, passed or failed;
//! nothing waits by sleeping: only for a line, a response or an exit.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};
use support::{Client, SAFETY_TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The limit `/echo` and `/stream` put on bodies.
const ECHO_LIMIT: usize = 4_000_000;

/// An idle server stops well within the 10 s grace period it gives
/// requests in flight.
const PROMPTLY: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// The example process
// ---------------------------------------------------------------------------

/// The example's binary, brought up to date once per test run.
///
/// A whole `cargo test` builds the examples, into `<target>/<profile>/examples`
/// next to this test's `<target>/<profile>/deps/example-<hash>`; but
/// `cargo test --test example` builds this file only, which would leave an
/// old example behind. So the first test asks cargo to build it (a no-op
/// when it is fresh) and takes the path cargo reports.
fn example_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test binary lives in <target>/<profile>/deps");
        let expected = profile_dir
            .join("examples")
            .join(format!("complete{}", std::env::consts::EXE_SUFFIX));
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "--example", "complete", "--message-format=json"])
            .arg("--manifest-path")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .arg("--target-dir")
            .arg(profile_dir.parent().expect("<target>"))
            .stdin(Stdio::null());
        match profile_dir.file_name().and_then(|name| name.to_str()) {
            Some("debug") | None => {}
            Some(profile) => {
                build.args(["--profile", profile]);
            }
        }
        let out = build.output().expect("run cargo build --example complete");
        assert!(
            out.status.success(),
            "cargo build --example complete failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let path = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|line| line.contains(r#""kind":["example"]"#))
            .filter(|line| line.contains(r#""name":"complete""#))
            .find_map(|line| {
                let (_, rest) = line.split_once(r#""executable":""#)?;
                Some(PathBuf::from(rest.split_once('"')?.0))
            })
            .unwrap_or(expected);
        assert!(
            path.is_file(),
            "example binary not found at {}",
            path.display()
        );
        path
    })
}

/// A running (or finished) `complete` example. Dropping it kills the
/// process, so a failed test leaves nothing behind.
struct Example {
    child: Child,
    /// Lines of stdout, as they come; disconnected at end of stream.
    stdout: mpsc::Receiver<String>,
    stderr: Option<thread::JoinHandle<String>>,
    /// `HOST` and `PORT` of the `Listening on http://HOST:PORT` line.
    host: String,
    port: u16,
}

/// How a process ended.
struct Exit {
    status: ExitStatus,
    /// Stdout lines not read before.
    stdout: Vec<String>,
    stderr: String,
    /// From the call to `wait_exit` to the end of stdout.
    took: Duration,
}

impl Example {
    /// Spawns the example without waiting for anything.
    fn spawn(args: &[&str]) -> Example {
        let mut child = Command::new(example_binary())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the example");
        let stdout = child.stdout.take().unwrap();
        let (lines, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&line);
                        let text = text.strip_suffix('\n').unwrap_or(&text);
                        let text = text.strip_suffix('\r').unwrap_or(text);
                        if lines.send(text.to_string()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let mut stderr = child.stderr.take().unwrap();
        let stderr = thread::spawn(move || {
            let mut all = Vec::new();
            let _ = stderr.read_to_end(&mut all);
            String::from_utf8_lossy(&all).into_owned()
        });
        Example {
            child,
            stdout: rx,
            stderr: Some(stderr),
            host: String::new(),
            port: 0,
        }
    }

    /// Spawns the example and waits for its `Listening on` line.
    fn start(args: &[&str]) -> Example {
        let mut example = Example::spawn(args);
        let line = match example.stdout.recv_timeout(SAFETY_TIMEOUT) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("the example printed nothing within {SAFETY_TIMEOUT:?}")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let exit = example.wait_exit();
                panic!(
                    "the example ended without a Listening line: {}, stderr: {:?}",
                    exit.status, exit.stderr
                )
            }
        };
        let (host, port) = parse_listening(&line).unwrap_or_else(|| {
            panic!("first stdout line is not `Listening on http://HOST:PORT`: {line:?}")
        });
        example.host = host;
        example.port = port;
        example
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.host, self.port)
    }

    /// Sends a signal (`TERM`, `INT`) to the process. It has not been
    /// waited for, so its PID is still its own.
    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed: {status}");
    }

    /// Waits for the process to end (its stdout closes when it exits),
    /// within the safety timeout.
    fn wait_exit(&mut self) -> Exit {
        let started = Instant::now();
        let deadline = started + SAFETY_TIMEOUT;
        let mut stdout = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => stdout.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("the example did not exit within {SAFETY_TIMEOUT:?}")
                }
            }
        }
        let took = started.elapsed();
        let status = self.child.wait().expect("wait for the example");
        let stderr = self
            .stderr
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        Exit {
            status,
            stdout,
            stderr,
            took,
        }
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        // Only our own child, by its handle; a no-op once it was waited for.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `Listening on http://HOST:PORT` -> (HOST, PORT).
fn parse_listening(line: &str) -> Option<(String, u16)> {
    let rest = line.strip_prefix("Listening on http://")?;
    let (host, port) = rest.rsplit_once(':')?;
    Some((host.to_string(), port.parse().ok()?))
}

// ---------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct Curled {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Curled {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("a UTF-8 body")
    }
}

fn run_curl(args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-s", "-S", "-g", "--max-time", "20"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run curl")
}

/// Runs `curl -i` and parses what it printed: the final response's status,
/// headers and body (interim `100 Continue` responses skipped).
fn curl(args: &[&str]) -> Curled {
    let out = run_curl(&[&["-i"], args].concat());
    assert!(
        out.status.success(),
        "curl {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut rest: &[u8] = &out.stdout;
    loop {
        let mut slots = [httparse::EMPTY_HEADER; 64];
        let mut head = httparse::Response::new(&mut slots);
        let len = match head.parse(rest) {
            Ok(httparse::Status::Complete(len)) => len,
            other => panic!(
                "curl printed no response head ({other:?}): {:?}",
                String::from_utf8_lossy(rest)
            ),
        };
        let status = head.code.unwrap();
        let headers = head
            .headers
            .iter()
            .map(|h| {
                let value = String::from_utf8_lossy(h.value).into_owned();
                (h.name.to_string(), value)
            })
            .collect();
        rest = &rest[len..];
        if (100..200).contains(&status) {
            continue;
        }
        return Curled {
            status,
            headers,
            body: rest.to_vec(),
        };
    }
}

/// The status code only (`-w '%{http_code}'`), body discarded; also when
/// curl ends with an error after the response (the server may close while
/// curl is still sending).
fn curl_status(args: &[&str]) -> (String, std::process::Output) {
    let out = run_curl(&[&["-o", "/dev/null", "-w", "%{http_code}"], args].concat());
    (String::from_utf8_lossy(&out.stdout).into_owned(), out)
}

/// A file in the temporary folder, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &[u8]) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("mist-example-test-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).expect("write a temporary file");
        TempFile(path)
    }

    /// `@path`, as curl's `--data-binary` takes a file.
    fn at(&self) -> String {
        format!("@{}", self.0.display())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `len` bytes of every value, in a pattern that shows misplaced pieces.
fn binary_body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")
}

/// A new connection to a server that has stopped accepting is refused, or
/// closed without a response.
async fn assert_not_served(port: u16) {
    let connected = tokio::time::timeout(SAFETY_TIMEOUT, TcpStream::connect(("127.0.0.1", port)))
        .await
        .expect("connect attempt ended within the safety timeout");
    let Ok(mut stream) = connected else {
        return; // refused
    };
    let _ = stream.write_all(get("/hello").as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(SAFETY_TIMEOUT, stream.read_to_end(&mut answer))
        .await
        .expect("the connection closed within the safety timeout");
    assert!(
        answer.is_empty(),
        "a connection made after the signal was served: {:?}",
        String::from_utf8_lossy(&answer)
    );
}

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

#[test]
fn listening_line_is_printed_once_with_the_real_port() {
    let mut example = Example::start(&["--port", "0"]);
    assert_ne!(example.port, 0, "the line shows the port the OS gave");
    assert_eq!(example.host, "127.0.0.1", "localhost listens on IPv4");
    let hello = curl(&[&example.url("/hello")]);
    assert_eq!(hello.status, 200);
    assert_eq!(hello.text(), "Hello, world!");

    example.signal("TERM");
    let exit = example.wait_exit();
    assert!(exit.status.success(), "exit: {}", exit.status);
    assert!(
        exit.stdout.is_empty(),
        "nothing but the one Listening line on stdout, also found: {:?}",
        exit.stdout
    );
}

#[test]
fn port_0_gives_each_server_its_own_port() {
    let first = Example::start(&["--port", "0"]);
    let second = Example::start(&["--port", "0"]);
    assert_ne!(first.port, second.port);
    for example in [&first, &second] {
        assert_eq!(curl(&[&example.url("/hello")]).status, 200);
    }
}

#[tokio::test]
async fn bind_127_0_0_1_listens_there() {
    let example = Example::start(&["--bind", "127.0.0.1", "--port", "0"]);
    assert_eq!(example.host, "127.0.0.1");
    let mut client = Client::connect_port(example.port).await;
    let local = client.stream.local_addr().unwrap();
    client.send(get("/info")).await;
    let info = client.response().await;
    assert_eq!(info.status, 200);
    assert_eq!(info.text(), format!("127.0.0.1 {}", local.port()));
}

#[test]
fn bind_ipv6_loopback_prints_brackets_and_serves_over_ipv6() {
    if let Err(err) = std::net::TcpListener::bind("[::1]:0") {
        println!("note: skipped, this machine has no IPv6 loopback ({err})");
        return;
    }
    let example = Example::start(&["--bind", "::1", "--port", "0"]);
    assert_eq!(example.host, "[::1]");
    assert_ne!(example.port, 0);

    let hello = curl(&[&example.url("/hello")]);
    assert_eq!(hello.status, 200);
    assert_eq!(hello.text(), "Hello, world!");

    // The body is `IP PORT`; curl appends its own local port after it.
    let out = run_curl(&["-w", " %{local_port}", &example.url("/info")]);
    assert!(out.status.success(), "curl failed: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let words: Vec<&str> = text.split(' ').collect();
    assert_eq!(words.len(), 3, "{text:?}");
    assert_eq!(words[0], "::1", "{text:?}");
    assert_eq!(words[1], words[2], "the port is the client's: {text:?}");
}

#[test]
fn invalid_bind_exits_non_zero_with_a_message() {
    let mut example = Example::spawn(&["--bind", "nonsense", "--port", "0"]);
    let exit = example.wait_exit();
    assert!(!exit.status.success(), "exit: {}", exit.status);
    assert!(exit.stdout.is_empty(), "stdout: {:?}", exit.stdout);
    assert!(!exit.stderr.trim().is_empty(), "a message on stderr");
}

#[test]
fn tls_with_unusable_certificate_files_exits_non_zero_without_listening() {
    let dir = std::env::temp_dir();
    let cert = dir.join(format!(
        "mist-example-test-{}-missing-cert.pem",
        std::process::id()
    ));
    let key = dir.join(format!(
        "mist-example-test-{}-missing-key.pem",
        std::process::id()
    ));
    let mut example = Example::spawn(&[
        "--port",
        "0",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let exit = example.wait_exit();
    assert!(!exit.status.success(), "exit: {}", exit.status);
    assert!(
        !exit.stdout.iter().any(|l| l.starts_with("Listening on")),
        "stdout: {:?}",
        exit.stdout
    );
    assert!(!exit.stderr.trim().is_empty(), "a message on stderr");
}

// ---------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------

/// `--unix PATH`: the line names the socket, curl reaches every route
/// through it (a client there has no address), a socket file left by an
/// earlier run is replaced, and the file is removed at shutdown.
#[test]
fn unix_socket_serves_curl_and_is_removed_at_shutdown() {
    let path = std::env::temp_dir().join(format!("mist-example-{}-unix.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    drop(std::os::unix::net::UnixListener::bind(&path).expect("a stale socket file"));
    assert!(path.exists());
    let path_text = path.to_str().expect("a UTF-8 temporary path");
    let mut example = Example::spawn(&["--unix", path_text]);
    let line = example
        .stdout
        .recv_timeout(SAFETY_TIMEOUT)
        .expect("a Listening line");
    assert_eq!(line, format!("Listening on unix:{path_text} (http)"));

    let over_unix = |target: &str| {
        curl(&[
            "--unix-socket",
            path_text,
            &format!("http://localhost{target}"),
        ])
    };
    let hello = over_unix("/hello");
    assert_eq!((hello.status, hello.text()), (200, "Hello, world!"));
    let info = over_unix("/info");
    assert_eq!((info.status, info.text()), (200, "unknown"));
    let file = over_unix("/file/hello.txt");
    let expected =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/static/hello.txt"))
            .unwrap();
    assert_eq!((file.status, &file.body), (200, &expected));

    // A second server does not take the socket of one that listens on it.
    let mut second = Example::spawn(&["--unix", path_text]);
    let exit = second.wait_exit();
    assert!(!exit.status.success(), "exit: {}", exit.status);
    assert!(
        exit.stderr.contains("another server listens on it"),
        "{}",
        exit.stderr
    );
    assert_eq!(over_unix("/hello").status, 200, "the first still serves");

    example.signal("TERM");
    let exit = example.wait_exit();
    assert!(
        exit.status.success(),
        "exit: {}, stderr: {}",
        exit.status,
        exit.stderr
    );
    assert!(!path.exists(), "the socket file is removed at shutdown");
}

#[test]
fn hello_answers_with_13_bytes_of_text() {
    let example = Example::start(&["--port", "0"]);
    let hello = curl(&[&example.url("/hello")]);
    assert_eq!(hello.status, 200);
    assert_eq!(hello.header("content-type"), Some("text/plain"));
    assert_eq!(hello.header("content-length"), Some("13"));
    assert_eq!(hello.body, b"Hello, world!");
}

#[tokio::test]
async fn head_hello_has_content_length_13_and_no_body() {
    let example = Example::start(&["--port", "0"]);
    let head = curl(&["-I", &example.url("/hello")]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/plain"));
    assert_eq!(head.header("content-length"), Some("13"));
    assert!(head.body.is_empty());

    // On one connection: a body after the HEAD response would spoil the
    // next response.
    let mut client = Client::connect_port(example.port).await;
    client
        .send("HEAD /hello HTTP/1.1\r\nHost: test\r\n\r\n")
        .await;
    let head = client.head_response().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("13"));
    client.send(get("/hello")).await;
    let hello = client.response().await;
    assert_eq!(hello.status, 200);
    assert_eq!(hello.text(), "Hello, world!");
}

#[test]
fn echo_returns_the_body_and_content_type_for_post_put_and_patch() {
    let example = Example::start(&["--port", "0"]);
    let url = example.url("/echo");
    for method in ["POST", "PUT", "PATCH"] {
        let body = format!("a {method} body, with ünïcode");
        let echo = curl(&[
            "-X",
            method,
            "-H",
            "content-type: application/x-test; charset=utf-8",
            "--data-binary",
            &body,
            &url,
        ]);
        assert_eq!(echo.status, 200, "{method}");
        assert_eq!(
            echo.header("content-type"),
            Some("application/x-test; charset=utf-8"),
            "{method}"
        );
        assert_eq!(echo.text(), body, "{method}");
    }
}

#[test]
fn echo_without_content_type_answers_octet_stream() {
    let example = Example::start(&["--port", "0"]);
    let body = binary_body(1000);
    let file = TempFile::new("echo-octet-stream", &body);
    let echo = curl(&[
        "-H",
        "content-type:",
        "--data-binary",
        &file.at(),
        &example.url("/echo"),
    ]);
    assert_eq!(echo.status, 200);
    assert_eq!(
        echo.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(echo.body, body);
}

#[test]
fn echo_accepts_a_body_of_exactly_4_000_000_bytes() {
    let example = Example::start(&["--port", "0"]);
    let body = binary_body(ECHO_LIMIT);
    let file = TempFile::new("echo-at-limit", &body);
    let echo = curl(&[
        "-H",
        "content-type:",
        "--data-binary",
        &file.at(),
        &example.url("/echo"),
    ]);
    assert_eq!(echo.status, 200);
    assert_eq!(echo.body.len(), ECHO_LIMIT);
    assert!(echo.body == body, "the 4,000,000 bytes come back unchanged");
}

#[test]
fn echo_over_4_000_000_bytes_is_413() {
    let example = Example::start(&["--port", "0"]);
    let file = TempFile::new("echo-over-limit", &binary_body(ECHO_LIMIT + 1));
    let (at, url) = (file.at(), example.url("/echo"));
    for framing in ["content-length", "chunked"] {
        let mut args = vec!["-H", "content-type:", "--data-binary", &at];
        if framing == "chunked" {
            args.extend(["-H", "transfer-encoding: chunked"]);
        }
        args.push(&url);
        let (code, out) = curl_status(&args);
        assert_eq!(
            code,
            "413",
            "{framing}: curl {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn echo_with_a_malformed_chunked_body_is_400() {
    let example = Example::start(&["--port", "0"]);
    let mut client = Client::connect_port(example.port).await;
    client
        .send(
            "POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n\
             zz\r\nhello\r\n0\r\n\r\n",
        )
        .await;
    let response = client.response().await;
    assert_eq!(response.status, 400);
}

#[test]
fn stream_echoes_100_kb_sent_chunked_and_with_content_length() {
    let example = Example::start(&["--port", "0"]);
    let body = binary_body(100 * 1024 + 17);
    let file = TempFile::new("stream-100kb", &body);
    let (at, url) = (file.at(), example.url("/stream"));
    for framing in ["content-length", "chunked"] {
        let mut args = vec![
            "-H",
            "content-type: application/x-stream-test",
            "--data-binary",
            &at,
        ];
        if framing == "chunked" {
            args.extend(["-H", "transfer-encoding: chunked"]);
        }
        args.push(&url);
        let echo = curl(&args);
        assert_eq!(echo.status, 200, "{framing}");
        assert_eq!(
            echo.header("content-type"),
            Some("application/x-stream-test"),
            "{framing}"
        );
        assert_eq!(echo.body.len(), body.len(), "{framing}");
        assert!(
            echo.body == body,
            "{framing}: the bytes come back unchanged"
        );
    }
}

/// `POST /duplex` writes each piece of the body back before the client has
/// sent the rest.
#[tokio::test]
async fn duplex_streams_the_body_back_while_it_arrives() {
    let example = Example::start(&["--port", "0"]);
    let mut client = Client::connect_port(example.port).await;
    client
        .send(
            "POST /duplex HTTP/1.1\r\nHost: test\r\ncontent-type: text/x-lines\r\n\
             Transfer-Encoding: chunked\r\n\r\n6\r\nfirst\n\r\n",
        )
        .await;
    let head = client.head_response().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/x-lines"));
    assert_eq!(client.next_chunk().await.unwrap(), b"first\n");
    client.send("7\r\nsecond\n\r\n0\r\n\r\n").await;
    assert_eq!(client.next_chunk().await.unwrap(), b"second\n");
    assert_eq!(client.next_chunk().await, None);
}

#[test]
fn chunked_sends_one_two_three() {
    let example = Example::start(&["--port", "0"]);
    let chunked = curl(&[&example.url("/chunked")]);
    assert_eq!(chunked.status, 200);
    assert_eq!(chunked.header("transfer-encoding"), Some("chunked"));
    assert_eq!(chunked.header("content-length"), None);
    assert_eq!(chunked.text(), "onetwothree");
}

#[test]
fn chunked_with_parameters_sends_n_chunks_of_the_alphabet() {
    let example = Example::start(&["--port", "0"]);
    let chunked = curl(&[&example.url("/chunked?n=5&size=30&delay_ms=10")]);
    assert_eq!(chunked.status, 200);
    assert_eq!(chunked.header("transfer-encoding"), Some("chunked"));
    let expected: Vec<u8> = (0..150).map(|k| b'a' + (k % 26) as u8).collect();
    assert_eq!(chunked.text(), std::str::from_utf8(&expected).unwrap());
}

#[tokio::test]
async fn info_shows_the_clients_address_and_port() {
    let example = Example::start(&["--port", "0"]);
    let mut client = Client::connect_port(example.port).await;
    let local = client.stream.local_addr().unwrap();
    client.send(get("/info")).await;
    let info = client.response().await;
    assert_eq!(info.status, 200);
    assert_eq!(info.header("content-type"), Some("text/plain"));
    assert_eq!(info.text(), format!("127.0.0.1 {}", local.port()));
}

#[test]
fn slow_answers_ok_after_waiting() {
    let example = Example::start(&["--port", "0"]);
    let started = Instant::now();
    let slow = curl(&[&example.url("/slow?ms=50")]);
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(slow.status, 200);
    assert_eq!(slow.text(), "ok");
}

/// `GET /upgrade` with `Upgrade: echo`: 101, then every byte back (those
/// sent right behind the request too) until the client ends its side.
/// Without the field, 426 naming it.
#[tokio::test]
async fn upgrade_switches_to_an_echo_protocol() {
    let example = Example::start(&["--port", "0"]);
    let mut tcp = TcpStream::connect(("127.0.0.1", example.port))
        .await
        .unwrap();
    tcp.write_all(
        b"GET /upgrade HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\nearly",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"early") {
        let n = tokio::time::timeout(SAFETY_TIMEOUT, tcp.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{text}"
    );
    assert!(text.contains("upgrade: echo\r\n"), "{text}");
    tcp.write_all(b"late").await.unwrap();
    tcp.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(SAFETY_TIMEOUT, tcp.read_to_end(&mut rest))
        .await
        .expect("the end in time")
        .unwrap();
    assert_eq!(rest, b"late");

    let refused = curl(&[&example.url("/upgrade")]);
    assert_eq!(refused.status, 426);
    assert_eq!(refused.header("upgrade"), Some("echo"));
}

#[tokio::test]
async fn panic_gives_500_and_the_server_carries_on() {
    let example = Example::start(&["--port", "0"]);
    let mut kept = Client::connect_port(example.port).await;
    kept.send(get("/hello")).await;
    assert_eq!(kept.response().await.status, 200);

    let mut panicking = Client::connect_port(example.port).await;
    panicking.send(get("/panic")).await;
    assert_eq!(panicking.response().await.status, 500);

    let mut fresh = Client::connect_port(example.port).await;
    fresh.send(get("/hello")).await;
    let hello = fresh.response().await;
    assert_eq!(hello.status, 200);
    assert_eq!(hello.text(), "Hello, world!");

    kept.send(get("/hello")).await;
    let hello = kept.response().await;
    assert_eq!(hello.status, 200);
    assert_eq!(hello.text(), "Hello, world!");
}

#[test]
fn anything_else_is_404_with_an_empty_body() {
    let example = Example::start(&["--port", "0"]);
    for args in [
        vec![example.url("/nowhere")],
        vec![example.url("/hello/")],
        vec!["-X".into(), "DELETE".into(), example.url("/echo")],
        vec!["--data-binary".into(), "x".into(), example.url("/hello")],
        vec!["-X".into(), "PUT".into(), example.url("/stream")],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let response = curl(&args);
        assert_eq!(response.status, 404, "{args:?}");
        assert!(response.body.is_empty(), "{args:?}: {:?}", response.body);
    }
}

// ---------------------------------------------------------------------------
// Graceful shutdown
// ---------------------------------------------------------------------------

#[tokio::test]
async fn sigterm_lets_a_slow_request_finish_then_exits_0() {
    let mut example = Example::start(&["--port", "0"]);

    // A: a keep-alive connection known to be served, then the slow request.
    let mut slow = Client::connect_port(example.port).await;
    slow.send(get("/hello")).await;
    assert_eq!(slow.response().await.status, 200);
    slow.send(get("/slow?ms=1500")).await;

    // B: a full round trip after A's request was sent gives the server
    // time to take it up; B then stays open, idle.
    let mut idle = Client::connect_port(example.port).await;
    idle.send(get("/hello")).await;
    assert_eq!(idle.response().await.status, 200);

    example.signal("TERM");

    // The server closes idle connections once it shuts down: the event
    // that tells it has stopped accepting.
    assert!(idle.is_closed().await, "the idle connection is closed");
    assert_not_served(example.port).await;

    let response = slow.response().await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "ok");
    assert!(
        response.closes(),
        "connection: close, got {:?}",
        response.headers
    );
    assert!(slow.is_closed().await);

    let exit = example.wait_exit();
    assert!(
        exit.status.success(),
        "exit: {}, stderr: {:?}",
        exit.status,
        exit.stderr
    );
}

#[tokio::test]
async fn sigterm_lets_a_handler_that_reads_its_body_finish() {
    let mut example = Example::start(&["--port", "0"]);

    let mut idle = Client::connect_port(example.port).await;
    idle.send(get("/hello")).await;
    assert_eq!(idle.response().await.status, 200);

    // `100 Continue` goes out when the handler asks for the body: from
    // then on the request is certainly in flight.
    let mut echo = Client::connect_port(example.port).await;
    echo.send(
        "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\n\
         Content-Length: 11\r\nExpect: 100-continue\r\n\r\n",
    )
    .await;
    assert_eq!(echo.response().await.status, 100);

    example.signal("TERM");
    assert!(idle.is_closed().await, "the idle connection is closed");
    assert_not_served(example.port).await;

    // The body only now: the handler is still waiting for it.
    echo.send("in flight!!").await;
    let response = echo.response().await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "in flight!!");
    assert!(
        response.closes(),
        "connection: close, got {:?}",
        response.headers
    );
    assert!(echo.is_closed().await);

    let exit = example.wait_exit();
    assert!(
        exit.status.success(),
        "exit: {}, stderr: {:?}",
        exit.status,
        exit.stderr
    );
}

#[test]
fn sigint_on_an_idle_server_exits_0_promptly() {
    let mut example = Example::start(&["--port", "0"]);
    assert_eq!(curl(&[&example.url("/hello")]).status, 200);
    example.signal("INT");
    let exit = example.wait_exit();
    assert!(
        exit.status.success(),
        "exit: {}, stderr: {:?}",
        exit.status,
        exit.stderr
    );
    assert!(exit.took < PROMPTLY, "took {:?}", exit.took);
}

// ---------------------------------------------------------------------------
// /file/
// ---------------------------------------------------------------------------

/// A `--root` folder for one test, removed on drop: `a.txt`, `sub/b.css`,
/// absolute and relative symlinks inside the root and leading out of it, a
/// symlink loop, a FIFO, and a secret next to the root that no URL may
/// reach.
struct Root(PathBuf);

impl Root {
    fn new(name: &str) -> Root {
        let base = std::env::temp_dir().join(format!("mist-root-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let root = base.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("a.txt"), "0123456789").unwrap();
        std::fs::write(root.join("sub").join("b.css"), "body {}").unwrap();
        std::fs::write(base.join("secret.txt"), "secret").unwrap();
        std::os::unix::fs::symlink(root.join("a.txt"), root.join("inside-link.txt")).unwrap();
        std::os::unix::fs::symlink(base.join("secret.txt"), root.join("outside-link.txt")).unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("relative-link.txt")).unwrap();
        std::os::unix::fs::symlink("../secret.txt", root.join("relative-out.txt")).unwrap();
        std::os::unix::fs::symlink("loop-b", root.join("loop-a")).unwrap();
        std::os::unix::fs::symlink("loop-a", root.join("loop-b")).unwrap();
        // A FIFO: opening it for reading would wait for a writer.
        let made = std::process::Command::new("mkfifo")
            .arg(root.join("pipe.txt"))
            .status()
            .unwrap();
        assert!(made.success());
        Root(base)
    }

    fn path(&self) -> String {
        self.0.join("root").display().to_string()
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn file_route_serves_files_with_type_length_and_validators() {
    let root = Root::new("serve");
    let example = Example::start(&["--port", "0", "--root", &root.path()]);
    let resp = curl(&[&example.url("/file/a.txt")]);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "0123456789");
    assert_eq!(resp.header("content-type"), Some("text/plain"));
    assert_eq!(resp.header("content-length"), Some("10"));
    assert_eq!(resp.header("accept-ranges"), Some("bytes"));
    let css = curl(&[&example.url("/file/sub/b.css")]);
    assert_eq!(css.header("content-type"), Some("text/css"));
    assert_eq!(
        curl(&[&example.url("/file/inside-link.txt")]).text(),
        "0123456789"
    );
    assert_eq!(
        curl(&[&example.url("/file/relative-link.txt")]).text(),
        "0123456789"
    );

    let head = curl(&["-I", &example.url("/file/a.txt")]);
    assert_eq!(head.header("content-length"), Some("10"));
    assert!(head.body.is_empty());

    let modified = resp
        .header("last-modified")
        .expect("last-modified")
        .to_string();
    let not_modified = curl(&[
        "-H",
        &format!("If-Modified-Since: {modified}"),
        &example.url("/file/a.txt"),
    ]);
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    let stale = curl(&[
        "-H",
        "If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT",
        &example.url("/file/a.txt"),
    ]);
    assert_eq!(stale.status, 200);
}

#[test]
fn file_route_answers_ranges() {
    let root = Root::new("ranges");
    let example = Example::start(&["--port", "0", "--root", &root.path()]);
    let url = example.url("/file/a.txt");
    for (range, body, content_range) in [
        ("bytes=2-4", "234", "bytes 2-4/10"),
        ("bytes=7-", "789", "bytes 7-9/10"),
        ("bytes=-3", "789", "bytes 7-9/10"),
        ("bytes=8-100", "89", "bytes 8-9/10"),
        ("bytes=-100", "0123456789", "bytes 0-9/10"),
    ] {
        let resp = curl(&["-H", &format!("Range: {range}"), &url]);
        assert_eq!(resp.status, 206, "{range}");
        assert_eq!(resp.text(), body, "{range}");
        assert_eq!(resp.header("content-range"), Some(content_range), "{range}");
    }
    for unsatisfiable in ["bytes=10-", "bytes=20-30", "bytes=-0"] {
        let resp = curl(&["-H", &format!("Range: {unsatisfiable}"), &url]);
        assert_eq!(resp.status, 416, "{unsatisfiable}");
        assert_eq!(resp.header("content-range"), Some("bytes */10"));
    }
    // Several ranges, other units and nonsense are ignored: the whole file.
    for ignored in ["bytes=0-1,3-4", "items=0-1", "bytes=5-2", "bytes=x-y"] {
        let resp = curl(&["-H", &format!("Range: {ignored}"), &url]);
        assert_eq!(resp.status, 200, "{ignored}");
        assert_eq!(resp.text(), "0123456789");
    }
}

#[tokio::test]
async fn file_route_never_leaves_the_root() {
    let root = Root::new("confined");
    let example = Example::start(&["--port", "0", "--root", &root.path()]);
    for path in [
        "/file/../secret.txt",
        "/file/sub/../../secret.txt",
        "/file/%2e%2e/secret.txt",
        "/file/%2E%2E%2Fsecret.txt",
        "/file/sub%2f..%2f..%2fsecret.txt",
        "/file//etc/passwd",
        "/file/%2fetc%2fpasswd",
        "/file/outside-link.txt",
        "/file/relative-out.txt",
        "/file/pipe.txt",
        "/file/loop-a",
        "/file/sub",
        "/file/",
        "/file/missing.txt",
        "/file/a.txt%00.css",
    ] {
        // Raw bytes: curl would normalise the dots away.
        let mut client = Client::connect_port(example.port).await;
        client.send(get(path)).await;
        let resp = client.response().await;
        assert_eq!(
            resp.status,
            404,
            "{path}: {:?}",
            String::from_utf8_lossy(&resp.body)
        );
    }
}

/// The process's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[tokio::test]
async fn sending_a_1_gib_file_keeps_memory_flat() {
    let root = Root::new("rss");
    let big = root.0.join("root").join("big.bin");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let example = Example::start(&["--port", "0", "--root", &root.path()]);
    let pid = example.child.id();
    // Warm up: one small file, so the baseline includes a served request.
    let mut client = Client::connect_port(example.port).await;
    client.send(get("/file/a.txt")).await;
    client.response().await;
    let before = rss_kib(pid);
    client.send(get("/file/big.bin")).await;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        client.stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let mut received = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    while received < 1 << 30 {
        let n = client.stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed after {received} bytes");
        received += n as u64;
    }
    let after = rss_kib(pid);
    assert!(
        after.saturating_sub(before) < 8 * 1024,
        "RSS grew from {before} KiB to {after} KiB sending 1 GiB"
    );
}

#[tokio::test]
async fn client_hanging_up_midway_frees_the_file() {
    let root = Root::new("hangup");
    let big = root.0.join("root").join("big.bin");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let example = Example::start(&["--port", "0", "--root", &root.path()]);
    let pid = example.child.id();
    let mut warm = Client::connect_port(example.port).await;
    warm.send(get("/file/a.txt")).await;
    warm.response().await;
    let baseline = open_descriptors(pid);
    for _ in 0..5 {
        let mut leaving = Client::connect_port(example.port).await;
        leaving.send(get("/file/big.bin")).await;
        let mut some = vec![0u8; 256 * 1024];
        leaving.stream.read_exact(&mut some).await.unwrap();
        drop(leaving);
    }
    // Requests go on, on the old connection and new ones.
    warm.send(get("/file/a.txt")).await;
    assert_eq!(warm.response().await.text(), "0123456789");
    // The server notices each hang-up at its next sendfile and closes the
    // file and the socket; wait for that (bounded), then compare.
    let deadline = Instant::now() + SAFETY_TIMEOUT;
    while open_descriptors(pid) > baseline {
        assert!(
            Instant::now() < deadline,
            "descriptors leaked: {} open, {baseline} before",
            open_descriptors(pid)
        );
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// HTTPS
// ---------------------------------------------------------------------------

/// The example over HTTPS with a fresh certificate for `localhost` and
/// `extra` arguments, once it printed `Listening on https://127.0.0.1:PORT`:
/// the example, its port, the CA file to trust, and the folder holding
/// them (removed when dropped).
fn start_https(extra: &[&str]) -> (Example, u16, PathBuf, support::TestDir) {
    let ca = support::TestCa::new("mist example test CA");
    let dir = support::TestDir::new("example-tls");
    let (cert, key) = support::write_leaf(&dir, "server", &ca.leaf("localhost", false));
    let ca_file = dir.write("ca.pem", &ca.pem);
    let tls = [
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    let example = Example::spawn(&[&["--port", "0"][..], &tls, extra].concat());
    let line = example
        .stdout
        .recv_timeout(SAFETY_TIMEOUT)
        .expect("a Listening line");
    let port: u16 = line
        .strip_prefix("Listening on https://127.0.0.1:")
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("not `Listening on https://127.0.0.1:PORT`: {line:?}"));
    assert_ne!(port, 0);
    (example, port, ca_file, dir)
}

#[test]
fn tls_cert_and_key_serve_https_and_print_an_https_listening_line() {
    let (mut example, port, ca_file, _dir) = start_https(&[]);

    let url = format!("https://127.0.0.1:{port}/hello");
    let hello = curl(&["--cacert", ca_file.to_str().unwrap(), &url]);
    assert_eq!(hello.status, 200);
    assert_eq!(hello.header("content-length"), Some("13"));
    assert_eq!(hello.text(), "Hello, world!");
    let ca = ca_file.to_str().unwrap();
    let base = format!("https://127.0.0.1:{port}");
    let echo = curl(&[
        "--cacert",
        ca,
        "--data-binary",
        "over tls",
        &format!("{base}/echo"),
    ]);
    assert_eq!(echo.text(), "over tls");
    let file = curl(&["--cacert", ca, &format!("{base}/file/hello.txt")]);
    assert_eq!(file.status, 200);
    assert!(!file.body.is_empty());
    let events = curl(&["--cacert", ca, &format!("{base}/sse?count=2&interval_ms=1")]);
    assert_eq!(events.header("content-type"), Some("text/event-stream"));
    assert!(events.text().contains("data: 2"), "{:?}", events.text());
    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let (code, _) = curl_status(&[&format!("http://127.0.0.1:{port}/hello")]);
    assert_eq!(code, "000");

    example.signal("TERM");
    let exit = example.wait_exit();
    assert!(exit.status.success(), "exit: {}", exit.status);
}

#[test]
fn tls_cert_without_key_is_refused() {
    let mut example = Example::spawn(&["--port", "0", "--tls-cert", "cert.pem"]);
    let exit = example.wait_exit();
    assert!(!exit.status.success(), "exit: {}", exit.status);
    assert!(exit.stdout.is_empty(), "stdout: {:?}", exit.stdout);
    assert!(
        exit.stderr.contains("--tls-key"),
        "stderr: {:?}",
        exit.stderr
    );
}

// ---------------------------------------------------------------------------
// HTTP/2 (--http2)
// ---------------------------------------------------------------------------

/// Runs curl with `args`, the body saved aside: the HTTP version curl
/// used (`1.1`, `2`), the status and the body.
fn curl_version(args: &[&str]) -> (String, u16, Vec<u8>) {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let body = TempFile::new(&format!("curl-body-{n}"), b"");
    let path = body.0.to_str().unwrap();
    let out = run_curl(&[&["-o", path, "-w", "%{http_version} %{http_code}"], args].concat());
    assert!(
        out.status.success(),
        "curl {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let written = String::from_utf8_lossy(&out.stdout).into_owned();
    let (version, status) = written.split_once(' ').expect("version and status");
    let body = std::fs::read(&body.0).expect("curl's output file");
    (version.to_string(), status.parse().expect("a status"), body)
}

#[test]
fn http2_flag_serves_prior_knowledge_and_keeps_http1() {
    let mut example = Example::start(&["--port", "0", "--http2"]);
    let h2 = "--http2-prior-knowledge";
    let (version, status, body) = curl_version(&[h2, &example.url("/hello")]);
    assert_eq!(
        (version.as_str(), status, &body[..]),
        ("2", 200, &b"Hello, world!"[..])
    );
    let upload = TempFile::new("h2-upload", &binary_body(300_000));
    let (version, status, body) =
        curl_version(&[h2, "--data-binary", &upload.at(), &example.url("/echo")]);
    assert_eq!((version.as_str(), status), ("2", 200));
    assert!(body == binary_body(300_000), "the echo differs");
    let (_, status, body) =
        curl_version(&[h2, "--data-binary", &upload.at(), &example.url("/stream")]);
    assert_eq!(status, 200);
    assert!(body == binary_body(300_000), "the streamed echo differs");
    let (_, status, body) = curl_version(&[h2, &example.url("/sse?count=2&interval_ms=1")]);
    assert_eq!(status, 200);
    let events = String::from_utf8(body).unwrap();
    assert!(events.contains("id: 2\ndata: 2\n\n"), "{events:?}");
    let (_, status, body) = curl_version(&[h2, &example.url("/chunked")]);
    assert_eq!((status, &body[..]), (200, &b"onetwothree"[..]));
    let (_, status, body) = curl_version(&[h2, &example.url("/file/hello.txt")]);
    assert_eq!(status, 200);
    assert_eq!(body, std::fs::read("examples/static/hello.txt").unwrap());
    let (_, status, _) = curl_version(&[h2, &example.url("/panic")]);
    assert_eq!(status, 500);
    // HTTP/1.1 clients are served as before.
    let (version, status, _) = curl_version(&["--http1.1", &example.url("/hello")]);
    assert_eq!((version.as_str(), status), ("1.1", 200));
    example.signal("TERM");
    let exit = example.wait_exit();
    assert!(exit.status.success(), "exit: {}", exit.status);
}

#[test]
fn http2_flag_over_tls_is_chosen_by_alpn() {
    let (mut example, port, ca_file, _dir) = start_https(&["--http2"]);
    let base = format!("https://127.0.0.1:{port}");
    let ca = ca_file.to_str().unwrap();
    let (version, status, body) = curl_version(&["--cacert", ca, &format!("{base}/hello")]);
    assert_eq!(
        (version.as_str(), status, &body[..]),
        ("2", 200, &b"Hello, world!"[..])
    );
    let (version, status, body) =
        curl_version(&["--cacert", ca, &format!("{base}/file/hello.txt")]);
    assert_eq!((version.as_str(), status), ("2", 200));
    assert_eq!(body, std::fs::read("examples/static/hello.txt").unwrap());
    let (version, status, _) =
        curl_version(&["--cacert", ca, "--http1.1", &format!("{base}/hello")]);
    assert_eq!((version.as_str(), status), ("1.1", 200));
    example.signal("TERM");
    let exit = example.wait_exit();
    assert!(exit.status.success(), "exit: {}", exit.status);
}

// ---------------------------------------------------------------------------
// /ws and /ws/chat
// ---------------------------------------------------------------------------

#[tokio::test]
async fn ws_route_echoes_text_and_binary() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let example = Example::start(&["--port", "0"]);
    let url = format!("ws://127.0.0.1:{}/ws", example.port);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::text("echo me")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("echo me"));
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );
}

#[tokio::test]
async fn ws_chat_sends_every_message_to_every_member() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let example = Example::start(&["--port", "0"]);
    let url = format!("ws://127.0.0.1:{}/ws/chat", example.port);
    let (mut alice, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let (mut bob, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    // Both have joined once each sees its own message: send and wait.
    alice.send(Message::text("alice joined")).await.unwrap();
    assert_eq!(
        alice.next().await.unwrap().unwrap(),
        Message::text("alice joined")
    );
    bob.send(Message::text("hi from bob")).await.unwrap();
    // Bob joined before sending, so alice's message may or may not have
    // reached him; his own does reach both.
    let mut bob_seen = Vec::new();
    while bob_seen.last() != Some(&Message::text("hi from bob")) {
        bob_seen.push(bob.next().await.unwrap().unwrap());
    }
    assert_eq!(
        alice.next().await.unwrap().unwrap(),
        Message::text("hi from bob")
    );
    alice.send(Message::text("bye")).await.unwrap();
    assert_eq!(alice.next().await.unwrap().unwrap(), Message::text("bye"));
    assert_eq!(bob.next().await.unwrap().unwrap(), Message::text("bye"));
}

#[test]
fn sse_route_sends_count_ticks_then_ends() {
    let example = Example::start(&["--port", "0"]);
    let resp = curl(&["-N", &example.url("/sse?count=3&interval_ms=10")]);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    assert_eq!(
        resp.text(),
        "event: tick\nid: 1\nretry: 1000\ndata: 1\n\nevent: tick\nid: 2\ndata: 2\n\nevent: tick\nid: 3\ndata: 3\n\n"
    );
}

#[test]
fn root_serves_the_showcase_page() {
    let example = Example::start(&["--port", "0"]);
    let resp = curl(&[&example.url("/")]);
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(resp.text().contains("new WebSocket("));
    assert!(resp.text().contains("new EventSource("));
}

/// The accept loop survives running out of descriptors (EMFILE): it backs
/// off instead of dying or spinning, and accepts again once some are free.
#[tokio::test]
async fn accept_loop_survives_running_out_of_descriptors() {
    let example = Example::start(&["--port", "0"]);
    let pid = example.child.id();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    // Room for a few connections only.
    let limit = open + 4;
    let status = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .expect("run prlimit");
    assert!(status.success());
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(
            TcpStream::connect(("127.0.0.1", example.port))
                .await
                .unwrap(),
        );
    }
    // Some were accepted, the rest wait in the backlog while accept fails.
    let mut first = Client::from_stream(held.remove(0));
    first.send(get("/hello")).await;
    assert_eq!(first.response().await.text(), "Hello, world!");
    drop(first);
    drop(held);
    // Descriptors come back: new connections are served again.
    let mut client = Client::connect_port(example.port).await;
    client.send(get("/hello")).await;
    assert_eq!(client.response().await.text(), "Hello, world!");
    assert!(example_is_running(pid));
}

fn example_is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.contains(") Z "))
        .unwrap_or(false)
}
