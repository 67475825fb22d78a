-- The Stripe webhook inbox: every event we accepted, keyed by Stripe's event id, stored
-- before we answer 2xx so an acknowledged delivery can never be lost. Processing reads
-- from here (inline right after the insert, then a worker for retries), and the catch-up
-- job inserts events it finds through the Events API into the same table.
CREATE TABLE stripe_inbox
(
    -- `evt_…`: Stripe delivers at least once, so the primary key is the dedup.
    event_id        text PRIMARY KEY,
    type            text        NOT NULL,
    api_version     text,
    livemode        boolean     NOT NULL,
    -- Stripe's `created` (unix seconds): the catch-up job's high-water mark.
    stripe_created  bigint      NOT NULL,
    -- The raw body exactly as signed (webhooks), or Stripe's copy (catch-up).
    payload         text        NOT NULL,
    -- received | processed | ignored | failed (`duplicate` is reported for repeats).
    status          text        NOT NULL DEFAULT 'received'
        CHECK (status IN ('received', 'processed', 'duplicate', 'ignored', 'failed')),
    -- webhook | catch_up
    source          text        NOT NULL DEFAULT 'webhook',
    attempts        integer     NOT NULL DEFAULT 0,
    -- Repeated deliveries of this event id after the first.
    duplicates      integer     NOT NULL DEFAULT 0,
    last_error      text,
    -- Unix milliseconds at which the worker may (re)try; NULL when nothing is due
    -- (done, or out of attempts). Also the lease of whoever is processing it.
    next_attempt_at bigint,
    received_at     timestamptz NOT NULL,
    processed_at    timestamptz,
    payment_id      text,
    ignore_reason   text
);

CREATE INDEX stripe_inbox_due ON stripe_inbox (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX stripe_inbox_received ON stripe_inbox (received_at, event_id);
CREATE INDEX stripe_inbox_created ON stripe_inbox (stripe_created);

-- Refused webhook deliveries, for the audit log (`webhook_signature_failed`) and for
-- operators. Bounded (the application keeps the newest rows only) because anyone on the
-- internet can add to it; the body itself is never kept, only its length and first bytes.
CREATE TABLE webhook_signature_failures
(
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    failed_at        timestamptz NOT NULL,
    reason           text        NOT NULL,
    body_length      bigint      NOT NULL,
    body_prefix_hex  text
);
