//! One broker pass's reading: every section's answer, assembled exactly as
//! `/metrics` assembles it, and the events made from it.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use super::cursor::{Key, changed, cursor};
use super::frame::Frame;
use crate::runtime::clock::Clock;
use crate::runtime::envelope::{Envelope, SectionState, assemble_with};
use crate::runtime::handle::MirrorHandle;
use crate::runtime::messages::Answer;
use crate::section::SectionName;

/// The head of a `section` event; `data` follows.
#[derive(Serialize)]
pub(super) struct SectionHead<'a> {
    pub(super) section: SectionName,
    pub(super) seq: u64,
    #[serde(flatten)]
    pub(super) state: &'a SectionState,
}

/// What one broker pass read: the envelope and every section's key.
pub(super) struct Reading {
    pub(super) sections: Vec<SectionName>,
    pub(super) keys: Vec<Key>,
    pub(super) envelope: Envelope,
    /// The envelope event, made when first needed.
    pub(super) envelope_frame: Option<Arc<Frame>>,
}

impl Reading {
    pub(super) fn read(answers: Vec<Answer>, previous: &[Key], handle: &MirrorHandle) -> Self {
        let sections: Vec<SectionName> = answers.iter().map(|a| a.section).collect();
        let clock = Clock::now();
        let keys = answers
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let state_seq = a.reply.as_ref().map(|r| r.seq).ok();
                let envelope_status = a.status();
                // Without an answer the section keeps the sequence number its clients know.
                let seq = state_seq.unwrap_or_else(|| previous.get(i).map_or(0, |k| k.seq));
                Key { seq, status: envelope_status }
            })
            .collect();
        let envelope = assemble_with(answers, clock, handle.snapshot_timeout(), handle.render_cache());
        Self { sections, keys, envelope, envelope_frame: None }
    }

    /// The `envelope` event, exactly `/metrics`'s body for this reading.
    pub(super) fn envelope_frame(&mut self, instance: &str) -> Arc<Frame> {
        if let Some(f) = &self.envelope_frame {
            return Arc::clone(f);
        }
        let data = match self.envelope.json_parts() {
            Ok(parts) => parts,
            // Serialising plain data cannot fail; if it ever does, the client still gets JSON.
            Err(e) => vec![Bytes::from(serde_json::json!({ "error": e.to_string() }).to_string())],
        };
        let frame = Frame::new("envelope", Some(&cursor(instance, &self.keys)), data);
        self.envelope_frame = Some(Arc::clone(&frame));
        frame
    }

    /// Every section's data as served in this reading (its JSON), in order;
    /// `None` for a section without data.
    pub(super) fn data_json(&self) -> Vec<Option<Bytes>> {
        self.sections.iter().map(|name| self.envelope.data[*name].as_ref().and_then(|d| d.json().ok())).collect()
    }

    /// One `section` event per section whose served value changed since
    /// `from`, each with the cursor as of that event. `sent` is the data each
    /// section had when `from` was read, when the caller knows it (the live
    /// streams, all at the last pass's cursor): a section whose own key did
    /// not move and whose data is byte for byte what was sent is not sent
    /// again, though a section it is served with moved (`cost` when only the
    /// agents' CPU ticks did).
    pub(super) fn section_frames(
        &self,
        instance: &str,
        from: &[Key],
        sent: Option<&[Option<Bytes>]>,
    ) -> Vec<Arc<Frame>> {
        let mut at = from.to_vec();
        let mut frames = Vec::new();
        for (i, name) in self.sections.iter().enumerate() {
            if !changed(&self.sections, i, from, &self.keys) {
                continue;
            }
            if let Some(sent) = sent
                && from[i] == self.keys[i]
                && let Some(Some(before)) = sent.get(i)
                && self.envelope.data[*name].as_ref().and_then(|d| d.json().ok()).as_ref() == Some(before)
            {
                continue;
            }
            at[i] = self.keys[i];
            let mut data = Vec::with_capacity(3);
            let mut head = Vec::with_capacity(160);
            let state = &self.envelope.sections[*name];
            if let Err(e) = serde_json::to_writer(&mut head, &SectionHead { section: *name, seq: at[i].seq, state }) {
                tracing::error!(section = %name, error = %e, "cannot serialise a section event");
                continue;
            }
            head.pop(); // the closing brace: `data` follows
            head.extend_from_slice(b",\"data\":");
            match self.envelope.data[*name].as_ref().map(|d| d.json()) {
                Some(Ok(json)) => {
                    data.push(Bytes::from(head));
                    data.push(json);
                    data.push(Bytes::from_static(b"}"));
                }
                Some(Err(e)) => {
                    tracing::error!(section = %name, error = %e, "cannot serialise a section's data");
                    continue;
                }
                None => {
                    head.extend_from_slice(b"null}");
                    data.push(Bytes::from(head));
                }
            }
            frames.push(Frame::new("section", Some(&cursor(instance, &at)), data));
        }
        frames
    }
}
