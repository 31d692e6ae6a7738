//! The cursor every event carries as its `id:`: the broker's instance and
//! each section's sequence number and status. A reconnecting client's
//! `Last-Event-ID` is read back with it.

use crate::section::served::SERVED_WITH;
use crate::section::{SectionName, Status};

/// One section's place in a cursor: its sequence number and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Key {
    pub(super) seq: u64,
    pub(super) status: Status,
}

/// Every section's key, in envelope order, as one `id:` value:
/// `<instance>.<seq><status letter>.…`, for example `9c1e….12o.40o.7s.3o`.
pub(super) fn cursor(instance: &str, keys: &[Key]) -> String {
    let mut out = String::with_capacity(instance.len() + 8 * keys.len());
    out.push_str(instance);
    for k in keys {
        out.push('.');
        out.push_str(&k.seq.to_string());
        out.push(k.status.letter());
    }
    out
}

/// The keys a cursor names, when it is this instance's and could have been
/// sent by it (no sequence number ahead of `now`).
pub(super) fn parse_cursor(instance: &str, raw: &str, now: &[Key]) -> Option<Vec<Key>> {
    let mut fields = raw.trim().split('.');
    if fields.next()? != instance {
        return None;
    }
    let keys: Vec<Key> = fields
        .map(|f| {
            let status = Status::from_letter(f.chars().last()?)?;
            let seq = f[..f.len() - 1].parse::<u64>().ok()?;
            Some(Key { seq, status })
        })
        .collect::<Option<_>>()?;
    (keys.len() == now.len() && keys.iter().zip(now).all(|(k, n)| k.seq <= n.seq)).then_some(keys)
}

/// Whether section `i`'s served value differs between two cursors' keys:
/// its own key changed, or the key of a section it is made with.
pub(super) fn changed(sections: &[SectionName], i: usize, from: &[Key], to: &[Key]) -> bool {
    if from[i] != to[i] {
        return true;
    }
    SERVED_WITH
        .iter()
        .filter(|p| p.section == sections[i])
        .filter_map(|p| sections.iter().position(|n| *n == p.with))
        .any(|j| from[j].seq != to[j].seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[(u64, Status)]) -> Vec<Key> {
        k.iter().map(|&(seq, status)| Key { seq, status }).collect()
    }

    #[test]
    fn a_cursor_reads_back_only_on_its_own_instance_and_never_ahead() {
        let now = keys(&[(12, Status::Ok), (40, Status::Stale), (0, Status::Pending), (3, Status::Timeout)]);
        let id = cursor("abc", &now);
        assert_eq!(id, "abc.12o.40s.0p.3t");
        assert_eq!(parse_cursor("abc", &id, &now), Some(now.clone()));
        assert_eq!(parse_cursor("xyz", &id, &now), None, "another instance");
        let ahead = cursor("abc", &keys(&[(13, Status::Ok), (40, Status::Ok), (0, Status::Ok), (3, Status::Ok)]));
        assert_eq!(parse_cursor("abc", &ahead, &now), None, "a sequence number this instance never sent");
        for garbage in
            ["", "abc", "abc.1o.2o.3o", "abc.1o.2o.3o.4o.5o", "abc.xo.1o.2o.3o", "abc.1q.1o.2o.3o", "abc.o.1o.2o.3o"]
        {
            assert_eq!(parse_cursor("abc", garbage, &now), None, "{garbage:?}");
        }
    }

    #[test]
    fn cost_changes_with_the_agents_it_is_served_with() {
        let names = [SectionName::STAGES, SectionName::QUEUE, SectionName::AGENTS, SectionName::COST];
        let from = keys(&[(1, Status::Ok), (1, Status::Ok), (1, Status::Ok), (1, Status::Ok)]);
        let to = keys(&[(1, Status::Ok), (1, Status::Ok), (2, Status::Ok), (1, Status::Ok)]);
        let which: Vec<bool> = (0..4).map(|i| changed(&names, i, &from, &to)).collect();
        assert_eq!(which, [false, false, true, true]);
        let stale = keys(&[(1, Status::Stale), (1, Status::Ok), (1, Status::Ok), (1, Status::Ok)]);
        let which: Vec<bool> = (0..4).map(|i| changed(&names, i, &from, &stale)).collect();
        assert_eq!(which, [true, false, false, false], "a status change alone is a change");
    }
}
