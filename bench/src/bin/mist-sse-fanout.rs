//! mist serving the SSE fan-out scenario: `GET /fanout` streams every tick
//! of one broadcast ([`mist_bench::fanout`], 100 a second) to every client.
//! The example has no broadcast route, so this is a bench-only server.
//!
//! mist's `server_sent_events` is driven by an `mpsc::Receiver`, so each
//! stream gets a small task that forwards the broadcast into its channel,
//! as a mist user with a `tokio::sync::broadcast` would write it.
//!
//! `--one-forwarder` (not used by bench/run; for comparison by hand): one
//! task instead takes every tick from the broadcast and `try_send`s it to
//! every stream's channel, as the example's chat room does, which saves a
//! task wake-up per event.

use http::{Request, Response, StatusCode};
use mist::{Connection, Next, ResponseData};
use mist_bench::Tick;
use std::convert::Infallible;
use std::sync::{Mutex, OnceLock};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

/// Ticks waiting for one stream's loop.
const STREAM_BACKLOG: usize = 16;

/// A task per stream: the broadcast into the stream's channel.
fn forward(tx: mpsc::Sender<Tick>) {
    let mut ticks = mist_bench::fanout().subscribe();
    tokio::spawn(async move {
        loop {
            match ticks.recv().await {
                // A closed channel: the stream has ended.
                Ok(tick) => {
                    if tx.send(tick).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            }
        }
    });
}

/// `--one-forwarder`: every stream's channel, fed by one task.
fn register(tx: mpsc::Sender<Tick>) {
    static STREAMS: OnceLock<Mutex<Vec<mpsc::Sender<Tick>>>> = OnceLock::new();
    let streams = STREAMS.get_or_init(|| {
        let mut ticks = mist_bench::fanout().subscribe();
        tokio::spawn(async move {
            loop {
                match ticks.recv().await {
                    Ok(tick) => {
                        let mut streams = STREAMS.get().unwrap().lock().unwrap();
                        // A full channel misses this tick; a closed one is gone.
                        streams.retain(|tx| {
                            !matches!(
                                tx.try_send(tick.clone()),
                                Err(mpsc::error::TrySendError::Closed(_))
                            )
                        });
                    }
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                }
            }
        });
        Mutex::new(Vec::new())
    });
    streams.lock().unwrap().push(tx);
}

fn fanout(req: Request<Connection>, one_forwarder: bool) -> Response<ResponseData> {
    mist::server_sent_events(
        req,
        Response::new(()),
        move || {
            let (tx, rx) = mpsc::channel(STREAM_BACKLOG);
            if one_forwarder {
                register(tx);
            } else {
                forward(tx);
            }
            Ok::<_, Infallible>(((), rx))
        },
        |(id, data), conn, _state| {
            let event = mist::event(&*data).id(id.to_string());
            match mist::send_event(conn, event) {
                Ok(()) => Next::Continue,
                Err(_) => Next::Stop,
            }
        },
    )
}

#[tokio::main]
async fn main() {
    let mut argv: Vec<String> = std::env::args().collect();
    let one_forwarder = argv.iter().any(|a| a == "--one-forwarder");
    argv.retain(|a| a != "--one-forwarder");
    let args = mist_bench::args_from(argv.into_iter().skip(1));
    let server = mist::new(move |req: Request<Connection>| async move {
        if req.uri().path() == "/fanout" {
            fanout(req, one_forwarder)
        } else {
            let mut response = Response::new(ResponseData::empty());
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    })
    .port(args.port)
    .bind("127.0.0.1")
    .start_http() // prints "Listening on http://127.0.0.1:PORT"
    .await
    .expect("start mist");
    server.wait().await;
}
