//! axum 0.8 (hyper 1 underneath): `GET /ws`, the example's WebSocket echo
//! with axum's `ws` support (tokio-tungstenite), and `GET /fanout`, the SSE
//! fan-out of [`mist_bench::fanout`] with `axum::response::sse`.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::sse::{Event, Sse};
use axum::response::Response;
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use futures_util::Stream;
use std::convert::Infallible;
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;

async fn ws(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(echo)
}

/// Every text and binary message back unchanged (pings are answered by
/// tungstenite itself).
async fn echo(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        let echo = match message {
            Message::Text(_) | Message::Binary(_) => true,
            Message::Close(_) => return,
            _ => false,
        };
        if echo && socket.send(message).await.is_err() {
            return;
        }
    }
}

async fn fanout() -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let ticks = mist_bench::fanout().subscribe();
    Sse::new(futures_util::stream::unfold(
        ticks,
        |mut ticks| async move {
            loop {
                match ticks.recv().await {
                    Ok((id, data)) => {
                        let event = Event::default().id(id.to_string()).data(&*data);
                        return Some((Ok(event), ticks));
                    }
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                }
            }
        },
    ))
}

#[tokio::main]
async fn main() {
    let args = mist_bench::args();
    let listener = TcpListener::bind(("127.0.0.1", args.port)).await.unwrap();
    mist_bench::listening(listener.local_addr().unwrap().port());
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    let app = Router::new()
        .route("/ws", get(ws))
        .route("/fanout", get(fanout));
    axum::serve(listener, app).await.unwrap();
}
