//! The standalone mirror from settings to a clean stop: what the binary
//! runs, as one library call (mini-redis style: the caller owns the signal).

use std::future::Future;

use crate::config::Settings;
use crate::runtime::builder::StartError;
use crate::runtime::handle::MirrorHandle;

/// Why [`run`] could not serve, or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The listen address could not be bound (a port in use, a socket path
    /// taken): nothing was started.
    #[error("cannot listen on {bind}: {source}")]
    Listen {
        /// `ORCH_BIND` as given.
        bind: String,
        /// What binding said.
        source: std::io::Error,
    },
    /// The mirror could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The server could not be assembled on the bound listeners (the web
    /// configuration, TLS).
    #[error("cannot serve on {bind}: {source}")]
    Serve {
        /// `ORCH_BIND` as given.
        bind: String,
        /// What the server said.
        source: std::io::Error,
    },
    /// The server stopped with an error.
    #[error("server error: {0}")]
    Server(std::io::Error),
}

/// Binds `settings.bind` (first: a port in use stops everything before
/// anything starts), starts the mirror, serves it with the standalone
/// server until `shutdown` completes, then stops the mirror and removes a
/// Unix socket file it made. The process's signals are the caller's: the
/// binary passes a future that completes on SIGTERM, SIGINT or SIGHUP.
pub async fn run(settings: &Settings, shutdown: impl Future<Output = ()> + 'static) -> Result<(), RunError> {
    let bind = || settings.bind.clone();
    let listeners = crate::serve::http::listen(settings).map_err(|source| RunError::Listen { bind: bind(), source })?;
    let handle = MirrorHandle::start(settings)?;
    let server = match crate::serve::http::serve_on(listeners, handle.clone(), settings, shutdown) {
        Ok((server, _)) => server,
        Err(source) => {
            handle.stop();
            return Err(RunError::Serve { bind: bind(), source });
        }
    };
    let result = server.await;
    handle.stop();
    if let Some(path) = crate::config::unix_socket_path(&settings.bind)
        && let Err(e) = std::fs::remove_file(path)
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove the Unix socket");
    }
    result.map_err(RunError::Server)
}
