//! `stages`: one entry per task that is neither `done` nor `cancelled`.

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use serde::Serialize;

use crate::db::{text, timestamp};
use crate::section::{LoadError, Section, SectionName};
use crate::time::seconds_between;

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

impl Section for Stages {
    const NAME: SectionName = SectionName::Stages;
    type Data = Vec<TaskRow>;
    type View = Vec<StageEntry>;
    const STATEMENTS: &'static [&'static str] = &[SQL];

    fn load(&self, conn: &Connection) -> Result<Self::Data, LoadError> {
        let mut stmt = conn.prepare_cached(SQL)?;
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

    fn view(data: &Self::Data, generated_at: DateTime<Utc>) -> Self::View {
        data.iter()
            .map(|t| StageEntry {
                work_item: t.work_item.clone(),
                stage: t.stage.clone(),
                age_in_stage_s: t.updated_at.map(|u| seconds_between(u, generated_at)),
                repo: t.repo.clone(),
                task_id: t.task_id,
            })
            .collect()
    }

    fn wrap(view: Self::View) -> crate::subscribe::SectionData {
        crate::subscribe::SectionData::Stages(std::sync::Arc::new(view))
    }
}
