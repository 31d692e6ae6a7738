//! The changes-only form (`?changes=1`): a `change` event carries what a
//! section's served value changed since the one every such reader holds,
//! not the whole value again (README, "The stream", and
//! `docs/change.schema.json`).
//!
//! A reader applies a change to the value it holds for the section:
//!
//! 1. `data` present: the value is `data`, whole. Nothing else applies.
//! 2. Ages move on: each field named in `ages` that holds a number, at the
//!    value's top level or in its rows, becomes `round(x × 1000 + Δ) / 1000`,
//!    where Δ is the event's `generated_at` minus the `generated_at` of the
//!    value held, in milliseconds.
//! 3. `set`: each top-level field is replaced.
//! 4. `rows` (the array at `rows.at`, or the value itself without `at`):
//!    rows whose key is in `removed` go; each field in `fill` takes that
//!    value in every row where it is not null; each entry of `changed`
//!    replaces the fields it names in the row with its key; `added` rows are
//!    appended; `order`, when present, is every key in the new order.
//!
//! The broker makes each change against the value it last sent
//! ([`Held`]), applies it with [`apply`] as a reader would, and sends the
//! whole value instead when that does not give the new value exactly or
//! would not be smaller. Every reader of the form holds that value or a
//! rendering of the same data at a later second (it joined, or was
//! resynchronised, since), for which the age rule gives the same result:
//! ages that the rule cannot move exactly (a stored time ahead of the clock,
//! clamped to 0 or null) are sent as changed fields.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::section::served::{ChangeShape, Rows};

/// A section's value as the form's readers hold it, and the `generated_at` it was rendered at.
#[derive(Debug, Clone)]
pub(super) struct Held {
    pub(super) value: Value,
    pub(super) at: DateTime<Utc>,
}

/// What a `change` event says of the section's data, after its head.
pub(super) enum Change {
    /// The whole value (also when there was none, or there is none now).
    Whole,
    /// The fields of the change (`ages`, `set`, `rows`); empty when only the ages moved.
    Fields(Map<String, Value>),
}

/// The change from `base` to `new` (rendered at `at`), checked by applying it.
/// `whole_len`: the length of `new`'s JSON, which the change must undercut.
pub(super) fn diff(shape: ChangeShape, base: &Held, new: &Value, at: DateTime<Utc>, whole_len: usize) -> Change {
    let Some(fields) = fields(shape, base, new, at) else {
        return Change::Whole;
    };
    let small = serde_json::to_vec(&fields).is_ok_and(|json| json.len() < whole_len);
    if small && apply(&base.value, base.at, &fields, at).as_ref() == Some(new) {
        Change::Fields(fields)
    } else {
        Change::Whole
    }
}

fn fields(shape: ChangeShape, base: &Held, new: &Value, at: DateTime<Utc>) -> Option<Map<String, Value>> {
    let mut predicted = base.value.clone();
    let by_ms = (at - base.at).num_milliseconds();
    advance(&mut predicted, shape, by_ms);
    let mut out = Map::new();
    if !shape.ages.is_empty() {
        out.insert("ages".into(), shape.ages.iter().map(|a| Value::from(*a)).collect());
    }
    match (shape.rows, &predicted, new) {
        (Some(rows @ Rows { at: None, .. }), Value::Array(old), Value::Array(new)) => {
            insert_rows(&mut out, rows, old, new)?;
        }
        (rows, Value::Object(old), Value::Object(new)) => {
            if old.len() != new.len() || old.keys().any(|k| !new.contains_key(k)) {
                return None;
            }
            let at = rows.and_then(|r| r.at);
            let set: Map<String, Value> = new
                .iter()
                .filter(|(k, v)| Some(k.as_str()) != at && old.get(*k) != Some(*v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if !set.is_empty() {
                out.insert("set".into(), Value::Object(set));
            }
            if let Some(rows) = rows.filter(|r| r.at.is_some()) {
                let field = rows.at.unwrap_or_default();
                let (Some(Value::Array(old)), Some(Value::Array(new))) = (old.get(field), new.get(field)) else {
                    return None;
                };
                insert_rows(&mut out, rows, old, new)?;
            }
        }
        _ => return None,
    }
    Some(out)
}

/// For one field: how many rows held it (not null), and for each value it
/// now has, in how many of them and how many of those it changed to.
type Tally<'a> = (usize, HashMap<String, (usize, usize, &'a Value)>);

