-- Status every instance shows alike (issue 20). Module health (is Stripe, TTLock, Shelly,
-- email answering?) is observed by the instance that made the call; each instance writes
-- its own observations here, one row per module and instance, and every instance's
-- dashboard merges all rows (src/shared_status.rs), so the answer does not depend on which
-- instance served the page. `shared_status` holds other small shared documents by name,
-- e.g. the last Stripe catch-up run (JSON in `body`).
CREATE TABLE module_health
(
    module               text   NOT NULL,
    instance             text   NOT NULL,
    last_error           text,
    last_error_at_ms     bigint,
    last_ok_at_ms        bigint,
    consecutive_failures bigint NOT NULL,
    calls_ok_total       bigint NOT NULL,
    calls_failed_total   bigint NOT NULL,
    updated_at_ms        bigint NOT NULL,
    PRIMARY KEY (module, instance)
);

CREATE TABLE shared_status
(
    name          text PRIMARY KEY,
    body          text   NOT NULL,
    updated_at_ms bigint NOT NULL
);
