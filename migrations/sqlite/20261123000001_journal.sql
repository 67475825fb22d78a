-- The journal: the cqrs-es `events` table (the columns sqlite-es reads and writes) plus
-- what subscriptions and auditors need. SQLite runs one writer at a time, so positions
-- are assigned and committed in the same order and `transaction_id` is always 0; the
-- column exists so that both backends share one cursor shape.
CREATE TABLE events
(
    aggregate_type text                          NOT NULL,
    aggregate_id   text                          NOT NULL,
    sequence       integer CHECK (sequence >= 0) NOT NULL,
    event_type     text                          NOT NULL,
    event_version  text                          NOT NULL,
    payload        text                          NOT NULL,
    metadata       text                          NOT NULL,
    -- Filled by the trigger below; never NULL once the INSERT statement has finished.
    position       integer UNIQUE,
    transaction_id integer                       NOT NULL DEFAULT 0,
    recorded_at    text                          NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
) STRICT;

-- An explicit column rather than the rowid: VACUUM may renumber rowids.
CREATE TRIGGER events_assign_position
    AFTER INSERT ON events
    FOR EACH ROW
    WHEN NEW.position IS NULL
BEGIN
    UPDATE events
    SET position = (SELECT COALESCE(MAX(position), 0) + 1 FROM events)
    WHERE rowid = NEW.rowid;
END;

CREATE TABLE snapshots
(
    aggregate_type   text                                  NOT NULL,
    aggregate_id     text                                  NOT NULL,
    last_sequence    integer CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot integer CHECK (current_snapshot >= 0) NOT NULL,
    payload          text                                  NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
) STRICT;

CREATE TABLE subscription_checkpoints
(
    name           text PRIMARY KEY,
    transaction_id integer NOT NULL,
    position       integer NOT NULL,
    events_handled integer NOT NULL DEFAULT 0,
    updated_at     text    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;
