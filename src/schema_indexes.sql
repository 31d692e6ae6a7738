-- The indexes a production orchestrator database has. The mirror must be
-- correct without them; benchmarks measure with and without.
CREATE INDEX IF NOT EXISTS idx_tasks_stage     ON tasks(stage);
CREATE INDEX IF NOT EXISTS idx_jobs_status     ON jobs(status);
CREATE INDEX IF NOT EXISTS idx_agent_runs_job  ON agent_runs(job_id);
