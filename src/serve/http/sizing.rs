//! How many connections and streams the server takes, and how each
//! accepted connection is set up.

use std::time::Duration;

/// How long a client may take to send its request head.
pub(crate) const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle keep-alive connection stays open: short, so that idle
/// connections give their slot back before they can crowd out new clients.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// The most connections per worker, whatever the file limit allows
/// (actix-web's own default).
pub(crate) const MAX_CONNECTIONS_PER_WORKER: usize = 25_000;
/// File descriptors kept out of the connection cap for the mirror's own use:
/// each section's database connection (and its `-wal`/`-shm`), the WAL guard's
/// descriptors, `/proc` reads, the listeners, logs and the runtime. A flood
/// of clients can then never make a database open or a `/proc` read fail.
pub(crate) const FD_RESERVE: usize = 128;

/// Concurrent connections per worker: what the soft limit on open files
/// leaves after [`FD_RESERVE`], shared among `workers`, at most
/// [`MAX_CONNECTIONS_PER_WORKER`]. Past it, new connections wait in the
/// listen backlog instead of failing with EMFILE.
pub fn connections_per_worker(open_files_limit: u64, workers: usize) -> usize {
    let usable = usize::try_from(open_files_limit).unwrap_or(usize::MAX).saturating_sub(FD_RESERVE);
    (usable / workers.max(1)).clamp(1, MAX_CONNECTIONS_PER_WORKER)
}

/// The process's soft limit on open files (1,024 when it cannot be read).
pub(super) fn open_files_limit() -> u64 {
    rlimit::Resource::NOFILE.get().map_or(1024, |(soft, _)| soft)
}

/// The standalone server's workers: one per core.
pub(super) fn workers() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// The whole server's connection cap: [`connections_per_worker`] for every worker.
pub(super) fn connection_cap() -> usize {
    let workers = workers();
    connections_per_worker(open_files_limit(), workers).saturating_mul(workers)
}
/// How long data the server has sent may stay unacknowledged, including a
/// client that keeps its receive window shut (stops reading), before the
/// kernel drops the connection (`TCP_USER_TIMEOUT`): the write timeout.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Sets up each accepted connection: no Nagle delay (a response written in
/// pieces, a compressed body or a stream's events, would otherwise wait up
/// to 40 ms for the client's delayed ACK before its last piece goes out),
/// and the write timeout (Linux; elsewhere the connection only ends when the
/// client goes).
pub(super) fn on_connect(conn: &dyn std::any::Any, _: &mut actix_web::dev::Extensions) {
    type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
    // Plain TCP, or the TCP under TLS (a Unix socket has neither setting).
    let tcp = conn
        .downcast_ref::<actix_web::rt::net::TcpStream>()
        .or_else(|| conn.downcast_ref::<Tls>().map(|t| t.get_ref().0));
    let Some(tcp) = tcp else {
        return;
    };
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = socket2::SockRef::from(tcp).set_tcp_user_timeout(Some(WRITE_TIMEOUT)) {
        tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT on a connection");
    }
}

/// The share of the connection cap kept from streams for the other routes
/// (`/metrics`, `/health`, the probes), and its least size: streams that took
/// every connection would starve a liveness probe into restarting a healthy mirror.
pub(crate) const STREAM_RESERVE: (usize, usize) = (4, 16);

/// How many streams `connections` (the whole server's cap) leaves room for:
/// all but a quarter of them, and never the last [`STREAM_RESERVE`]`.1`.
pub fn streams_within(connections: usize) -> usize {
    let reserve = (connections / STREAM_RESERVE.0).max(STREAM_RESERVE.1).min(connections);
    connections - reserve
}

/// How long a graceful shutdown waits for in-flight requests.
pub(crate) const SHUTDOWN_TIMEOUT_S: u64 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_leave_a_quarter_of_the_connections_and_at_least_sixteen() {
        assert_eq!(super::streams_within(172), 129);
        assert_eq!(super::streams_within(40), 24);
        assert_eq!(super::streams_within(10), 0);
        assert_eq!(super::streams_within(50_000), 37_500);
    }

    #[test]
    fn the_connection_cap_leaves_the_reserve_free() {
        assert_eq!(connections_per_worker(1024, 2), (1024 - FD_RESERVE) / 2);
        assert!(connections_per_worker(1024, 2) * 2 + FD_RESERVE <= 1024);
        assert_eq!(connections_per_worker(u64::MAX, 2), MAX_CONNECTIONS_PER_WORKER);
        assert_eq!(connections_per_worker(10, 4), 1, "never zero");
    }
}
