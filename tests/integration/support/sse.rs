//! A `/metrics/stream` client for tests: a real socket, HTTP/1.1 chunked
//! decoding, and the `eventsource-stream` crate's parser (the HTML
//! specification's event-stream rules), on a thread of its own. The test
//! reads parsed events from a channel; `pause` stops the thread reading the
//! socket, so the server sees a client that does not read.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::Value;

/// One parsed event.
#[derive(Debug, Clone)]
pub struct Event {
    pub event: String,
    pub id: String,
    pub data: String,
}

impl Event {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("event data is not JSON ({e}): {}", self.data))
    }
}

/// What the reader thread reports.
#[derive(Debug)]
pub enum Item {
    Event(Event),
    /// Raw bytes seen on the wire (only with `raw`), for what parsers hide: comments.
    Raw(Vec<u8>),
    /// The server ended the stream (or the connection failed, with why).
    End(Option<String>),
}

pub struct Stream {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body of a response that is not a stream (a 503's JSON).
    pub body: String,
    items: Option<Receiver<Item>>,
    paused: Arc<AtomicBool>,
    socket: TcpStream,
    pub ended: bool,
}

/// Reads one CRLF-terminated line.
fn line(r: &mut impl BufRead) -> std::io::Result<String> {
    let mut s = String::new();
    r.read_line(&mut s)?;
    if s.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
    }
    Ok(s.trim_end().to_owned())
}

impl Stream {
    /// `GET /metrics/stream` on 127.0.0.1:`port`, with `Last-Event-ID` when given.
    pub fn open(port: u16, last_event_id: Option<&str>) -> Stream {
        Self::open_with(port, last_event_id, false, None, &[])
    }

    /// [`Stream::open`], optionally reporting raw bytes too, and with a small
    /// receive buffer when `rcvbuf` is given.
    pub fn open_with(
        port: u16,
        last_event_id: Option<&str>,
        raw: bool,
        rcvbuf: Option<usize>,
        headers: &[(&str, &str)],
    ) -> Stream {
        Self::open_target(port, "/metrics/stream", last_event_id, raw, rcvbuf, headers)
    }

    /// [`Stream::open_with`] on another request target (a query string, say).
    pub fn open_target(
        port: u16,
        target: &str,
        last_event_id: Option<&str>,
        raw: bool,
        rcvbuf: Option<usize>,
        headers: &[(&str, &str)],
    ) -> Stream {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
        if let Some(size) = rcvbuf {
            socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        socket.connect(&addr.into()).expect("connect");
        let socket: TcpStream = socket.into();
        let mut request = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n");
        if let Some(id) = last_event_id {
            request.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        (&socket).write_all(request.as_bytes()).expect("send request");
        socket.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut reader = BufReader::new(socket.try_clone().expect("clone"));
        let status_line = line(&mut reader).expect("status line");
        let status: u16 = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status code");
        let mut headers = Vec::new();
        loop {
            let l = line(&mut reader).expect("header");
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        socket.set_read_timeout(None).expect("timeout");
        let paused = Arc::new(AtomicBool::new(false));
        let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        if status != 200 {
            let mut body = String::new();
            match header("content-length").and_then(|n| n.parse::<usize>().ok()) {
                Some(n) => {
                    let mut buf = vec![0; n];
                    reader.read_exact(&mut buf).expect("body");
                    body = String::from_utf8_lossy(&buf).into_owned();
                }
                None => {
                    let _ = reader.read_to_string(&mut body);
                }
            }
            return Stream { status, headers, body, items: None, paused, socket, ended: true };
        }
        assert_eq!(header("transfer-encoding").as_deref(), Some("chunked"), "{headers:?}");
        let (tx, rx) = std::sync::mpsc::channel();
        let pause = Arc::clone(&paused);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
            rt.block_on(async move {
                let raw_tx = tx.clone();
                // The decoded body, as the parser's byte stream; reading
                // blocks this thread, which is the point (and its own).
                let bytes = futures_util::stream::unfold(reader, move |mut reader| {
                    let pause = Arc::clone(&pause);
                    let raw_tx = raw_tx.clone();
                    async move {
                        // Whole lines at a time: the parser re-reads an
                        // unfinished line on every piece it is given.
                        let mut out = Vec::new();
                        loop {
                            while pause.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(10));
                            }
                            let size = match line(&mut reader) {
                                Ok(l) => usize::from_str_radix(l.split(';').next().unwrap_or("").trim(), 16),
                                Err(e) => return Some((Err(e.to_string()), reader)),
                            };
                            let size = match size {
                                Ok(0) if out.is_empty() => return None,
                                Ok(0) => break,
                                Ok(n) => n,
                                Err(e) => return Some((Err(format!("bad chunk size: {e}")), reader)),
                            };
                            let mut buf = vec![0; size + 2];
                            if let Err(e) = reader.read_exact(&mut buf) {
                                return Some((Err(e.to_string()), reader));
                            }
                            buf.truncate(size);
                            if raw {
                                let _ = raw_tx.send(Item::Raw(buf.clone()));
                            }
                            out.extend_from_slice(&buf);
                            if out.ends_with(b"\n") {
                                break;
                            }
                        }
                        Some((Ok::<_, String>(bytes::Bytes::from(out)), reader))
                    }
                });
                let mut events = Box::pin(bytes.eventsource());
                loop {
                    match events.next().await {
                        Some(Ok(e)) => {
                            let ev = Event { event: e.event, id: e.id, data: e.data };
                            if tx.send(Item::Event(ev)).is_err() {
                                return;
                            }
                        }
                        Some(Err(e)) => {
                            let _ = tx.send(Item::End(Some(e.to_string())));
                            return;
                        }
                        None => {
                            let _ = tx.send(Item::End(None));
                            return;
                        }
                    }
                }
            });
        });
        Stream { status, headers, body: String::new(), items: Some(rx), paused, socket, ended: false }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The next item within `within`; `None` when there was none.
    pub fn next_item(&mut self, within: Duration) -> Option<Item> {
        let rx = self.items.as_ref()?;
        match rx.recv_timeout(within) {
            Ok(item) => {
                if let Item::End(reason) = &item {
                    self.ended = true;
                    // Shown with a failing test's output: why the connection ended.
                    if let Some(reason) = reason {
                        eprintln!("stream ended: {reason}");
                    }
                }
                Some(item)
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                self.ended = true;
                None
            }
        }
    }

    /// The next event within `within` (raw bytes skipped); `None` when there
    /// was none or the stream ended.
    pub fn next(&mut self, within: Duration) -> Option<Event> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_item(left)? {
                Item::Event(e) => return Some(e),
                Item::Raw(_) => continue,
                Item::End(_) => return None,
            }
        }
    }

    /// Every event that arrives within `window`.
    pub fn collect(&mut self, window: Duration) -> Vec<Event> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        while let Some(e) = self.next(deadline.saturating_duration_since(Instant::now())) {
            out.push(e);
        }
        out
    }

    /// Stops (or resumes) reading the socket.
    pub fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    /// Closes the connection.
    pub fn close(self) {}
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.paused.store(false, Ordering::SeqCst);
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}
