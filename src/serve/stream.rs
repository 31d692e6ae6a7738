//! `GET /metrics/stream`: Server-Sent Events carrying what an in-process
//! subscriber gets.
//!
//! One broker per mirror, on the mirror's own thread for such work, is a
//! subscriber of every section (the hub wakes it on each change) and, while
//! streams are open, also looks again every refresh period for changes of
//! status alone (a failed refresh, a stalled or dead actor). Each time it
//! reads every section's answer exactly as `/metrics` does, assembles the
//! envelope, and hands each open stream the sections whose sequence number or
//! status changed, as `section` events made once and shared by every stream.
//!
//! Each stream has a bounded queue (`client::QUEUE_BYTES`, `client::QUEUE_EVENTS`). The
//! broker never waits for a stream: when an event does not fit, the stream's
//! pending events are dropped and replaced by one `resync` event and a fresh
//! envelope (counted), so a reader that stalls costs neither memory nor
//! anyone else's time.
//!
//! A client that asks for it (`?refreshed=1`) also gets, at most once per
//! `refreshed::REFRESHED_EVERY`, a `refreshed` event with every section's
//! `refreshed_at` and `age_ms` when a refresh found nothing new: a refresh
//! that changes nothing sends no `section` event, and a page that counts a
//! section's age up from its last event would show a healthy section ageing
//! without bound. The default stream does not carry it (a sidecar that
//! follows changes has no use for it, and thousands of them would pay for it).
//!
//! A client that asks for it (`?changes=1`) gets `change` events instead
//! of `section` events: what each section's value changed since the one
//! every such client holds (rows by key, changed fields, ages moved on by
//! the reader), made once per pass against that value (`changes.rs`).
//!
//! Every event's `id:` is a cursor: the broker's instance and each section's
//! sequence number and status. A client that reconnects with
//! `Last-Event-ID` gets the sections that changed since (each once, current
//! value); a cursor from another instance or that does not parse gets an
//! envelope.

mod broker;
mod changes;
mod client;
mod cursor;
mod frame;
mod http;
mod reading;
mod refreshed;

pub use broker::StreamTotals;
pub(crate) use broker::Streams;
pub(crate) use http::stream;
