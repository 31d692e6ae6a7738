//! Which rows a WAL database's commits can have touched since an earlier
//! read, from the frames they appended to the `-wal` (SQLite's file format,
//! "The Write-Ahead Log" and "B-tree Pages"; Litestream reads frames from a
//! saved offset the same way).
//!
//! Each frame is one page as a commit left it. A row that a commit inserts,
//! updates or moves lives on a table b-tree leaf page (type `0x0D`) that the
//! commit wrote, so the rowids on the leaf pages of the frames appended
//! since a read are a superset of the rows changed since (of every table:
//! a page does not say which table it belongs to). A row deleted from a
//! page is no longer on it, but it lay between the page's first and last
//! rowid unless it was one of those two: [`ChangedRows::within`] answers for
//! ranges, so a followed row that vanished is looked up by key too.
//!
//! Where this cannot be told, the answer is [`Changes::Unknown`] and a
//! section reads every row it follows, as without this: a rollback-journal
//! database, a WAL restarted since (a checkpoint reached its end and a
//! writer began again from its start), a header read while it was being
//! written, more frames than are worth reading, or a frame whose page is
//! of no b-tree kind (an overflow or freelist page: the row it belongs to
//! cannot be named).

use std::fs::File;
use std::os::unix::fs::FileExt;

/// The WAL file's header, before the first frame.
const WAL_HEADER: u64 = 32;
/// A frame's header, before its page.
const FRAME_HEADER: usize = 24;
/// More frames than this since the last read: read every followed row instead
/// (about 8 MB of 4 KiB pages, which costs more than reading the rows).
pub(crate) const MAX_FRAMES: u32 = 2048;

/// A validated WAL-index header (the first 48 bytes of the `-shm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexHeader {
    /// The last frame of the last commit.
    pub(crate) max_frame: u32,
    /// The WAL's salts as the WAL header stores them: they change when the WAL restarts.
    salt: [u8; 8],
    page_size: u32,
}

impl IndexHeader {
    /// The header in `bytes`, or `None` when it is not initialised or its
    /// checksum does not hold (a read torn by a writer updating it).
    pub(crate) fn parse(bytes: &[u8]) -> Option<IndexHeader> {
        let b = bytes.get(..48)?;
        let word = |i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        if b[12] != 1 {
            return None;
        }
        // SQLite's checksum over the first 40 bytes, in native byte order.
        let (mut s1, mut s2) = (0u32, 0u32);
        for i in (0..40).step_by(8) {
            s1 = s1.wrapping_add(word(i)).wrapping_add(s2);
            s2 = s2.wrapping_add(word(i + 4)).wrapping_add(s1);
        }
        if (s1, s2) != (word(40), word(44)) {
            return None;
        }
        let raw = u32::from(u16::from_ne_bytes([b[14], b[15]]));
        // Page sizes are stored as (size & 0xff00) | (size >> 16): 65536 is 1.
        let page_size = if raw == 1 { 65_536 } else { raw };
        if !(512..=65_536).contains(&page_size) || !page_size.is_power_of_two() {
            return None;
        }
        let mut salt = [0u8; 8];
        salt.copy_from_slice(&b[32..40]);
        Some(IndexHeader { max_frame: word(16), salt, page_size })
    }
}

/// What a read can tell of the rows changed since an earlier one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// Nothing can be told: read every row followed.
    Unknown,
    /// The rows the commits since can have touched (a superset).
    Rows(ChangedRows),
}

impl Changes {
    /// Of the sorted `ids`, those the commits can have touched; all of them when unknown.
    pub fn among(&self, ids: &[i64]) -> Vec<i64> {
        match self {
            Changes::Unknown => ids.to_vec(),
            Changes::Rows(rows) => rows.within(ids),
        }
    }
}

/// The rowid ranges of the table leaf pages written since an earlier read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangedRows {
    /// Each page's first and last rowid, sorted and merged.
    ranges: Vec<(i64, i64)>,
}

impl ChangedRows {
    /// The rows of pages with these first and last rowids.
    pub(crate) fn from_ranges(mut ranges: Vec<(i64, i64)>) -> ChangedRows {
        ranges.sort_unstable();
        let mut merged: Vec<(i64, i64)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        ChangedRows { ranges: merged }
    }

    /// The written pages' rowid ranges, sorted and merged.
    pub fn ranges(&self) -> &[(i64, i64)] {
        &self.ranges
    }

    /// Of the sorted `ids`, those within a written page's rowid range.
    pub fn within(&self, ids: &[i64]) -> Vec<i64> {
        let mut out = Vec::new();
        for &(lo, hi) in &self.ranges {
            let start = ids.partition_point(|id| *id < lo);
            out.extend(ids[start..].iter().take_while(|id| **id <= hi));
        }
        out
    }
}

/// The changes between a read whose WAL-index header was `earlier` and one
/// taken now: `later` read before this read's transaction began, `now`
/// after it (so this read's snapshot lies between them), with `wal` the
/// `-wal` file (needed only when frames were appended). Call it while this read's transaction is open: a reader
/// whose snapshot uses the WAL keeps any writer from restarting it.
pub(crate) fn changes(earlier: &IndexHeader, later: &IndexHeader, now: &IndexHeader, wal: Option<&File>) -> Changes {
    if earlier.salt != later.salt || later.salt != now.salt || earlier.page_size != now.page_size {
        return Changes::Unknown;
    }
    let (from, to) = (earlier.max_frame, now.max_frame);
    if to < from || to - from > MAX_FRAMES {
        return Changes::Unknown;
    }
    if to == from {
        return Changes::Rows(ChangedRows::default());
    }
    let Some(wal) = wal else { return Changes::Unknown };
    match read_frames(wal, from, to, now) {
        Some(ranges) => Changes::Rows(ChangedRows::from_ranges(ranges)),
        None => Changes::Unknown,
    }
}

