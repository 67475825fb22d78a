-- Fencing for the singletons (issue 20). Each singleton (the reconciler, each workflow,
-- the projections) runs in one instance at a time; on PostgreSQL under an advisory lock,
-- on SQLite trivially (one process owns the file). This row holds an epoch that grows by
-- one every time a singleton starts; the holder stamps it on every command it sends, and a
-- command whose epoch is no longer the row's is refused (src/store/lease.rs). `holder_pid`
-- is PostgreSQL's; it stays NULL here. One row per singleton.
CREATE TABLE singleton_leases
(
    name           TEXT PRIMARY KEY,
    epoch          INTEGER NOT NULL CHECK (epoch > 0),
    holder         TEXT    NOT NULL,
    holder_pid     INTEGER,
    acquired_at_ms INTEGER NOT NULL
) STRICT;
