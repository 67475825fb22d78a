-- Reads of the operator dashboard (issue 9), fast with a million payments behind them.

-- revenue_daily: the revenue fold's sums per local day, target and currency (the same
-- facts as `revenue`, which keeps 15-minute slots for re-bucketing in another zone). A
-- report over the targets' own days reads one row per day and target instead of up to 96.
CREATE TABLE revenue_daily
(
    local_day   text   NOT NULL,
    target_kind text   NOT NULL,
    target_uid  text   NOT NULL,
    location    text   NOT NULL,
    time_zone   text   NOT NULL,
    currency    text   NOT NULL,
    gross       bigint NOT NULL,
    refunds     bigint NOT NULL,
    count       bigint NOT NULL,
    PRIMARY KEY (local_day, target_kind, target_uid, location, time_zone, currency)
);
INSERT INTO revenue_daily (local_day, target_kind, target_uid, location, time_zone, currency,
                           gross, refunds, count)
SELECT local_day, target_kind, target_uid, location, time_zone, currency,
       SUM(gross), SUM(refunds), SUM(count)
FROM revenue
GROUP BY local_day, target_kind, target_uid, location, time_zone, currency;

-- Session history, most recently changed first.
CREATE INDEX sessions_by_updated ON sessions (updated_at, session_id);

-- The audit log filtered by who acted.
CREATE INDEX audit_log_by_actor ON audit_log (actor, position);
