//! One event as it goes on the wire, made once and shared by every stream.

use std::sync::Arc;

use bytes::Bytes;

use crate::runtime::pieces;

/// The heartbeat: an SSE comment line.
pub(super) const HEARTBEAT: &[u8] = b": heartbeat\n\n";

/// One event as sent, shared by every stream it goes to.
#[derive(Debug)]
pub(super) struct Frame {
    pub(super) parts: Vec<Bytes>,
    pub(super) len: usize,
}

impl Frame {
    /// `event: <kind>`, an optional `id:`, and `data:` on one line.
    pub(super) fn new(kind: &str, id: Option<&str>, data: Vec<Bytes>) -> Arc<Self> {
        let mut head = format!("event: {kind}\n");
        if let Some(id) = id {
            head.push_str("id: ");
            head.push_str(id);
            head.push('\n');
        }
        head.push_str("data: ");
        let mut parts = Vec::with_capacity(data.len() + 2);
        parts.push(Bytes::from(head));
        parts.extend(data);
        parts.push(Bytes::from_static(b"\n\n"));
        let len = parts.iter().map(Bytes::len).sum();
        if len <= pieces::CHUNK {
            // One piece, joined once for every stream it goes to: each
            // stream then hands its connection one chunk per event.
            return Arc::new(Self { parts: vec![pieces::join(&parts)], len });
        }
        Arc::new(Self { parts, len })
    }
}
