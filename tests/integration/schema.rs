//! The published JSON Schema of the envelope: generated from the Rust types,
//! checked in, and satisfied by real envelopes.

use crate::support;

use std::time::Duration;

use orchmirror::SectionName;
use serde_json::Value;
use support::{Binary, Fixture, InProcess, Serves, fast_settings, wait_for};

const SCHEMA_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/envelope.schema.json");

fn validator() -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(SCHEMA_PATH).expect("schema file")).expect("json");
    jsonschema::validator_for(&schema).expect("a valid JSON Schema")
}

fn assert_valid(v: &jsonschema::Validator, instance: &Value, what: &str) {
    let errors: Vec<String> = v.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{what} does not match the schema: {errors:#?}");
}

/// `UPDATE_SCHEMA=1 cargo test --test integration schema::` rewrites the file from the types.
#[test]
fn the_checked_in_schema_is_the_generated_one() {
    let generated = serde_json::to_string_pretty(&orchmirror::test_util::json_schema()).expect("json") + "\n";
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(SCHEMA_PATH, &generated).expect("write schema");
    }
    let checked_in = std::fs::read_to_string(SCHEMA_PATH).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/envelope.schema.json is stale: run UPDATE_SCHEMA=1 cargo test --test integration schema::"
    );
}

#[test]
fn real_envelopes_match_the_schema() {
    let v = validator();
    let fx = Fixture::new();
    fx.exec(
        "INSERT INTO tasks (work_item_id, stage, updated_at) VALUES ('A', 'review', 'garbage');
         INSERT INTO jobs (agent, status, started_at) VALUES ('dev', 'running', datetime('now')), ('dev', 'paused', NULL);
         INSERT INTO agent_runs (job_id, agent, pid, cost_usd) VALUES (1, 'dev', NULL, NULL);",
    );
    let db = fx.path.display().to_string();
    let bin = fx.serve(&[]);
    let normal = bin.wait_all_ok();
    assert_valid(&v, &normal, "a normal envelope");

    // Negative controls: the schema does reject what the contract forbids.
    let mut broken = normal.clone();
    broken.as_object_mut().map(|o| o.remove("sections"));
    assert!(!v.is_valid(&broken), "an envelope without sections");
    let mut broken = normal.clone();
    broken.as_object_mut().map(|o| o.remove("agents"));
    assert!(!v.is_valid(&broken), "an envelope without a built-in section's key (null when it has no data)");
    let mut broken = normal.clone();
    broken["sections"]["queue"]["status"] = Value::from("fine");
    assert!(!v.is_valid(&broken), "an unknown status");
    let mut broken = normal.clone();
    broken["queue"]["counts"].as_object_mut().map(|o| o.remove("cancelled"));
    assert!(!v.is_valid(&broken), "counts without one of the five statuses");

    let off = Binary::start(&[("ORCH_DB_PATH", &db), ("ORCH_METRICS_ENABLED", "false")]);
    let body: Value = serde_json::from_str(&support::get(&off.url("/metrics")).2).expect("json");
    assert_valid(&v, &body, "the kill switch body");
    assert!(!v.is_valid(&serde_json::json!({"schema_version": 1, "enabled": true})));

    let mirror = InProcess::start(fast_settings(&fx.path));
    mirror.wait_all_ok();
    mirror.handle.stop();
    let nulls = wait_for(Duration::from_secs(5), "null sections", || {
        let m = mirror.metrics();
        (m["sections"]["cost"]["status"] == "unavailable").then_some(m)
    });
    assert!(nulls["cost"].is_null() && nulls["stages"].is_null());
    assert_valid(&v, &nulls, "an envelope with null sections");
    let _ = SectionName::BUILT_IN;
}
