-- Fencing for the singletons (issue 20). Each singleton (the reconciler, each workflow,
-- the projections) runs in one instance at a time under a PostgreSQL advisory lock; this
-- row adds what the lock cannot: an epoch that grows by one every time an instance takes
-- the lock. The holder stamps its epoch on every command it sends, and a command whose
-- epoch is no longer the row's is refused before it reaches TTLock or Shelly
-- (src/store/lease.rs). `holder` and `holder_pid` (the lock connection's backend) say who
-- holds it, for operators and for tests that cut that connection. One row per singleton.
CREATE TABLE singleton_leases
(
    name           text PRIMARY KEY,
    epoch          bigint NOT NULL CHECK (epoch > 0),
    holder         text   NOT NULL,
    holder_pid     integer,
    acquired_at_ms bigint NOT NULL
);