/// Adds `rows` to `out` when the rows changed; `None` when they cannot be
/// described by key (a row without its key, a key twice, a row whose
/// fields are not the same set).
fn insert_rows(out: &mut Map<String, Value>, rows: Rows, old: &[Value], new: &[Value]) -> Option<()> {
    let key_of = |row: &Value| row.get(rows.key).map(Value::to_string);
    let mut old_by_key: HashMap<String, &Map<String, Value>> = HashMap::with_capacity(old.len());
    let mut old_order = Vec::with_capacity(old.len());
    for row in old {
        let k = key_of(row)?;
        if old_by_key.insert(k.clone(), row.as_object()?).is_some() {
            return None;
        }
        old_order.push(k);
    }
    let mut new_keys = Vec::with_capacity(new.len());
    let mut seen = HashSet::with_capacity(new.len());
    for row in new {
        let k = key_of(row)?;
        row.as_object()?;
        if !seen.insert(k.clone()) {
            return None;
        }
        new_keys.push(k);
    }
    let removed: Vec<Value> = old
        .iter()
        .filter(|r| key_of(r).is_some_and(|k| !seen.contains(&k)))
        .filter_map(|r| r.get(rows.key).cloned())
        .collect();

    // `fill`: a field that changed to one value in more than half of the
    // rows that kept their key and hold it (not null), and in at least two.
    let mut tally: HashMap<&str, Tally<'_>> = HashMap::new();
    for (k, row) in new_keys.iter().zip(new) {
        let (Some(before), Some(after)) = (old_by_key.get(k), row.as_object()) else { continue };
        for (field, v) in after {
            if before.get(field).is_some_and(|b| !b.is_null()) {
                let (held, values) = tally.entry(field.as_str()).or_default();
                *held += 1;
                let slot = values.entry(v.to_string()).or_insert((0, 0, v));
                slot.0 += 1;
                if before.get(field) != Some(v) {
                    slot.1 += 1;
                }
            }
        }
    }
    let mut fill = Map::new();
    for (field, (held, values)) in tally {
        if let Some((n, moved, v)) = values.into_values().max_by_key(|(n, moved, _)| (*moved, *n))
            && moved >= 2
            && 2 * n > held
        {
            fill.insert(field.to_owned(), v.clone());
        }
    }

    let mut changed = Vec::new();
    let mut added = Vec::new();
    for (k, row) in new_keys.iter().zip(new) {
        let after = row.as_object()?;
        if 2 * (changed.len() + added.len()) > new.len() + 2 {
            return None; // most rows changed: the whole value is smaller
        }
        let Some(before) = old_by_key.get(k) else {
            added.push(row.clone());
            continue;
        };
        if before.len() != after.len() || before.keys().any(|f| !after.contains_key(f)) {
            return None;
        }
        let mut delta = Map::new();
        for (field, v) in after {
            let filled = match (fill.get(field), before.get(field)) {
                (Some(f), Some(b)) if !b.is_null() => f,
                (_, b) => b.unwrap_or(&Value::Null),
            };
            if filled != v {
                delta.insert(field.clone(), v.clone());
            }
        }
        if !delta.is_empty() {
            delta.insert(rows.key.to_owned(), row.get(rows.key)?.clone());
            changed.push(Value::Object(delta));
        }
    }
    let mut order_after: Vec<String> = old_order.iter().filter(|k| seen.contains(*k)).cloned().collect();
    order_after.extend(added.iter().filter_map(key_of));
    let reordered = order_after != new_keys;

    if removed.is_empty() && fill.is_empty() && changed.is_empty() && added.is_empty() && !reordered {
        return Some(());
    }
    let mut r = Map::new();
    if let Some(at) = rows.at {
        r.insert("at".into(), at.into());
    }
    r.insert("key".into(), rows.key.into());
    if !removed.is_empty() {
        r.insert("removed".into(), Value::Array(removed));
    }
    if !fill.is_empty() {
        r.insert("fill".into(), Value::Object(fill));
    }
    if !changed.is_empty() {
        r.insert("changed".into(), Value::Array(changed));
    }
    if !added.is_empty() {
        r.insert("added".into(), Value::Array(added));
    }
    if reordered {
        r.insert("order".into(), new.iter().filter_map(|row| row.get(rows.key).cloned()).collect());
    }
    out.insert("rows".into(), Value::Object(r));
    Some(())
}

