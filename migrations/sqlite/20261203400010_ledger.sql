-- The verifiable ledger (issue 19): a global RFC 6962 Merkle tree over the journal in
-- position order, sealed by a background task, and signed checkpoints of it. SQLite has
-- one writer at a time, so positions commit in order and every visible event is final.

-- One row per sealed event: leaf `leaf_index` of the tree is the event at `position`.
CREATE TABLE ledger_leaves
(
    leaf_index integer PRIMARY KEY CHECK (leaf_index >= 0),
    position   integer NOT NULL UNIQUE,
    leaf_hash  text    NOT NULL
) STRICT;

-- The sealed tree's right edge (one row): size, last sealed position, subtree roots.
CREATE TABLE ledger_tree
(
    id            integer PRIMARY KEY CHECK (id = 1),
    tree_size     integer NOT NULL,
    last_position integer NOT NULL,
    frontier      text    NOT NULL,
    updated_at    text    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;
INSERT INTO ledger_tree (id, tree_size, last_position, frontier) VALUES (1, 0, 0, '[]');

-- Signed tree heads (see store::ledger for what the signature covers).
CREATE TABLE ledger_checkpoints
(
    id         integer PRIMARY KEY AUTOINCREMENT,
    tree_size  integer NOT NULL CHECK (tree_size >= 0),
    root_hash  text    NOT NULL,
    signed_at  text    NOT NULL,
    public_key text    NOT NULL,
    signature  text    NOT NULL,
    stored_at  text    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;
CREATE INDEX ledger_checkpoints_size ON ledger_checkpoints (tree_size);
