//! The standalone server: the routes, the middleware and the limits on
//! bound listeners, and its graceful stop.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpServer, dev::Server, web};

use super::{listen::*, middleware::*, respond::not_found, routes::*, sizing::*};
use crate::config::Settings;
use crate::runtime::handle::MirrorHandle;

/// Reads and checks a web configuration file (`ORCH_WEB_CONFIG_FILE`), as
/// the server does when it starts: the error says what is wrong with it.
pub fn check_web_config(path: &std::path::Path) -> Result<(), String> {
    crate::serve::web_config::WebConfig::load(path).map(|_| ())
}

/// Binds the standalone server on `settings.bind` with explicit limits (see
/// [`listen`] and [`serve_on`]); it stops when `shutdown` completes.
pub fn server(
    settings: &Settings,
    handle: MirrorHandle,
    shutdown: impl Future<Output = ()> + 'static,
) -> io::Result<(Server, Vec<SocketAddr>)> {
    serve_on(listen(settings)?, handle, settings, shutdown)
}

/// The standalone server on bound listeners, with explicit limits. The
/// returned server (run it by awaiting it) stops gracefully when `shutdown`
/// completes: open streams end, answers in flight finish (within the
/// graceful-stop bound), then every connection closes. The library takes
/// no signal of the process; the binary passes one that completes on
/// SIGTERM, SIGINT or SIGHUP, a host application whatever stops it
/// (`std::future::pending()` for never: the returned [`Server`]'s handle
/// still stops it). The addresses are where it listens (useful with port 0).
pub fn serve_on(
    listeners: Vec<Listener>,
    handle: MirrorHandle,
    settings: &Settings,
    shutdown: impl Future<Output = ()> + 'static,
) -> io::Result<(Server, Vec<SocketAddr>)> {
    let workers = workers();
    let per_worker = connections_per_worker(open_files_limit(), workers);
    let for_streams = streams_within(per_worker.saturating_mul(workers));
    let routes = Routes::new(handle, settings);
    tracing::info!(
        workers,
        connections_per_worker = per_worker,
        max_streams = routes.streams.max().min(for_streams),
        max_streams_from = if settings.max_streams.is_some() { "ORCH_MAX_STREAMS" } else { "the open-files limit" },
        "connection cap and stream cap sized to the open-files limit"
    );
    if routes.streams.max() > for_streams {
        tracing::warn!(
            configured = routes.streams.max(),
            effective = for_streams,
            "ORCH_MAX_STREAMS is above what the connection cap leaves after its reserve for /metrics, /health \
             and the probes; streams are capped lower (raise the open-files limit for more)"
        );
        routes.streams.cap(for_streams);
    }
    let streams = Arc::clone(&routes.streams);
    let in_flight = web::Data::new(InFlight::default());
    let flying = in_flight.clone();
    let hosts = web::Data::new(crate::serve::host::AllowedHosts::new(&settings.allowed_hosts));
    let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidInput, format!("ORCH_WEB_CONFIG_FILE: {e}"));
    let web_auth = match &settings.web_config_file {
        Some(path) => Some(web::Data::new(crate::serve::web_config::WebAuth::start(path).map_err(invalid)?)),
        None => None,
    };
    let tls = match &web_auth {
        Some(auth) => auth.clone().into_inner().server_config().map_err(invalid)?,
        None => None,
    };
    let (protection, authenticates) = match &web_auth {
        Some(auth) => (auth.config().protection(), auth.config().authenticates()),
        None => (Vec::new(), false),
    };
    let mut server = HttpServer::new(move || {
        let app = App::new()
            // Everything every answer needs (outermost).
            .wrap(actix_web::middleware::from_fn(guard))
            .app_data(hosts.clone())
            .app_data(in_flight.clone());
        let app = match &web_auth {
            Some(auth) => app.app_data(auth.clone()),
            None => app,
        };
        app.configure(routes.some(Which::Stream))
            .service(
                web::scope("")
                    // gzip, br or zstd when the client's Accept-Encoding asks for it.
                    .wrap(actix_web::middleware::Compress::default())
                    .configure(routes.some(Which::AllButStream)),
            )
            .default_service(web::to(not_found))
    })
    .workers(workers)
    .on_connect(on_connect)
    .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
    .client_disconnect_timeout(Duration::from_secs(1))
    .keep_alive(KEEP_ALIVE)
    // A client's EOF means it is gone (as hyper, Go and uvicorn take it):
    // without this, a stream whose client left would hold its slot until a
    // heartbeat failed to write (actix-web issue 1313). A client that
    // half-closes before its answer gets none; HTTP clients do not do that.
    .h1_allow_half_closed(false)
    .max_connections(per_worker)
    .shutdown_timeout(SHUTDOWN_TIMEOUT_S)
    // The process's signals are the binary's; `shutdown` stops it (below):
    // open streams must end before a graceful stop can finish.
    .disable_signals();
    let urls: Vec<(String, bool)> = listeners.iter().filter_map(|l| l.url(tls.is_some())).collect();
    for listener in listeners {
        server = match listener {
            Listener::Tcp(l) => match &tls {
                Some(config) => server.listen_rustls_0_23(l, config.clone())?,
                None => server.listen(l)?,
            },
            Listener::Unix(l, _) => server.listen_uds(l)?,
        };
    }
    let addrs = server.addrs();
    announce(&urls, protection, authenticates, settings);
    let server = server.run();
    let stopper = server.handle();
    actix_web::rt::spawn(async move {
        shutdown.await;
        tracing::info!("stopping: ending open streams, finishing requests in flight");
        streams.stop();
        // In-flight answers finish (at most the graceful timeout); then every
        // connection closes, a stream's whose reader stopped reading included.
        let deadline = std::time::Instant::now() + Duration::from_secs(SHUTDOWN_TIMEOUT_S);
        while flying.count() > 0 && std::time::Instant::now() < deadline {
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
        stopper.stop(false).await;
    });
    Ok((server, addrs))
}

/// The start-up line a person reads: where to open the mirror and what
/// protects it; and a warning when it is reachable beyond loopback by
/// clients it does not authenticate.
fn announce(urls: &[(String, bool)], mut protection: Vec<String>, authenticates: bool, settings: &Settings) {
    let beyond = urls.iter().any(|(_, beyond)| *beyond);
    let every =
        settings.bind.trim().starts_with(':') || settings.bind.contains("0.0.0.0") || settings.bind.contains("[::]");
    if settings.allowed_hosts.iter().any(|h| h == "*") {
        protection.push("any Host".to_owned());
    } else {
        protection.push("Host check".to_owned());
    }
    if !authenticates {
        protection.push("no authentication".to_owned());
    }
    let open = urls.iter().map(|(u, _)| u.as_str()).collect::<Vec<_>>().join(" ");
    let note = if every { " (and every other interface)" } else { "" };
    tracing::info!(protection = %protection.join(", "), "serving: open {open}{note}");
    if beyond && !authenticates {
        tracing::warn!(
            bind = %settings.bind,
            "listening beyond loopback with no authentication: anyone who can reach this address reads the \
             orchestrator's state; set basic_auth_users or client certificates in ORCH_WEB_CONFIG_FILE, or put \
             it behind a proxy or a firewall"
        );
    }
}
