//! `send_file` through real sockets: integrity, offsets and limits, errors,
//! large files, clients that leave, and files that shrink.

mod support;

use http::{Request, Response};
use mist::{Connection, FileError};
use std::hash::{Hash, Hasher};
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;
use support::{get, roundtrip, serve, text, Client};
use tokio::io::AsyncReadExt;

/// A file in a test's own temporary folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("mist-file-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 253) as u8).collect()
}

fn hash(bytes: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Serves `path` with the offset and limit given as `?offset=A&limit=B`.
async fn file_server(path: PathBuf) -> mist::Server {
    let path = Arc::new(path);
    serve(move |req: Request<Connection>| {
        let path = Arc::clone(&path);
        async move {
            let query = req.uri().query().unwrap_or("");
            let value = |name: &str| {
                query
                    .split('&')
                    .filter_map(|p| p.split_once('='))
                    .find(|(k, _)| *k == name)
                    .and_then(|(_, v)| v.parse::<u64>().ok())
            };
            match mist::send_file(&*path, value("offset").unwrap_or(0), value("limit")) {
                Ok(body) => Response::new(body),
                Err(err) => text(404, format!("{err:?}")),
            }
        }
    })
    .await
}

#[tokio::test]
async fn small_file_arrives_intact() {
    let dir = TempDir::new("small");
    let path = dir.file("small.bin", b"abc");
    let server = file_server(path).await;
    let resp = roundtrip(&server, get("/")).await;
    assert_eq!(resp.header("content-length"), Some("3"));
    assert_eq!(resp.body, b"abc");
}

#[tokio::test]
async fn large_file_arrives_intact_by_hash() {
    let dir = TempDir::new("large");
    let contents = pattern(70 * 1024 * 1024 + 13);
    let path = dir.file("large.bin", &contents);
    let server = file_server(path).await;
    let mut client = Client::connect(&server).await;
    for _ in 0..2 {
        client.send(get("/")).await;
        let resp = client.response().await;
        assert_eq!(resp.body.len(), contents.len());
        assert_eq!(hash(&resp.body), hash(&contents));
    }
}

#[tokio::test]
async fn offset_and_limit_select_the_bytes_sent() {
    let dir = TempDir::new("ranges");
    let contents = pattern(100_000);
    let path = dir.file("r.bin", &contents);
    let server = file_server(path).await;
    let mut client = Client::connect(&server).await;
    let len = contents.len();
    let cases: [(&str, &[u8]); 7] = [
        ("", &contents),
        ("?offset=10&limit=5", &contents[10..15]),
        ("?offset=99990", &contents[99_990..]),
        ("?limit=0", b""),
        ("?offset=100000", b""),
        ("?offset=200000&limit=5", b""),
        ("?offset=99998&limit=1000", &contents[99_998..]),
    ];
    for (query, expected) in cases {
        client.send(get(&format!("/{query}"))).await;
        let resp = client.response().await;
        assert_eq!(
            resp.header("content-length"),
            Some(expected.len().to_string().as_str()),
            "{query}"
        );
        assert!(
            resp.body == expected,
            "{query}: {} bytes of {len}",
            resp.body.len()
        );
    }
}

#[tokio::test]
async fn head_sends_only_the_headers() {
    let dir = TempDir::new("head");
    let path = dir.file("h.bin", &pattern(5000));
    let server = file_server(path).await;
    let mut client = Client::connect(&server).await;
    client.send("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(
        client.head_response().await.header("content-length"),
        Some("5000")
    );
    client.send(get("/?limit=3")).await;
    assert_eq!(client.response().await.body.len(), 3);
}

#[test]
fn send_file_reports_each_error() {
    let dir = TempDir::new("errors");
    assert_eq!(
        mist::send_file(dir.0.join("missing"), 0, None).unwrap_err(),
        FileError::NoEntry
    );
    assert_eq!(
        mist::send_file(&dir.0, 0, None).unwrap_err(),
        FileError::IsDir
    );
    let file = dir.file("f", b"x");
    assert_eq!(
        mist::send_file(file.join("below-a-file"), 0, None).unwrap_err(),
        FileError::NoEntry
    );
    // A symlink loop is neither missing nor forbidden.
    let a = dir.0.join("loop-a");
    let b = dir.0.join("loop-b");
    std::os::unix::fs::symlink(&b, &a).unwrap();
    std::os::unix::fs::symlink(&a, &b).unwrap();
    assert_eq!(
        mist::send_file(&a, 0, None).unwrap_err(),
        FileError::UnknownFileError
    );
    // Permissions bind everyone but root.
    let secret = dir.file("secret", b"s");
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
    if root {
        eprintln!("running as root: file permissions do not apply; NoAccess checked by conversion");
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(FileError::from(denied), FileError::NoAccess);
    } else {
        assert_eq!(
            mist::send_file(&secret, 0, None).unwrap_err(),
            FileError::NoAccess
        );
    }
}

#[tokio::test]
async fn files_beyond_4_gib_are_addressed_correctly() {
    let dir = TempDir::new("huge");
    let path = dir.0.join("sparse.bin");
    let marker_at: u64 = (4 << 30) + (512 << 20); // 4.5 GiB
    {
        let mut f = std::fs::File::create(&path).unwrap();
        f.set_len(5 << 30).unwrap();
        f.seek(SeekFrom::Start(marker_at)).unwrap();
        f.write_all(b"beyond four gigabytes").unwrap();
    }
    let server = file_server(path).await;
    let mut client = Client::connect(&server).await;
    client
        .send(format!(
            "GET /?offset={marker_at}&limit=21 HTTP/1.1\r\nHost: a\r\n\r\n"
        ))
        .await;
    assert_eq!(client.response().await.text(), "beyond four gigabytes");
    client.send("HEAD / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(
        client.head_response().await.header("content-length"),
        Some("5368709120")
    );
    // Across the 4 GiB boundary.
    let start = (4u64 << 30) - 3;
    client
        .send(format!(
            "GET /?offset={start}&limit=6 HTTP/1.1\r\nHost: a\r\n\r\n"
        ))
        .await;
    assert_eq!(client.response().await.body, [0u8; 6]);
}

#[tokio::test]
async fn client_leaving_midway_does_not_disturb_other_requests() {
    let dir = TempDir::new("leave");
    let path = dir.0.join("big.bin");
    std::fs::File::create(&path)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    let server = file_server(path).await;
    for _ in 0..3 {
        let mut leaving = Client::connect(&server).await;
        leaving.send(get("/")).await;
        let mut some = vec![0u8; 1 << 20];
        leaving.stream.read_exact(&mut some).await.unwrap();
        drop(leaving);
    }
    let mut client = Client::connect(&server).await;
    client.send(get("/?limit=10")).await;
    assert_eq!(client.response().await.body, [0u8; 10]);
}

#[tokio::test]
async fn file_that_shrinks_while_sent_closes_the_connection() {
    let dir = TempDir::new("shrink");
    let path = dir.file("shrinking.bin", &pattern(8 << 20));
    let server = {
        let path = path.clone();
        serve(move |_req: Request<Connection>| {
            let path = path.clone();
            async move {
                let body = mist::send_file(&path, 0, None).unwrap();
                // The file loses most of its bytes after the length was taken.
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_len(1 << 20)
                    .unwrap();
                Response::new(body)
            }
        })
        .await
    };
    let mut client = Client::connect(&server).await;
    client.send(get("/")).await;
    let raw = client.read_to_close().await;
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    assert!(head.contains("content-length: 8388608"), "{head}");
    assert_eq!(
        raw.len() - head_end,
        1 << 20,
        "only the bytes that still exist, then close"
    );
}

/// `send_open_file` sends the given part of a file the handler opened; a
/// length past the file's end closes the connection after the bytes that
/// exist instead of leaving the client waiting for the rest.
#[tokio::test]
async fn open_file_sends_the_part_given_and_closes_when_it_is_short() {
    let dir = TempDir::new("open");
    let path = dir.file("open.bin", b"0123456789");
    let server = {
        let path = path.clone();
        serve(move |req: Request<Connection>| {
            let file = std::fs::File::open(&path).unwrap();
            let length = if req.uri().path() == "/short" { 20 } else { 5 };
            async move { Response::new(mist::send_open_file(file, 3, length)) }
        })
        .await
    };
    let resp = roundtrip(&server, get("/")).await;
    assert_eq!(resp.header("content-length"), Some("5"));
    assert_eq!(resp.body, b"34567");

    let mut client = Client::connect(&server).await;
    client.send(get("/short")).await;
    let raw = client.read_to_close().await;
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(String::from_utf8_lossy(&raw[..head_end]).contains("content-length: 20"));
    assert_eq!(&raw[head_end..], b"3456789");
}