/// The rowid ranges of the table leaf pages in frames `from + 1 ..= to`.
fn read_frames(wal: &File, from: u32, to: u32, header: &IndexHeader) -> Option<Vec<(i64, i64)>> {
    let page = header.page_size as usize;
    let frame = FRAME_HEADER + page;
    let mut buf = vec![0u8; frame * (to - from) as usize];
    wal.read_exact_at(&mut buf, WAL_HEADER + u64::from(from) * frame as u64).ok()?;
    // The latest frame of each page is what the page holds now.
    let mut latest: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
    for (i, f) in buf.chunks_exact(frame).enumerate() {
        if f[8..16] != header.salt {
            return None; // not a frame of this WAL: it restarted under the read
        }
        let pgno = u32::from_be_bytes([f[0], f[1], f[2], f[3]]);
        latest.insert(pgno, i);
    }
    let mut ranges = Vec::with_capacity(latest.len());
    for (pgno, i) in latest {
        let data = &buf[i * frame + FRAME_HEADER..(i + 1) * frame];
        match leaf_range(data, pgno == 1)? {
            Page::Leaf(Some(range)) => ranges.push(range),
            Page::Leaf(None) | Page::Other => {}
        }
    }
    Some(ranges)
}

enum Page {
    /// A table leaf page and its first and last rowid (`None`: no cells).
    Leaf(Option<(i64, i64)>),
    /// An interior or index page: the rows that changed are on leaf pages written too.
    Other,
}

/// What a b-tree page holds; `None` when it is no b-tree page (or not a
/// well-formed one), so the rows it belongs to cannot be named.
fn leaf_range(page: &[u8], first: bool) -> Option<Page> {
    let at = if first { 100 } else { 0 };
    match *page.get(at)? {
        0x0D => {}
        0x05 | 0x02 | 0x0A => return Some(Page::Other),
        _ => return None,
    }
    let cells = usize::from(u16::from_be_bytes([*page.get(at + 3)?, *page.get(at + 4)?]));
    let pointers = at + 8;
    let content = pointers + 2 * cells;
    if content > page.len() {
        return None;
    }
    let mut range: Option<(i64, i64)> = None;
    for c in 0..cells {
        let p = pointers + 2 * c;
        let cell = usize::from(u16::from_be_bytes([page[p], page[p + 1]]));
        if cell < content || cell >= page.len() {
            return None;
        }
        let (_, n) = varint(&page[cell..])?;
        let (rowid, _) = varint(&page[cell + n..])?;
        let rowid = rowid as i64;
        range = Some(range.map_or((rowid, rowid), |(lo, hi)| (lo.min(rowid), hi.max(rowid))));
    }
    Some(Page::Leaf(range))
}

/// SQLite's variable-length integer: the value and its length in bytes.
fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for i in 0..9 {
        let byte = *b.get(i)?;
        if i == 8 {
            return Some(((v << 8) | u64::from(byte), 9));
        }
        v = (v << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_as_sqlite_writes_them() {
        assert_eq!(varint(&[0x05]), Some((5, 1)));
        assert_eq!(varint(&[0x81, 0x00]), Some((128, 2)));
        assert_eq!(varint(&[0xff; 9]), Some((u64::MAX, 9)));
        assert_eq!(varint(&[0x81]), None);
    }

    #[test]
    fn ranges_merge_and_select() {
        let rows = ChangedRows::from_ranges(vec![(50, 60), (1, 3), (4, 9), (58, 70)]);
        assert_eq!(rows.ranges, vec![(1, 9), (50, 70)]);
        assert_eq!(rows.within(&[0, 2, 9, 10, 49, 50, 65, 71]), vec![2, 9, 50, 65]);
        assert_eq!(Changes::Unknown.among(&[3, 4]), vec![3, 4]);
    }

    #[test]
    fn a_torn_header_is_refused() {
        let mut h = [0u8; 48];
        h[12] = 1;
        h[14..16].copy_from_slice(&4096u16.to_ne_bytes());
        h[16..20].copy_from_slice(&7u32.to_ne_bytes());
        let word = |h: &[u8; 48], i: usize| u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let (mut s1, mut s2) = (0u32, 0u32);
        for i in (0..40).step_by(8) {
            s1 = s1.wrapping_add(word(&h, i)).wrapping_add(s2);
            s2 = s2.wrapping_add(word(&h, i + 4)).wrapping_add(s1);
        }
        h[40..44].copy_from_slice(&s1.to_ne_bytes());
        h[44..48].copy_from_slice(&s2.to_ne_bytes());
        assert_eq!(IndexHeader::parse(&h).map(|x| x.max_frame), Some(7));
        h[17] ^= 1; // mxFrame changed, checksum not yet
        assert_eq!(IndexHeader::parse(&h), None);
    }
}
