//! Shared bits of the peer servers and load clients: the command line, the
//! Listening line, and the measured window of a load client.

use std::path::PathBuf;

/// `--port N` (default 0), `--root DIR` (default `examples/static`),
/// for the TLS peer `--tls-cert PEM --tls-key PEM`, and for hyper
/// `--http2` (HTTP/2 with prior knowledge beside HTTP/1.1).
pub struct Args {
    pub port: u16,
    pub root: PathBuf,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub http2: bool,
}

pub fn args() -> Args {
    args_from(std::env::args().skip(1))
}

/// [`args`] from a given list (the program's name left out).
pub fn args_from(list: impl Iterator<Item = String>) -> Args {
    let mut args = Args {
        port: 0,
        root: PathBuf::from("examples/static"),
        tls_cert: None,
        tls_key: None,
        http2: false,
    };
    let mut it = list;
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--port" => args.port = it.next().and_then(|p| p.parse().ok()).expect("--port N"),
            "--root" => args.root = PathBuf::from(it.next().expect("--root DIR")),
            "--tls-cert" => args.tls_cert = Some(PathBuf::from(it.next().expect("--tls-cert PEM"))),
            "--tls-key" => args.tls_key = Some(PathBuf::from(it.next().expect("--tls-key PEM"))),
            "--http2" => args.http2 = true,
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

/// The SSE fan-out scenario's rate: events a second, from one ticker.
pub const TICKS_PER_SECOND: u64 = 100;

/// Ticks a slow subscriber may fall behind before it skips some.
const FANOUT_BACKLOG: usize = 128;

/// One tick of the fan-out: its number (the event id) and its data, 64
/// bytes shared by every subscriber.
pub type Tick = (u64, std::sync::Arc<str>);

/// The broadcast every `/fanout` stream subscribes to: one ticker task,
/// started on first use in the caller's tokio runtime, sends a [`Tick`]
/// [`TICKS_PER_SECOND`] times a second (ticks it falls behind on are
/// skipped, not bunched, so an overloaded server delivers fewer events
/// rather than bursts). mist-sse-fanout and peer-axum share it, so both
/// serve the same events at the same rate.
pub fn fanout() -> &'static tokio::sync::broadcast::Sender<Tick> {
    use std::sync::OnceLock;
    use std::time::Duration;
    use tokio::time::MissedTickBehavior;
    static SENDER: OnceLock<tokio::sync::broadcast::Sender<Tick>> = OnceLock::new();
    SENDER.get_or_init(|| {
        let (sender, _) = tokio::sync::broadcast::channel(FANOUT_BACKLOG);
        let ticker = sender.clone();
        tokio::spawn(async move {
            let mut every =
                tokio::time::interval(Duration::from_micros(1_000_000 / TICKS_PER_SECOND));
            every.set_missed_tick_behavior(MissedTickBehavior::Skip);
            for n in 1u64.. {
                every.tick().await;
                // No subscriber yet (or any more) is not an error here.
                let _ = ticker.send((n, format!("{n:064}").into()));
            }
        });
        sender
    })
}

/// CPU time this thread has used, in nanoseconds (Linux's schedstat).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// What a load client counted over its measured window.
pub struct Window {
    /// Counted per second.
    pub rate: f64,
    /// This thread's CPU use (1.0: one CPU busy): the whole client, as
    /// the load clients run a current-thread runtime.
    pub cpu: f64,
}

/// A load client's measured window: prints `start` (when bench/run samples
/// the server's CPU time), waits `seconds`, prints `stop`; `counter`'s rate
/// and this thread's CPU use in between.
pub async fn measure(counter: &std::sync::atomic::AtomicU64, seconds: f64) -> Window {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    let (count0, cpu0, t0) = (
        counter.load(Ordering::Relaxed),
        thread_cpu_ns(),
        std::time::Instant::now(),
    );
    println!("start");
    std::io::stdout().flush().unwrap();
    tokio::time::sleep(std::time::Duration::from_secs_f64(seconds)).await;
    let (count1, cpu1, elapsed) = (
        counter.load(Ordering::Relaxed),
        thread_cpu_ns(),
        t0.elapsed().as_secs_f64(),
    );
    println!("stop");
    Window {
        rate: (count1 - count0) as f64 / elapsed,
        cpu: (cpu1 - cpu0) as f64 / 1e9 / elapsed,
    }
}
