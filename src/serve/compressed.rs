//! Large `/metrics` bodies compressed once and shared (issue 24, item 3).
//!
//! Compressing per request cost each concurrent `br` request about 10 MB
//! and 38 ms of CPU on a 3.3 MB envelope (256 clients peaked at 2.76 GB).
//! Here a body above [`MIN_SHARED`] is compressed at most once per encoding
//! for each (entity tag, second): concurrent requests wait for the one
//! compression in progress (an async lock per encoding, the work itself on
//! a blocking thread) and then share its bytes, sent in 32 KiB slices. The
//! memory this takes is bounded whatever the number of clients: per encoding
//! one compressed body kept and, while one is being made, one compressor's
//! working state and output.
//!
//! A shared compressed body is the envelope as it was when it was made: in
//! the same second, with the same data and statuses (the tag), its `age_ms`
//! values are those of its making, up to a second before it is sent. An
//! uncompressed answer is assembled for each millisecond.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

/// Bodies smaller than this are compressed per response by actix-web's
/// `Compress`, which is cheap at that size.
pub(crate) const MIN_SHARED: usize = 64 * 1024;

/// An encoding this server makes shared bodies in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    /// `zstd`, level 3.
    Zstd,
    /// `br`, quality 3, window 22 (what actix-web's `Compress` uses).
    Brotli,
    /// `gzip`, fast.
    Gzip,
}

const CODINGS: [Coding; 3] = [Coding::Zstd, Coding::Brotli, Coding::Gzip];

impl Coding {
    /// The `Content-Encoding` token.
    pub(crate) fn token(self) -> &'static str {
        match self {
            Coding::Zstd => "zstd",
            Coding::Brotli => "br",
            Coding::Gzip => "gzip",
        }
    }

    fn index(self) -> usize {
        match self {
            Coding::Zstd => 0,
            Coding::Brotli => 1,
            Coding::Gzip => 2,
        }
    }

    /// The encoding `accept_encoding` gives the highest q-value among those
    /// this server makes (ties: zstd, br, gzip); `None` when it names none
    /// of them with q > 0 (identity, or nothing acceptable: the caller's
    /// ordinary path answers those).
    pub(crate) fn negotiate(accept_encoding: &str) -> Option<Coding> {
        let q = |name: &str| {
            let mut named = None;
            let mut any = None;
            for entry in accept_encoding.split(',') {
                let mut parts = entry.split(';');
                let token = parts.next().unwrap_or("").trim();
                let value = parts
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .next()
                    .map_or(Some(1.0f32), |v| v.trim().parse().ok())
                    .unwrap_or(0.0);
                if token.eq_ignore_ascii_case(name) {
                    named = Some(named.map_or(value, |n: f32| n.max(value)));
                } else if token == "*" {
                    any = Some(value);
                }
            }
            named.or(any).unwrap_or(0.0)
        };
        let (best, q) = CODINGS
            .iter()
            .map(|c| (*c, q(c.token())))
            .fold((None, 0.0f32), |(best, bq), (c, cq)| if cq > bq { (Some(c), cq) } else { (best, bq) });
        best.filter(|_| q > 0.0)
    }
}

/// What each encoding last made: the tag and second it was made for, and the bytes.
type Slot = tokio::sync::Mutex<Option<(String, i64, Bytes)>>;

static SLOTS: [Slot; 3] =
    [tokio::sync::Mutex::const_new(None), tokio::sync::Mutex::const_new(None), tokio::sync::Mutex::const_new(None)];
static MADE: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];

/// How many shared bodies `coding` has made since start-up (for the exposition).
pub(crate) fn made(coding: Coding) -> u64 {
    MADE[coding.index()].load(Ordering::Relaxed)
}

/// Every encoding, for the exposition.
pub(crate) fn codings() -> [Coding; 3] {
    CODINGS
}

/// `parts` compressed with `coding`, made at most once per (`tag`, second)
/// and shared by every request that asks meanwhile.
pub(crate) async fn body(coding: Coding, tag: &str, parts: Vec<Bytes>) -> std::io::Result<Bytes> {
    let second = chrono::Utc::now().timestamp();
    let mut slot = SLOTS[coding.index()].lock().await;
    if let Some((t, s, bytes)) = slot.as_ref()
        && t == tag
        && *s == second
    {
        return Ok(bytes.clone());
    }
    let made = actix_web::web::block(move || compress(coding, &parts))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
    MADE[coding.index()].fetch_add(1, Ordering::Relaxed);
    *slot = Some((tag.to_owned(), second, made.clone()));
    Ok(made)
}

fn compress(coding: Coding, parts: &[Bytes]) -> std::io::Result<Bytes> {
    use std::io::Write;
    let len: usize = parts.iter().map(Bytes::len).sum();
    let mut out = Vec::with_capacity(len / 8);
    match coding {
        Coding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(&mut out, flate2::Compression::fast());
            parts.iter().try_for_each(|p| e.write_all(p))?;
            e.finish()?;
        }
        Coding::Brotli => {
            let mut e = brotli::CompressorWriter::new(&mut out, 32 * 1024, 3, 22);
            parts.iter().try_for_each(|p| e.write_all(p))?;
            // Finishes the stream (a flush alone would not).
            let _ = e.into_inner();
        }
        Coding::Zstd => {
            let mut e = zstd::Encoder::new(&mut out, 3)?;
            parts.iter().try_for_each(|p| e.write_all(p))?;
            e.finish()?;
        }
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_q_values() {
        assert_eq!(Coding::negotiate("gzip"), Some(Coding::Gzip));
        assert_eq!(Coding::negotiate("gzip, deflate, br, zstd"), Some(Coding::Zstd));
        assert_eq!(Coding::negotiate("gzip;q=1, br;q=0.5"), Some(Coding::Gzip));
        assert_eq!(Coding::negotiate("*"), Some(Coding::Zstd));
        assert_eq!(Coding::negotiate("*;q=0.5, zstd;q=0"), Some(Coding::Brotli));
        for none in ["", "identity", "gzip;q=0", "*;q=0", "deflate"] {
            assert_eq!(Coding::negotiate(none), None, "{none:?}");
        }
    }

    #[test]
    fn each_encoding_round_trips() -> Result<(), Box<dyn std::error::Error>> {
        use std::io::Read;
        let parts = vec![Bytes::from_static(b"{\"a\":"), Bytes::from("1".repeat(100_000)), Bytes::from_static(b"}")];
        let whole: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        for coding in CODINGS {
            let c = compress(coding, &parts)?;
            let mut back = Vec::new();
            match coding {
                Coding::Gzip => flate2::read::GzDecoder::new(&c[..]).read_to_end(&mut back)?,
                Coding::Brotli => brotli::Decompressor::new(&c[..], 4096).read_to_end(&mut back)?,
                Coding::Zstd => zstd::Decoder::new(&c[..])?.read_to_end(&mut back)?,
            };
            assert_eq!(back, whole, "{coding:?}");
            assert!(c.len() < whole.len() / 10, "{coding:?} compresses");
        }
        Ok(())
    }
}
