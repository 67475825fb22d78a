-- Work a workflow decided to do later: retry a TTLock call after a backoff, delete a door
-- code when its window ends. Keyed so that deciding the same thing twice (a workflow
-- re-reading an event after a crash) schedules it once. Times are Unix milliseconds on
-- both backends so that "due" compares the same way everywhere.
CREATE TABLE scheduled_jobs
(
    job_key    text PRIMARY KEY,
    due_at_ms  bigint NOT NULL,
    job        text   NOT NULL,
    attempts   integer NOT NULL DEFAULT 0,
    last_error text
);

CREATE INDEX scheduled_jobs_due ON scheduled_jobs (due_at_ms);
