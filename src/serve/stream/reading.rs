//! One broker pass's reading: every section's answer, assembled exactly as
//! `/metrics` assembles it, and the events made from it.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use serde_json::Value;

use super::changes::{Change, Held, diff};
use super::cursor::{Key, changed, cursor};
use super::frame::Frame;
use crate::runtime::clock::Clock;
use crate::runtime::envelope::{Envelope, SectionState, assemble_with};
use crate::runtime::handle::MirrorHandle;
use crate::runtime::messages::Answer;
use crate::section::SectionName;
use crate::section::served::change_shape;
use crate::source::time::format_seconds;

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
        self.frames(instance, from, sent, false, "section", |_, name, mut head| {
            head.extend_from_slice(b",\"data\":");
            Some(self.whole(name, head))
        })
    }

    /// The changes-only form's events for the same sections as
    /// [`Reading::section_frames`]: each a `change` event with the
    /// reading's `generated_at` and what changed since the value in `held`
    /// (which becomes this reading's). Without `held` (a reader that
    /// reconnected), every section is sent, whole.
    pub(super) fn change_frames(
        &self,
        instance: &str,
        from: &[Key],
        sent: Option<&[Option<Bytes>]>,
        mut held: Option<&mut Vec<Option<Held>>>,
    ) -> Vec<Arc<Frame>> {
        let every = held.is_none();
        let at = self.envelope.generated_at;
        self.frames(instance, from, sent, every, "change", |i, name, mut head| {
            head.extend_from_slice(b",\"generated_at\":");
            serde_json::to_writer(&mut head, &format_seconds(at)).ok()?;
            let data = self.envelope.data[name].as_ref().and_then(|d| d.json().ok());
            let new: Value = match &data {
                Some(json) => serde_json::from_slice(json).ok()?,
                None => Value::Null,
            };
            let change = match held.as_deref().and_then(|h| h.get(i)).and_then(Option::as_ref) {
                Some(base) if !new.is_null() && !base.value.is_null() => {
                    diff(change_shape(name), base, &new, at, data.as_ref().map_or(0, Bytes::len))
                }
                _ => Change::Whole,
            };
            if let Some(slot) = held.as_deref_mut().and_then(|h| h.get_mut(i)) {
                *slot = Some(Held { value: new, at });
            }
            match change {
                Change::Whole => {
                    head.extend_from_slice(b",\"data\":");
                    Some(self.whole(name, head))
                }
                Change::Fields(fields) => {
                    let json = serde_json::to_vec(&fields).ok()?;
                    // The fields' object without its opening brace continues the head's.
                    if json.len() > 2 {
                        head.push(b',');
                        head.extend_from_slice(&json[1..]);
                    } else {
                        head.push(b'}');
                    }
                    Some(vec![Bytes::from(head)])
                }
            }
        })
    }

    /// Every section's served value as the changes-only form's readers hold
    /// it after this reading's envelope.
    pub(super) fn held(&self) -> Vec<Option<Held>> {
        let at = self.envelope.generated_at;
        self.sections
            .iter()
            .map(|name| {
                let value = match self.envelope.data[*name].as_ref() {
                    Some(d) => serde_json::from_slice(&d.json().ok()?).ok()?,
                    None => Value::Null,
                };
                Some(Held { value, at })
            })
            .collect()
    }

    /// `head` (an event's head without its closing brace, ending in `"data":`)
    /// followed by the section's whole value and the closing brace.
    fn whole(&self, name: SectionName, mut head: Vec<u8>) -> Vec<Bytes> {
        match self.envelope.data[name].as_ref().map(|d| d.json()) {
            Some(Ok(json)) => vec![Bytes::from(head), json, Bytes::from_static(b"}")],
            Some(Err(e)) => {
                tracing::error!(section = %name, error = %e, "cannot serialise a section's data");
                head.extend_from_slice(b"null}");
                vec![Bytes::from(head)]
            }
            None => {
                head.extend_from_slice(b"null}");
                vec![Bytes::from(head)]
            }
        }
    }

    /// The events of `kind` for the sections whose served value changed
    /// since `from` (see [`Reading::section_frames`]), or for `every`
    /// section; `body` finishes each from the event's head without its
    /// closing brace (`None`: not sent).
    fn frames(
        &self,
        instance: &str,
        from: &[Key],
        sent: Option<&[Option<Bytes>]>,
        every: bool,
        kind: &str,
        mut body: impl FnMut(usize, SectionName, Vec<u8>) -> Option<Vec<Bytes>>,
    ) -> Vec<Arc<Frame>> {
        let mut at = from.to_vec();
        let mut frames = Vec::new();
        for (i, name) in self.sections.iter().enumerate() {
            if !every && !changed(&self.sections, i, from, &self.keys) {
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
            let mut head = Vec::with_capacity(160);
            let state = &self.envelope.sections[*name];
            if let Err(e) = serde_json::to_writer(&mut head, &SectionHead { section: *name, seq: at[i].seq, state }) {
                tracing::error!(section = %name, error = %e, "cannot serialise a section event");
                continue;
            }
            head.pop(); // the closing brace: the body follows
            let Some(data) = body(i, *name, head) else {
                tracing::error!(section = %name, "cannot make a section's change event");
                continue;
            };
            frames.push(Frame::new(kind, Some(&cursor(instance, &at)), data));
        }
        frames
    }
}
