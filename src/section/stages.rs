//! `stages`: one entry per task that is neither `done` nor `cancelled`.

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use serde::Serialize;

use crate::section::metric::{Family, Gauge, GaugeF, Labels, Registry, labels};
use crate::section::{LoadError, Section, SectionName};
use crate::source::db::{UNDECODABLE, text, timestamp};
use crate::source::time::age_seconds;

/// The stages section.
#[derive(Debug, Default)]
pub struct Stages;

/// A task as read: its stage and when it entered it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRow {
    task_id: i64,
    work_item: Option<String>,
    stage: Option<String>,
    repo: Option<String>,
    updated_at: Option<DateTime<Utc>>,
}

/// One active task in the envelope.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[non_exhaustive]
pub struct StageEntry {
    /// `tasks.work_item_id`.
    pub work_item: Option<String>,
    /// `tasks.stage`.
    pub stage: Option<String>,
    /// `generated_at` − `tasks.updated_at`, seconds; `None` when it does not parse.
    pub age_in_stage_s: Option<f64>,
    /// `tasks.repo`.
    pub repo: Option<String>,
    /// `tasks.id`.
    pub task_id: i64,
}

// A NULL stage is unknown, not terminal, so the task is listed (with a null stage).
const SQL: &str = "
SELECT id, work_item_id, stage, repo, updated_at
  FROM tasks
 WHERE stage IS NULL OR stage NOT IN ('done', 'cancelled')
 ORDER BY id";

// The same rows through idx_tasks_stage: the index ranges around 'cancelled' and
// 'done' (numbers sort below text, blobs above), so a refresh reads the active
// tasks, not the history. No ORDER BY: with one, SQLite prefers scanning the
// table in id order; the few active tasks are sorted here instead. A NULL stage
// is its own lookup (in the same OR it would turn the plan into a scan).
const ACTIVE_SQL: &str = "
SELECT id, work_item_id, stage, repo, updated_at
  FROM tasks
 WHERE stage < 'cancelled' OR (stage > 'cancelled' AND stage < 'done') OR stage > 'done'
UNION ALL
SELECT id, work_item_id, stage, repo, updated_at FROM tasks WHERE stage IS NULL";

fn rows(conn: &Connection, sql: &str) -> Result<Vec<TaskRow>, LoadError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(TaskRow {
            task_id: row.get(0)?,
            work_item: text(row.get_ref(1)?),
            stage: text(row.get_ref(2)?),
            repo: text(row.get_ref(3)?),
            updated_at: timestamp(row.get_ref(4)?),
        });
    }
    Ok(out)
}

impl Section for Stages {
    const NAME: SectionName = SectionName::STAGES;
    type Data = Vec<TaskRow>;
    type View = Vec<StageEntry>;
    const STATEMENTS: &'static [&'static str] = &[SQL];
    const ROWS_SQL: Option<&'static str> = Some("SELECT COUNT(*) FROM tasks");

    fn load(&self, conn: &Connection) -> Result<Self::Data, LoadError> {
        rows(conn, SQL)
    }

    /// Only active tasks can change (a task's stage moves forward and done and
    /// cancelled are final), and the section is exactly the active tasks: read
    /// them through the index, no state needed.
    fn refresh(&self, conn: &Connection) -> Result<Self::Data, LoadError> {
        let mut active = rows(conn, ACTIVE_SQL)?;
        active.sort_unstable_by_key(|t| t.task_id);
        Ok(active)
    }

    fn view(data: &Self::Data, generated_at: DateTime<Utc>) -> Self::View {
        data.iter()
            .map(|t| StageEntry {
                work_item: t.work_item.clone(),
                stage: t.stage.clone(),
                age_in_stage_s: t.updated_at.and_then(|u| age_seconds(u, generated_at)),
                repo: t.repo.clone(),
                task_id: t.task_id,
            })
            .collect()
    }

    /// Per stage: how many tasks, and the oldest parseable age.
    fn expose(view: &Self::View, _: Option<u64>, registry: &mut Registry) {
        let mut per_stage: std::collections::BTreeMap<&str, (i64, Option<f64>)> = Default::default();
        for s in view {
            let entry = per_stage.entry(s.stage.as_deref().unwrap_or(UNDECODABLE)).or_default();
            entry.0 += 1;
            entry.1 = match (entry.1, s.age_in_stage_s) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
        }
        let active = Family::<Labels, Gauge>::default();
        let oldest = Family::<Labels, GaugeF>::default();
        for (stage, (n, max_age)) in per_stage {
            let l = labels(&[("stage", stage)]);
            active.get_or_create(&l).set(n);
            if let Some(age) = max_age {
                oldest.get_or_create(&l).set(age);
            }
        }
        registry.register("orch_tasks_active", "Tasks in each stage that is neither done nor cancelled", active);
        registry.register("orch_task_stage_age_seconds_max", "Longest time a task has been in each stage", oldest);
    }
}
