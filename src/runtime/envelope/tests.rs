//! Unit tests of `envelope`.

use super::*;
use crate::runtime::messages::SectionReply;
use crate::source::time::truncate_to_second;
use std::sync::Arc;

#[test]
fn the_fast_json_is_the_serde_json() -> Result<(), Box<dyn std::error::Error>> {
    let (_dir, conn) = crate::source::db::test_db(
        "INSERT INTO tasks (work_item_id, stage) VALUES ('A \"quoted\" é', 'review');
         INSERT INTO jobs (agent, status, attempts, started_at) VALUES ('dev', 'running', 2, datetime('now'));
         INSERT INTO agent_runs (job_id, agent, cost_usd, input_tokens) VALUES (1, 'dev', 0.5, 10);",
    )?;
    let at = chrono::Utc::now();
    let answers = vec![
        Answer::of::<Stages>(Ok(SectionReply::ok(Arc::new(Stages.load(&conn)?), at, 1))),
        Answer::of::<Queue>(Ok(SectionReply::ok(Arc::new(Queue::new().load(&conn)?), at, 1))),
        Answer::of::<Agents>(Err(actix::MailboxError::Timeout)),
        Answer::of::<Cost>(Ok(SectionReply::ok(Arc::new(Cost::new().load(&conn)?), at, 1))),
    ];
    let envelope = assemble(answers, Clock::now(), Duration::from_millis(200));
    assert_eq!(String::from_utf8(envelope.to_json()?)?, serde_json::to_string(&envelope)?);
    Ok(())
}

/// A value is rendered and serialised once per (data, second) and shared
/// by every response in that second; new data or a new second renders again.
#[test]
fn renderings_are_shared_within_a_second_and_made_again_after() -> Result<(), Box<dyn std::error::Error>> {
    let (_dir, conn) = crate::source::db::test_db(
        "INSERT INTO tasks (work_item_id, stage, updated_at) VALUES ('A', 'review', datetime('now', '-5 seconds'));
         INSERT INTO jobs (agent, status, started_at) VALUES ('dev', 'running', datetime('now'));
         INSERT INTO agent_runs (job_id, agent, cost_usd) VALUES (1, 'dev', 0.5);",
    )?;
    let at = chrono::Utc::now();
    let stages = Arc::new(Stages.load(&conn)?);
    let agents = Arc::new(Agents::new(Duration::from_secs(10)).load(&conn)?);
    let cost = Arc::new(Cost::new().load(&conn)?);
    let answers = |stages: &Arc<_>| {
        vec![
            Answer::of::<Stages>(Ok(SectionReply::ok(Arc::clone(stages), at, 1))),
            Answer::of::<Agents>(Ok(SectionReply::ok(Arc::clone(&agents), at, 1))),
            Answer::of::<Cost>(Ok(SectionReply::ok(Arc::clone(&cost), at, 1))),
        ]
    };
    let cache = RenderCache::default();
    let t0 = Clock::at(truncate_to_second(at) + chrono::TimeDelta::milliseconds(100));
    let t1 = Clock::at(t0.now + chrono::TimeDelta::milliseconds(500));
    let t2 = Clock::at(t0.now + chrono::TimeDelta::milliseconds(1000));
    let json = |e: &Envelope, name: SectionName| e.data[name].as_ref().map(|d| d.json().map(|j| j.as_ptr()));
    let first = assemble_with(answers(&stages), t0, Duration::from_millis(200), &cache);
    let same_second = assemble_with(answers(&stages), t1, Duration::from_millis(200), &cache);
    for name in [SectionName::STAGES, SectionName::AGENTS, SectionName::COST] {
        assert_eq!(json(&first, name).transpose()?, json(&same_second, name).transpose()?, "{name} is shared");
    }
    assert_ne!(first.sections[SectionName::STAGES].age_ms, same_second.sections[SectionName::STAGES].age_ms);
    let next_second = assemble_with(answers(&stages), t2, Duration::from_millis(200), &cache);
    let age = |e: &Envelope| e.stages().and_then(|s| s[0].age_in_stage_s);
    assert_eq!(age(&next_second).zip(age(&first)).map(|(b, a)| b - a), Some(1.0), "ages move with the second");
    let fresh = Arc::new(Stages.load(&conn)?);
    let refreshed = assemble_with(answers(&fresh), t1, Duration::from_millis(200), &cache);
    assert_ne!(
        json(&first, SectionName::STAGES).transpose()?,
        json(&refreshed, SectionName::STAGES).transpose()?,
        "new data is rendered again"
    );
    assert_eq!(refreshed.to_json()?, assemble(answers(&fresh), t1, Duration::from_millis(200)).to_json()?);
    Ok(())
}
