//! actix-web 4 with actix-ws: `GET /ws` echoes every text and binary
//! message, as the mist example's `/ws`, written as actix-ws documents it
//! (a task per connection, the session's sends through its channel).

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_ws::Message;

async fn ws(req: HttpRequest, body: web::Payload) -> actix_web::Result<HttpResponse> {
    let (response, mut session, mut messages) = actix_ws::handle(&req, body)?;
    actix_web::rt::spawn(async move {
        while let Some(Ok(message)) = messages.recv().await {
            let sent = match message {
                Message::Text(text) => session.text(text).await,
                Message::Binary(data) => session.binary(data).await,
                Message::Ping(data) => session.pong(&data).await,
                Message::Close(reason) => {
                    let _ = session.close(reason).await;
                    return;
                }
                _ => Ok(()),
            };
            if sent.is_err() {
                return;
            }
        }
    });
    Ok(response)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = mist_bench::args();
    let server = HttpServer::new(|| App::new().route("/ws", web::get().to(ws)))
        .backlog(1024)
        .max_connections(100_000)
        .bind(("127.0.0.1", args.port))?;
    mist_bench::listening(server.addrs()[0].port());
    server.run().await
}
