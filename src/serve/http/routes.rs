//! [`Routes`]: the mirror's routes, to mount on any actix `App` or `Scope`.

use std::sync::Arc;

use actix_web::web;

use super::{handlers::*, page::*, respond::*, sizing::*};
use crate::config::Settings;
use crate::runtime::handle::MirrorHandle;
use crate::serve::health::Health;
use crate::serve::stream::Streams;

/// The mirror's routes, with the serving settings (`ORCH_UI_ENABLED`,
/// `ORCH_MAX_STREAMS`, `ORCH_STREAM_HEARTBEAT_MS`) and the state every
/// worker shares (the streams): `/metrics`, `/metrics/stream`,
/// `/metrics/prometheus`, `/health`, `/readyz`, `/livez`, and the live page
/// at `/` (with its shared worker at `/?worker=stream`) unless
/// `ORCH_UI_ENABLED` is false. Make it once, outside the
/// server's per-worker factory, and register it on each worker's `App` (or
/// `Scope`) with [`Routes::config`].
///
/// ```no_run
/// # fn demo(handle: orchmirror::MirrorHandle, settings: &orchmirror::Settings) {
/// let routes = orchmirror::Routes::new(handle, settings);
/// let server = actix_web::HttpServer::new(move || actix_web::App::new().configure(routes.config()));
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Routes {
    handle: MirrorHandle,
    ui_enabled: bool,
    pub(super) streams: Arc<Streams>,
}

impl Routes {
    /// The routes of `handle`'s mirror, with `settings`' serving settings.
    pub fn new(handle: MirrorHandle, settings: &Settings) -> Self {
        let max = settings.max_streams.unwrap_or_else(|| streams_within(connection_cap()));
        let streams = Streams::new(&handle, max, settings.stream_heartbeat);
        Routes { handle, ui_enabled: settings.ui_enabled, streams }
    }

    /// Registers the routes on an `App` or a `Scope`.
    pub fn config(&self) -> impl FnOnce(&mut web::ServiceConfig) + use<> {
        self.some(Which::All)
    }

    /// Registers `which` routes (the standalone server registers the stream
    /// outside compression: its events must not be buffered, and compression
    /// would only add a layer to every event).
    pub(super) fn some(&self, which: Which) -> impl FnOnce(&mut web::ServiceConfig) + use<> {
        let routes = self.clone();
        move |cfg| {
            cfg.app_data(web::Data::new(routes.handle.clone())).app_data(web::Data::new(Arc::clone(&routes.streams)));
            if which != Which::AllButStream {
                cfg.service(get_and_head("/metrics/stream", crate::serve::stream::stream));
            }
            if which == Which::Stream {
                return;
            }
            if routes.ui_enabled {
                cfg.service(get_and_head("/", page));
            }
            cfg.service(get_and_head("/metrics", metrics))
                .service(get_and_head("/health", health))
                .service(get_and_head("/readyz", readyz))
                .service(get_and_head("/livez", livez))
                .service(get_and_head("/metrics/prometheus", prometheus));
        }
    }

    /// `/health`'s answer; `None` when the mirror is disabled.
    pub async fn health(&self) -> Option<Health> {
        Health::read(&self.handle, self.streams.totals()).await
    }

    /// The mirror these routes serve.
    pub fn handle(&self) -> &MirrorHandle {
        &self.handle
    }
}

/// Which of the routes [`Routes::some`] registers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Which {
    All,
    Stream,
    AllButStream,
}
