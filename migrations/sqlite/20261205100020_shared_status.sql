-- Status every instance shows alike (issue 20). Module health (is Stripe, TTLock, Shelly,
-- email answering?) is observed by the instance that made the call; each instance writes
-- its own observations here, one row per module and instance, and every instance's
-- dashboard merges all rows (src/shared_status.rs), so the answer does not depend on which
-- instance served the page. `shared_status` holds other small shared documents by name,
-- e.g. the last Stripe catch-up run (JSON in `body`).
CREATE TABLE module_health
(
    module               TEXT    NOT NULL,
    instance             TEXT    NOT NULL,
    last_error           TEXT,
    last_error_at_ms     INTEGER,
    last_ok_at_ms        INTEGER,
    consecutive_failures INTEGER NOT NULL,
    calls_ok_total       INTEGER NOT NULL,
    calls_failed_total   INTEGER NOT NULL,
    updated_at_ms        INTEGER NOT NULL,
    PRIMARY KEY (module, instance)
) STRICT;

CREATE TABLE shared_status
(
    name          TEXT PRIMARY KEY,
    body          TEXT    NOT NULL,
    updated_at_ms INTEGER NOT NULL
) STRICT;
