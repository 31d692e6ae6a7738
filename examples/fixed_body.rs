//! The throughput ceiling for `/metrics`: a minimal actix-web server that
//! answers `GET /metrics` with a fixed body read from a file.
//! `cargo run --release --example fixed_body -- BODY_FILE ADDR` (used by scripts/throughput.sh)

use actix_web::{App, HttpResponse, HttpServer, web};

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(file), Some(addr)) = (args.next(), args.next()) else {
        eprintln!("usage: fixed_body BODY_FILE ADDR");
        std::process::exit(2);
    };
    let body = web::Bytes::from(std::fs::read(&file)?);
    HttpServer::new(move || {
        let body = body.clone();
        App::new().route(
            "/metrics",
            web::get().to(move || {
                let body = body.clone();
                async move { HttpResponse::Ok().content_type("application/json").body(body) }
            }),
        )
    })
    .bind(addr)?
    .run()
    .await
}