/// Moves every age field of `value` (top level and rows) on by `by_ms`.
fn advance(value: &mut Value, shape: ChangeShape, by_ms: i64) {
    advance_fields(value, shape.ages, by_ms);
}

fn advance_fields(value: &mut Value, ages: &[&str], by_ms: i64) {
    if ages.is_empty() {
        return;
    }
    match value {
        Value::Array(rows) => rows.iter_mut().for_each(|row| advance_object(row, ages, by_ms)),
        Value::Object(obj) => {
            for field in ages {
                if let Some(v) = obj.get_mut(*field) {
                    move_on(v, by_ms);
                }
            }
            for v in obj.values_mut() {
                if let Value::Array(rows) = v {
                    rows.iter_mut().for_each(|row| advance_object(row, ages, by_ms));
                }
            }
        }
        _ => {}
    }
}

fn advance_object(row: &mut Value, ages: &[&str], by_ms: i64) {
    if let Value::Object(obj) = row {
        for field in ages {
            if let Some(v) = obj.get_mut(*field) {
                move_on(v, by_ms);
            }
        }
    }
}

/// `round(x × 1000 + by_ms) / 1000`, for a number.
fn move_on(v: &mut Value, by_ms: i64) {
    if let Some(x) = v.as_f64() {
        let ms = (x * 1000.0).round() as i64 + by_ms;
        if let Some(n) = serde_json::Number::from_f64(ms as f64 / 1000.0) {
            *v = Value::Number(n);
        }
    }
}

/// A reader's application of `change` (its fields after the head) to
/// `held`, rendered at `held_at`, for an event generated at `at`; `None`
/// when it does not apply (the shape differs).
pub(super) fn apply(
    held: &Value,
    held_at: DateTime<Utc>,
    change: &Map<String, Value>,
    at: DateTime<Utc>,
) -> Option<Value> {
    let mut value = held.clone();
    if let Some(Value::Array(ages)) = change.get("ages") {
        let ages: Vec<&str> = ages.iter().filter_map(Value::as_str).collect();
        advance_fields(&mut value, &ages, (at - held_at).num_milliseconds());
    }
    if let Some(Value::Object(set)) = change.get("set") {
        let obj = value.as_object_mut()?;
        for (k, v) in set {
            obj.insert(k.clone(), v.clone());
        }
    }
    if let Some(Value::Object(rows)) = change.get("rows") {
        let key = rows.get("key")?.as_str()?;
        let list = match rows.get("at").and_then(Value::as_str) {
            Some(at) => value.get_mut(at)?.as_array_mut()?,
            None => value.as_array_mut()?,
        };
        let k = |row: &Value| row.get(key).map(Value::to_string);
        if let Some(Value::Array(removed)) = rows.get("removed") {
            let gone: HashSet<String> = removed.iter().map(Value::to_string).collect();
            list.retain(|row| k(row).is_some_and(|k| !gone.contains(&k)));
        }
        if let Some(Value::Object(fill)) = rows.get("fill") {
            for row in list.iter_mut() {
                let obj = row.as_object_mut()?;
                for (f, v) in fill {
                    if obj.get(f).is_some_and(|old| !old.is_null()) {
                        obj.insert(f.clone(), v.clone());
                    }
                }
            }
        }
        if let Some(Value::Array(changed)) = rows.get("changed") {
            let at: HashMap<String, usize> = list.iter().enumerate().filter_map(|(i, r)| Some((k(r)?, i))).collect();
            for delta in changed {
                let row = list.get_mut(*at.get(&k(delta)?)?)?.as_object_mut()?;
                for (f, v) in delta.as_object()? {
                    row.insert(f.clone(), v.clone());
                }
            }
        }
        if let Some(Value::Array(added)) = rows.get("added") {
            list.extend(added.iter().cloned());
        }
        if let Some(Value::Array(order)) = rows.get("order") {
            let mut by_key: HashMap<String, Value> = list.drain(..).filter_map(|row| Some((k(&row)?, row))).collect();
            for key in order {
                list.push(by_key.remove(&key.to_string())?);
            }
        }
    }
    Some(value)
}

#[cfg(test)]
mod tests;
