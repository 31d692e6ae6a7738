//! Binding the listen address: TCP, or a Unix socket with its mode and group.

use std::io;

use crate::config::{Settings, resolve_bind};

/// The listen backlog (actix-web's default): connections past the cap wait here.
pub(crate) const BACKLOG: i32 = 2048;

/// Binds `settings.bind` (every address it resolves to). Done before anything
/// else starts, so that a port in use is a start-up error, not a mirror that
/// started and then could not serve. (The server says where it listens and
/// what protects it once it knows: [`super::server::serve_on`].)
pub fn listen(settings: &Settings) -> io::Result<Vec<Listener>> {
    if let Some(path) = crate::config::unix_socket_path(&settings.bind) {
        return Ok(vec![listen_unix(path, settings)?]);
    }
    let addrs = resolve_bind(&settings.bind)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("ORCH_BIND={:?}: {e}", settings.bind)))?;
    let mut listeners = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        socket.bind(&addr.into()).map_err(|e| io::Error::new(e.kind(), format!("{addr}: {e}")))?;
        socket.listen(BACKLOG)?;
        listeners.push(Listener::Tcp(socket.into()));
    }
    Ok(listeners)
}

/// A bound listener: TCP, or the Unix socket of `ORCH_BIND=unix:/path`.
#[derive(Debug)]
pub enum Listener {
    /// A TCP listener.
    Tcp(std::net::TcpListener),
    /// A Unix socket listener and its path (removed when the server stops).
    Unix(std::os::unix::net::UnixListener, std::path::PathBuf),
}

/// Binds the Unix socket at `path`: a stale socket file (a run that did not
/// exit cleanly) is replaced, a socket a live server answers on is an error,
/// and anything else at the path is left alone (an error). The socket is
/// created owner-only, then given `ORCH_SOCKET_GROUP` and `ORCH_SOCKET_MODE`,
/// so nobody else can connect in between.
pub(super) fn listen_unix(path: &std::path::Path, settings: &Settings) -> io::Result<Listener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{shown}: a running server answers on this socket"),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!(path = %shown, "replacing the stale socket of a run that did not exit cleanly");
                std::fs::remove_file(path)?;
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("{shown}: cannot tell whether the socket is in use: {e}"),
                ));
            }
        },
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{shown} exists and is not a socket; it is left alone"),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io::Error::new(e.kind(), format!("{shown}: {e}"))),
    }
    let listener = owner_only(|| std::os::unix::net::UnixListener::bind(path))
        .map_err(|e| io::Error::new(e.kind(), format!("{shown}: {e}")))?;
    if let Some(group) = &settings.socket_group {
        let gid = group_id(group)?;
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(|e| io::Error::new(e.kind(), format!("{shown}: cannot give it group {group}: {e}")))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(settings.socket_mode))?;
    Ok(Listener::Unix(listener, path.to_path_buf()))
}

/// Runs `f` with the file-creation mask at owner-only (start-up, before the
/// mirror's threads create files), then restores it.
pub(super) fn owner_only<T>(f: impl FnOnce() -> T) -> T {
    #[cfg(target_os = "linux")]
    {
        use nix::sys::stat::{Mode, umask};
        let old = umask(Mode::from_bits_truncate(0o177));
        let out = f();
        umask(old);
        out
    }
    #[cfg(not(target_os = "linux"))]
    f()
}

/// The gid of `group` (a name or a number), or an error naming `ORCH_SOCKET_GROUP`.
pub(super) fn group_id(group: &str) -> io::Result<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let unknown = || io::Error::new(io::ErrorKind::NotFound, format!("ORCH_SOCKET_GROUP={group:?}: no such group"));
    #[cfg(target_os = "linux")]
    {
        nix::unistd::Group::from_name(group).ok().flatten().map(|g| g.gid.as_raw()).ok_or_else(unknown)
    }
    #[cfg(not(target_os = "linux"))]
    Err(unknown())
}

impl Listener {
    /// Where a client reaches it: `http://` or `https://` with the address
    /// (an unspecified address as its loopback, with "every interface"
    /// noted by the caller), or `unix:` and the socket's path.
    pub(super) fn url(&self, tls: bool) -> Option<(String, bool)> {
        match self {
            Listener::Unix(_, path) => Some((format!("unix:{}", path.display()), false)),
            Listener::Tcp(l) => {
                let addr = l.local_addr().ok()?;
                let scheme = if tls { "https" } else { "http" };
                let every = addr.ip().is_unspecified();
                let ip = match addr.ip() {
                    ip if !every => ip.to_canonical(),
                    std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                };
                let host = match ip {
                    std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                    v4 => v4.to_string(),
                };
                // An IPv4-mapped IPv6 loopback (`[::ffff:127.0.0.1]`) is loopback too.
                Some((format!("{scheme}://{host}:{}/", addr.port()), every || !ip.is_loopback()))
            }
        }
    }
}
