use super::*;
use crate::section::SectionName;
use crate::section::served::change_shape;
use serde_json::json;

fn at(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap_or_default()
}

fn agent(job: i64, runtime: f64, ticks: Option<u64>, sampled: &str) -> Value {
    json!({"agent": "dev", "job_id": job, "runtime_s": runtime, "cpu_ticks": ticks,
           "cpu_sampled_at": ticks.map(|_| sampled)})
}

/// The change and the value a reader gets by applying it.
fn change_of(section: SectionName, base: &Held, new: &Value, at: DateTime<Utc>) -> Option<(Map<String, Value>, Value)> {
    let whole = serde_json::to_vec(new).map(|j| j.len()).unwrap_or(0);
    match diff(change_shape(section), base, new, at, whole) {
        Change::Whole => None,
        Change::Fields(f) => {
            let applied = apply(&base.value, base.at, &f, at)?;
            Some((f, applied))
        }
    }
}

#[test]
fn a_tick_only_change_carries_the_moved_ticks_and_one_sample_time() {
    let rows = |t: u64, s: &str| -> Value {
        (0..50).map(|j| agent(j, 10.0 + j as f64, Some(if j < 2 { t } else { 7 }), s)).collect()
    };
    let base = Held { value: rows(100, "2026-01-01T00:00:00.000Z"), at: at(0) };
    let new: Value = (0..50)
        .map(|j| agent(j, 11.0 + j as f64, Some(if j < 2 { 130 } else { 7 }), "2026-01-01T00:00:01.000Z"))
        .collect();
    let (change, applied) = change_of(SectionName::AGENTS, &base, &new, at(1)).expect("a change, not the whole");
    assert_eq!(applied, new);
    assert_eq!(change["rows"]["fill"], json!({"cpu_sampled_at": "2026-01-01T00:00:01.000Z"}));
    assert_eq!(change["rows"]["changed"], json!([{"job_id": 0, "cpu_ticks": 130}, {"job_id": 1, "cpu_ticks": 130}]));
    assert!(change["rows"].get("order").is_none() && change["rows"].get("added").is_none());
    assert!(serde_json::to_vec(&change).map(|j| j.len()).unwrap_or(usize::MAX) < 300, "{change:?}");
}

#[test]
fn rows_come_and_go_by_key_and_a_new_order_is_said() {
    let base =
        Held { value: json!([agent(1, 5.0, None, ""), agent(2, 6.0, None, ""), agent(3, 7.0, None, "")]), at: at(0) };
    let new = json!([agent(3, 9.0, None, ""), agent(1, 7.0, None, ""), agent(4, 0.0, None, "")]);
    let (change, applied) = change_of(SectionName::AGENTS, &base, &new, at(2)).expect("a change");
    assert_eq!(applied, new);
    assert_eq!(change["rows"]["removed"], json!([2]));
    assert_eq!(change["rows"]["added"], json!([agent(4, 0.0, None, "")]));
    assert_eq!(change["rows"]["order"], json!([3, 1, 4]));
    assert!(change["rows"].get("changed").is_none(), "the ages moved by the rule: {change:?}");
}

#[test]
fn an_age_the_rule_cannot_move_is_sent_and_fields_are_set() {
    // A stored time ahead of the clock: age 0 (clamped) at the base, 0.5 s a second later.
    let stages = |first_age: f64, others: f64| -> Value {
        (1..6)
            .map(|t| {
                json!({"task_id": t, "work_item": "ORCH-1", "stage": "review",
                            "age_in_stage_s": if t == 1 { first_age } else { others + t as f64 }})
            })
            .collect()
    };
    let base = Held { value: stages(0.0, 10.0), at: at(0) };
    let new = stages(0.5, 11.0);
    let (change, applied) = change_of(SectionName::STAGES, &base, &new, at(1)).expect("a change");
    assert_eq!(applied, new);
    assert_eq!(change["rows"]["changed"], json!([{"task_id": 1, "age_in_stage_s": 0.5}]));

    let queue = |queued: u64, age: Option<f64>| {
        json!({"counts": {"queued": queued, "running": 1, "paused": 0, "done": 9000, "failed": 12},
               "depth": queued, "oldest_queued_age_s": age, "retries": {"retried_jobs": 40, "max_attempts": 3},
               "breaker": null, "max_concurrency": null})
    };
    let base = Held { value: queue(3, Some(1.25)), at: at(0) };
    let (change, applied) = change_of(SectionName::QUEUE, &base, &queue(4, Some(4.25)), at(3)).expect("a change");
    assert_eq!(applied, queue(4, Some(4.25)));
    assert_eq!(change["set"]["depth"], 4);
    assert_eq!(change["set"].as_object().map(|s| s.len()), Some(2), "counts and depth; the age moved by the rule");
    let (change, _) = change_of(SectionName::QUEUE, &base, &queue(3, Some(1.25)), at(0)).expect("no change");
    assert!(change.get("set").is_none() && change.get("rows").is_none(), "{change:?}");
}

#[test]
fn cost_sets_its_aggregate_and_changes_its_running_rows() {
    let cost = |runs: u64, usd: Option<f64>| {
        json!({"running": [{"job_id": 1, "run_id": 9, "cost_usd": usd}, {"job_id": 2, "run_id": 10, "cost_usd": null}],
               "aggregate": {"runs": runs, "cost_usd": 3.5}})
    };
    let base = Held { value: cost(5, None), at: at(0) };
    let (change, applied) = change_of(SectionName::COST, &base, &cost(6, Some(0.25)), at(1)).expect("a change");
    assert_eq!(applied, cost(6, Some(0.25)));
    assert_eq!(change["set"], json!({"aggregate": {"runs": 6, "cost_usd": 3.5}}));
    assert_eq!(change["rows"]["at"], "running");
    assert_eq!(change["rows"]["changed"], json!([{"job_id": 1, "cost_usd": 0.25}]));
}

#[test]
fn what_cannot_be_described_by_key_or_is_not_smaller_goes_whole() {
    let base = Held { value: json!([agent(1, 5.0, None, "")]), at: at(0) };
    let twice = json!([agent(2, 5.0, None, ""), agent(2, 5.0, None, "")]);
    assert!(change_of(SectionName::AGENTS, &base, &twice, at(0)).is_none(), "a key twice");
    assert!(change_of(SectionName::AGENTS, &base, &json!(null), at(0)).is_none(), "no value now");
    let other = json!([agent(7, 1.0, Some(3), "x")]);
    assert!(change_of(SectionName::AGENTS, &base, &other, at(0)).is_none(), "every row new: the whole is smaller");
    let host = |b: u64| json!({"a": "a long value that stays the same", "b": b});
    let base = Held { value: host(2), at: at(0) };
    let (change, applied) = change_of(SectionName::new("host_things"), &base, &host(3), at(0)).expect("fields");
    assert_eq!((change["set"].clone(), applied), (json!({"b": 3}), host(3)));
}
