-- The orchestrator's tables, as the orchestrator creates them. orchmirror never
-- runs this on a real database: tests, benchmarks and demo mode use it to build
-- their own. Timestamps are UTC text from datetime('now'); nullable columns
-- mean "unknown" and are reported as JSON null, never as zero.

CREATE TABLE IF NOT EXISTS tasks (
    id            INTEGER PRIMARY KEY,
    work_item_id  TEXT    NOT NULL,
    repo          TEXT,
    stage         TEXT    NOT NULL,
    created_at    TEXT    NOT NULL DEFAULT (datetime('now')),
    updated_at    TEXT    NOT NULL DEFAULT (datetime('now'))
);

CREATE TABLE IF NOT EXISTS jobs (
    id            INTEGER PRIMARY KEY,
    task_id       INTEGER REFERENCES tasks(id),
    repo          TEXT,
    agent         TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT    NOT NULL DEFAULT (datetime('now')),
    started_at    TEXT,
    finished_at   TEXT
);

CREATE TABLE IF NOT EXISTS agent_runs (
    id                     INTEGER PRIMARY KEY,
    job_id                 INTEGER NOT NULL REFERENCES jobs(id),
    agent                  TEXT    NOT NULL,
    pid                    INTEGER,
    model                  TEXT,
    effort                 TEXT,
    started_at             TEXT    NOT NULL DEFAULT (datetime('now')),
    finished_at            TEXT,
    cost_usd               REAL,
    input_tokens           INTEGER,
    output_tokens          INTEGER,
    cache_read_tokens      INTEGER,
    cache_creation_tokens  INTEGER
);
