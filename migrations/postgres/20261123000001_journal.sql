-- The journal: the cqrs-es `events` table (the columns postgres-es reads and writes) plus
-- what subscriptions and auditors need.
--
-- `position` is a monotonic global number, but positions are assigned at INSERT and
-- transactions commit in any order, so a reader that only remembers "the last position I
-- saw" can skip an event whose transaction commits late. `transaction_id` (the 64-bit
-- xid8 of the writing transaction) fixes that: readers take only rows whose transaction is
-- older than every transaction still in flight (`pg_snapshot_xmin`) and order by
-- (transaction_id, position), so nothing can later appear behind their cursor.
CREATE TABLE events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    -- `json`, not `jsonb`: the text is kept exactly as written, which the hash chain covers.
    payload        json                         NOT NULL,
    metadata       json                         NOT NULL,
    position       bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    transaction_id bigint                       NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    recorded_at    timestamptz                  NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE INDEX events_subscription_order ON events (transaction_id, position);

-- Snapshots are not used today; postgres-es expects the table to exist for snapshot stores.
CREATE TABLE snapshots
(
    aggregate_type   text                                 NOT NULL,
    aggregate_id     text                                 NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          json                                 NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);

-- Wake subscribers in every app instance when an append commits (NOTIFY is delivered at
-- commit, once per transaction and channel).
CREATE FUNCTION events_notify() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    PERFORM pg_notify('latchkey_journal', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_notify
    AFTER INSERT ON events
    FOR EACH STATEMENT
EXECUTE FUNCTION events_notify();

-- One row per subscriber: where it is in the journal. Updated in the same transaction as
-- the subscriber's own writes, so its effects happen exactly once.
CREATE TABLE subscription_checkpoints
(
    name           text PRIMARY KEY,
    transaction_id bigint      NOT NULL,
    position       bigint      NOT NULL,
    events_handled bigint      NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
