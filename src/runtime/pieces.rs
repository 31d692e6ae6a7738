//! Bodies made of shared pieces (a section's JSON is one piece, shared by
//! every response and event that carries it): joined into one buffer when
//! small, handed to a connection in slices when large.

use bytes::{Bytes, BytesMut};

/// How much of a large body is handed to a connection at a time. The
/// connection copies what it is handed into its write buffer, so a client
/// that does not read holds about this much, not a copy of the whole body.
pub(crate) const CHUNK: usize = 32 * 1024;

/// The pieces as one buffer.
pub(crate) fn join(parts: &[Bytes]) -> Bytes {
    let mut joined = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
    parts.iter().for_each(|p| joined.extend_from_slice(p));
    joined.freeze()
}

/// `part` in slices of at most [`CHUNK`] bytes, without copying.
pub(crate) fn slices(part: &Bytes) -> impl Iterator<Item = Bytes> + use<'_> {
    (0..part.len()).step_by(CHUNK).map(move |at| part.slice(at..(at + CHUNK).min(part.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_and_join_give_back_the_same_bytes() {
        let part = Bytes::from((0..(2 * CHUNK + 7)).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
        let pieces: Vec<Bytes> = slices(&part).collect();
        assert_eq!(pieces.iter().map(Bytes::len).collect::<Vec<_>>(), [CHUNK, CHUNK, 7]);
        assert_eq!(join(&pieces), part);
        assert_eq!(slices(&Bytes::new()).count(), 0);
    }
}
