-- Workflow reactions that failed for good (issue 14): a dead-letter row per (subscriber,
-- journal position), so one poison event is set aside where an operator sees it instead
-- of halting the workflow for every other aggregate. `status` moves parked →
-- retry_requested → (resolved | parked again), or parked → skipped; who asked for a retry
-- or a skip, and when, stays on the row. Times are Unix milliseconds on both backends.
CREATE TABLE parked_reactions
(
    parked_id      text PRIMARY KEY,
    subscriber     text    NOT NULL,
    position       integer NOT NULL,
    aggregate_type text    NOT NULL,
    aggregate_id   text    NOT NULL,
    sequence       integer NOT NULL,
    event_type     text    NOT NULL,
    error          text    NOT NULL,
    attempts       integer NOT NULL,
    status         text    NOT NULL CHECK (status IN ('parked', 'retry_requested', 'resolved', 'skipped')),
    parked_at_ms   integer NOT NULL,
    updated_at_ms  integer NOT NULL,
    -- The operator who last asked for a retry or a skip, with their note.
    acted_by       text,
    note           text,
    UNIQUE (subscriber, position)
) STRICT;

CREATE INDEX parked_reactions_status ON parked_reactions (status, subscriber);
