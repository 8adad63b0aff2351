//! actix-web 4 with actix-files: the routes of the mist example.

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use std::path::PathBuf;

async fn hello() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain")
        .body("Hello, world!")
}

async fn echo(body: web::Bytes) -> HttpResponse {
    HttpResponse::Ok().body(body)
}

async fn file(
    req: HttpRequest,
    root: web::Data<PathBuf>,
) -> actix_web::Result<actix_files::NamedFile> {
    let rel: PathBuf = req.match_info().query("path").parse().unwrap();
    Ok(actix_files::NamedFile::open(root.join(rel))?)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = mist_bench::args();
    let root = web::Data::new(args.root);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(root.clone())
            .app_data(web::PayloadConfig::new(mist_bench::ECHO_LIMIT))
            .route("/hello", web::get().to(hello))
            .route("/echo", web::post().to(echo))
            .route("/file/{path:.*}", web::get().to(file))
    })
    .backlog(1024)
    .max_connections(100_000)
    .bind(("127.0.0.1", args.port))?;
    mist_bench::listening(server.addrs()[0].port());
    server.run().await
}
