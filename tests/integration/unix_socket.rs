//! `ORCH_BIND=unix:/path` (README, "Routes"): the mirror on a Unix socket,
//! its mode and group, a stale socket replaced, a live one refused, anything
//! else at the path left alone, and the socket removed on exit.

use crate::support;

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use support::{Binary, Fixture, wait_for};

/// `GET path` over the socket: the status and the body.
fn get(socket: &Path, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
}

fn start(fx: &Fixture, socket: &Path, env: &[(&str, &str)]) -> std::process::Child {
    let bind = format!("unix:{}", socket.display());
    let mut cmd = Binary::command(&[("ORCH_DB_PATH", &fx.path.display().to_string()), ("ORCH_BIND", &bind)]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().expect("spawn")
}

fn stop(child: std::process::Child) -> String {
    let _ = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "exit: {:?}", out.status);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_mirror_serves_on_a_unix_socket_with_its_mode_and_group_and_removes_it() {
    let fx = Fixture::one_of_each();
    let socket = fx.dir.path().join("orchmirror.sock");
    // Root may give the socket any group; anyone else, one of their own.
    let root = std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let gid = if root { 65534 } else { std::fs::metadata(fx.dir.path()).expect("dir").gid() };
    let group = gid.to_string();
    let child = start(&fx, &socket, &[("ORCH_SOCKET_MODE", "0640"), ("ORCH_SOCKET_GROUP", &group)]);
    let (status, body) = wait_for(Duration::from_secs(20), "the socket to answer", || {
        get(&socket, "/metrics").ok().filter(|(_, b)| b.contains("\"status\":\"ok\""))
    });
    assert_eq!(status, 200);
    let m: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(m["schema_version"], 1);
    assert_eq!(get(&socket, "/health").expect("health").0, 200);
    // The stream too: its first event is the envelope.
    let mut s = UnixStream::connect(&socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(b"GET /metrics/stream HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("send");
    let mut seen = Vec::new();
    let mut chunk = [0u8; 8192];
    while !String::from_utf8_lossy(&seen).contains("\"schema_version\":1") {
        let n = s.read(&mut chunk).expect("read the stream");
        assert!(n > 0, "the stream ended: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&chunk[..n]);
    }
    assert!(String::from_utf8_lossy(&seen).contains("event: envelope"));
    drop(s);
    let meta = std::fs::metadata(&socket).expect("socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o640, "ORCH_SOCKET_MODE");
    assert_eq!(meta.gid(), gid, "ORCH_SOCKET_GROUP");
    stop(child);
    assert!(!socket.exists(), "removed on exit");
}

#[test]
fn a_stale_socket_is_replaced_a_live_one_refused_and_a_file_left_alone() {
    let fx = Fixture::one_of_each();
    let socket = fx.dir.path().join("s.sock");
    // A crashed run's socket: the file, nobody listening.
    drop(UnixListener::bind(&socket).expect("bind"));
    assert!(socket.exists());
    let first = start(&fx, &socket, &[]);
    wait_for(Duration::from_secs(20), "the socket to answer", || {
        get(&socket, "/livez").ok().filter(|(s, _)| *s == 200)
    });

    // A second mirror on the same path: a start-up error, and the first keeps serving.
    let second = start(&fx, &socket, &[]).wait_with_output().expect("second");
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("s.sock") && err.contains("running server"), "{err}");
    assert_eq!(get(&socket, "/livez").expect("first still serves").0, 200);
    stop(first);

    // A regular file at the path is never removed.
    let file = fx.dir.path().join("notes.txt");
    std::fs::write(&file, "keep me").expect("write");
    let out = start(&fx, &file, &[]).wait_with_output().expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a socket"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&file).expect("still there"), "keep me");
}

/// SIGHUP (a closed terminal) stops the mirror as SIGTERM does: it exits 0
/// and the socket file is removed (it used to be killed by the signal and
/// leave the file).
#[test]
fn sighup_stops_the_mirror_and_removes_its_socket() {
    let fx = Fixture::one_of_each();
    let socket = fx.dir.path().join("hup.sock");
    let child = start(&fx, &socket, &[]);
    wait_for(Duration::from_secs(20), "the socket to answer", || {
        get(&socket, "/health").ok().filter(|(s, _)| *s == 200)
    });
    let _ = std::process::Command::new("kill").arg("-HUP").arg(child.id().to_string()).status();
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "exit after SIGHUP: {:?}", out.status);
    assert!(!socket.exists(), "the socket is removed on SIGHUP");
    // Issue 34: the start-up line names the socket, and no TCP address that nothing listens on.
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains(&format!("serving: open unix:{}", socket.display())), "{log}");
    assert!(!log.contains("127.0.0.1:8080") && !log.contains("addr="), "{log}");
}
