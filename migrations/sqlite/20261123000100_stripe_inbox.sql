-- The Stripe webhook inbox; see the PostgreSQL twin of this migration for the why of
-- every column. Times are RFC 3339 text written by the application.
CREATE TABLE stripe_inbox
(
    event_id        text PRIMARY KEY,
    type            text    NOT NULL,
    api_version     text,
    livemode        integer NOT NULL,
    stripe_created  integer NOT NULL,
    payload         text    NOT NULL,
    status          text    NOT NULL DEFAULT 'received'
        CHECK (status IN ('received', 'processed', 'duplicate', 'ignored', 'failed')),
    source          text    NOT NULL DEFAULT 'webhook',
    attempts        integer NOT NULL DEFAULT 0,
    duplicates      integer NOT NULL DEFAULT 0,
    last_error      text,
    next_attempt_at integer,
    received_at     text    NOT NULL,
    processed_at    text,
    payment_id      text,
    ignore_reason   text
) STRICT;

CREATE INDEX stripe_inbox_due ON stripe_inbox (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX stripe_inbox_received ON stripe_inbox (received_at, event_id);
CREATE INDEX stripe_inbox_created ON stripe_inbox (stripe_created);

CREATE TABLE webhook_signature_failures
(
    id               integer PRIMARY KEY AUTOINCREMENT,
    failed_at        text    NOT NULL,
    reason           text    NOT NULL,
    body_length      integer NOT NULL,
    body_prefix_hex  text
) STRICT;
