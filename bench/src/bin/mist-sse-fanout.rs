//! mist serving the SSE fan-out scenario: `GET /fanout` streams every tick
//! of one broadcast ([`mist_bench::fanout`], 100 a second) to every client.
//! The example has no broadcast route, so this is a bench-only server.
//!
//! Each stream's loop takes its messages from its own subscription to the
//! broadcast (`mist::Messages` from a `broadcast::Receiver`), as a mist
//! user would write it and as the axum peer does with its stream.
//!
//! For comparison by hand (bench/run uses neither):
//! - `--forward-each`: a task per stream forwards the broadcast into the
//!   stream's `mpsc` channel, which is what mist users had to write while
//!   the loops took only an `mpsc::Receiver`;
//! - `--one-forwarder`: one task takes every tick from the broadcast and
//!   `try_send`s it to every stream's channel.

use http::{Request, Response, StatusCode};
use mist::{Connection, Messages, Next, ResponseData};
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

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Subscribe,
    ForwardEach,
    OneForwarder,
}

fn fanout(req: Request<Connection>, mode: Mode) -> Response<ResponseData> {
    mist::server_sent_events(
        req,
        Response::new(()),
        move || {
            let messages: Messages<Tick> = match mode {
                Mode::Subscribe => mist_bench::fanout().subscribe().into(),
                _ => {
                    let (tx, rx) = mpsc::channel(STREAM_BACKLOG);
                    if mode == Mode::OneForwarder {
                        register(tx);
                    } else {
                        forward(tx);
                    }
                    rx.into()
                }
            };
            Ok::<_, Infallible>(((), messages))
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
    let mode = if argv.iter().any(|a| a == "--one-forwarder") {
        Mode::OneForwarder
    } else if argv.iter().any(|a| a == "--forward-each") {
        Mode::ForwardEach
    } else {
        Mode::Subscribe
    };
    argv.retain(|a| a != "--one-forwarder" && a != "--forward-each");
    let args = mist_bench::args_from(argv.into_iter().skip(1));
    let server = mist::new(move |req: Request<Connection>| async move {
        if req.uri().path() == "/fanout" {
            fanout(req, mode)
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
