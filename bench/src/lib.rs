//! Shared bits of the peer servers: the command line and the Listening line.

use std::path::PathBuf;

/// `--port N` (default 0), `--root DIR` (default `examples/static`) and,
/// for the TLS peer, `--tls-cert PEM --tls-key PEM`.
pub struct Args {
    pub port: u16,
    pub root: PathBuf,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

pub fn args() -> Args {
    let mut args = Args {
        port: 0,
        root: PathBuf::from("examples/static"),
        tls_cert: None,
        tls_key: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--port" => args.port = it.next().and_then(|p| p.parse().ok()).expect("--port N"),
            "--root" => args.root = PathBuf::from(it.next().expect("--root DIR")),
            "--tls-cert" => args.tls_cert = Some(PathBuf::from(it.next().expect("--tls-cert PEM"))),
            "--tls-key" => args.tls_key = Some(PathBuf::from(it.next().expect("--tls-key PEM"))),
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// Prints the line the harness waits for, as the mist example does.
pub fn listening(port: u16) {
    println!("Listening on http://127.0.0.1:{port}");
}

/// The `/echo` limit of the mist example.
pub const ECHO_LIMIT: usize = 4_000_000;
