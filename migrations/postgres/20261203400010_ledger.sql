-- The verifiable ledger (issue 19): a global RFC 6962 Merkle tree over the journal in
-- position order, sealed by a background task, and signed checkpoints of it.
--
-- 1. Positions are now handed out *after* the writing transaction has its xid. The
--    sealer settles "every position up to P is final" by waiting until every transaction
--    that was running when P became visible has ended (pg_snapshot_xmin); that argument
--    needs a transaction that holds a position to already have an xid. With the identity
--    default, nextval ran before `transaction_id`'s default assigned the xid.
DO $$
DECLARE
    last_position bigint;
BEGIN
    SELECT COALESCE(pg_sequence_last_value(pg_get_serial_sequence('events', 'position')), 0)
    INTO last_position;
    ALTER TABLE events ALTER COLUMN position DROP IDENTITY;
    CREATE SEQUENCE events_position_seq OWNED BY events.position;
    PERFORM setval('events_position_seq',
                   GREATEST(last_position, (SELECT COALESCE(MAX(position), 0) FROM events)) + 1,
                   false);
END;
$$;

CREATE FUNCTION events_next_position() RETURNS bigint
    LANGUAGE plpgsql AS
$$
BEGIN
    PERFORM pg_current_xact_id();
    RETURN nextval('events_position_seq');
END;
$$;

ALTER TABLE events ALTER COLUMN position SET DEFAULT events_next_position();
ALTER TABLE events ALTER COLUMN position SET NOT NULL;

-- 2. One row per sealed event: leaf `leaf_index` of the tree is the event at `position`.
--    `leaf_hash` is what the checkpoints commit to; `latchkey verify` recomputes it from
--    the event and names the first position where they differ.
CREATE TABLE ledger_leaves
(
    leaf_index bigint PRIMARY KEY CHECK (leaf_index >= 0),
    position   bigint NOT NULL UNIQUE,
    leaf_hash  text   NOT NULL
);

-- 3. The sealed tree's right edge (one row): its size, the last sealed position and the
--    roots of its perfect subtrees, enough to extend it and to compute its root.
CREATE TABLE ledger_tree
(
    id            smallint PRIMARY KEY CHECK (id = 1),
    tree_size     bigint      NOT NULL,
    last_position bigint      NOT NULL,
    frontier      text        NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
INSERT INTO ledger_tree (id, tree_size, last_position, frontier) VALUES (1, 0, 0, '[]');

-- 4. Signed tree heads. The signature covers size, root and time (see store::ledger);
--    `public_key` says which key signed, verification pins the key it trusts.
CREATE TABLE ledger_checkpoints
(
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tree_size  bigint      NOT NULL CHECK (tree_size >= 0),
    root_hash  text        NOT NULL,
    signed_at  text        NOT NULL,
    public_key text        NOT NULL,
    signature  text        NOT NULL,
    stored_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_checkpoints_size ON ledger_checkpoints (tree_size);
