-- The read models of the projections crate (issue 8). Each table belongs to one
-- projection, is written only by its fold of the journal, and is emptied and refilled by
-- `latchkey rebuild`. JSON is kept as text so that a rebuilt table can be compared with
-- the live one row by row (`latchkey rebuild --check`); times are timestamptz on
-- PostgreSQL and RFC 3339 text here, booleans are integers here.

-- payments: one row per payment.
CREATE TABLE payments
(
    payment_id              text PRIMARY KEY,
    kind                    text        NOT NULL,
    status                  text        NOT NULL,
    door_uid                text,
    device_uid              text,
    plan_id                 text,
    -- The price locked at checkout, in minor units of `currency`.
    amount                  integer      NOT NULL,
    amount_received         integer      NOT NULL,
    -- Stripe's cumulative refunded total.
    amount_refunded         integer      NOT NULL,
    amount_capturable       integer      NOT NULL,
    currency                text        NOT NULL,
    email                   text        NOT NULL,
    stripe_checkout_session text,
    stripe_payment_intent   text,
    stripe_charge           text,
    failed_attempts         integer      NOT NULL,
    last_failure_reason     text,
    disputed                integer     NOT NULL,
    created_at              text NOT NULL,
    succeeded_at            text,
    refunded_at             text,
    updated_at              text NOT NULL
) STRICT;
-- The list is newest first, keyset-paginated on (created_at, payment_id), optionally
-- filtered on one of these columns.
CREATE INDEX payments_by_created ON payments (created_at, payment_id);
CREATE INDEX payments_by_status ON payments (status, created_at, payment_id);
CREATE INDEX payments_by_door ON payments (door_uid, created_at, payment_id);
CREATE INDEX payments_by_device ON payments (device_uid, created_at, payment_id);
CREATE INDEX payments_by_email ON payments (email, created_at, payment_id);

-- sessions: one row per device session; remaining time is computed when read.
CREATE TABLE sessions
(
    session_id       text PRIMARY KEY,
    payment_id       text        NOT NULL,
    device_uid       text        NOT NULL,
    plan_id          text        NOT NULL,
    plan_minutes     integer      NOT NULL,
    grace_seconds    integer      NOT NULL,
    state            text        NOT NULL,
    queued_at        text,
    opened_at        text,
    grace_ends_at    text,
    started_at       text,
    ends_at          text,
    ended_at         text,
    relay_commanded  integer,
    relay_observed   integer,
    on_attempts      integer      NOT NULL,
    off_attempts     integer      NOT NULL,
    last_relay_error text,
    end_reason       text,
    ended_by         text,
    updated_at       text NOT NULL
) STRICT;
CREATE INDEX sessions_by_state ON sessions (state, updated_at);

-- audit_log: one entry per journal event, keyed by its position.
CREATE TABLE audit_log
(
    position       integer PRIMARY KEY,
    at             text NOT NULL,
    recorded_at    text NOT NULL,
    action         text        NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    sequence       integer      NOT NULL,
    event_type     text        NOT NULL,
    actor          text,
    details        text        NOT NULL
) STRICT;
CREATE INDEX audit_log_by_action ON audit_log (action, position);
CREATE INDEX audit_log_by_aggregate ON audit_log (aggregate_type, aggregate_id, position);
CREATE INDEX audit_log_by_time ON audit_log (at);

-- revenue: sums per 15-minute UTC slot, target, location, zone and currency, with the
-- slot's local day in that zone precomputed.
CREATE TABLE revenue
(
    slot_start  text NOT NULL,
    local_day   text        NOT NULL,
    target_kind text        NOT NULL,
    target_uid  text        NOT NULL,
    location    text        NOT NULL,
    time_zone   text        NOT NULL,
    currency    text        NOT NULL,
    gross       integer      NOT NULL,
    refunds     integer      NOT NULL,
    count       integer      NOT NULL,
    PRIMARY KEY (slot_start, target_kind, target_uid, location, time_zone, currency)
) STRICT;
CREATE INDEX revenue_by_local_day ON revenue (local_day);

-- Helpers of the revenue fold: where each door and device is, what each payment bought.
CREATE TABLE revenue_targets
(
    target_kind text NOT NULL,
    target_uid  text NOT NULL,
    location    text NOT NULL,
    time_zone   text NOT NULL,
    PRIMARY KEY (target_kind, target_uid)
) STRICT;

CREATE TABLE revenue_payments
(
    payment_id  text PRIMARY KEY,
    target_kind text NOT NULL,
    target_uid  text NOT NULL
) STRICT;

-- catalogue: doors and devices as operators and guest pages see them.
CREATE TABLE catalogue_doors
(
    door_uid       text PRIMARY KEY,
    lock_id        integer      NOT NULL,
    name           text        NOT NULL,
    location       text        NOT NULL,
    time_zone      text        NOT NULL,
    price          integer      NOT NULL,
    currency       text        NOT NULL,
    access_minutes integer      NOT NULL,
    status         text        NOT NULL,
    status_reason  text,
    passage_mode   integer,
    codes_issued   integer      NOT NULL,
    registered_at  text NOT NULL,
    updated_at     text NOT NULL
) STRICT;

CREATE TABLE catalogue_devices
(
    device_uid        text PRIMARY KEY,
    name              text        NOT NULL,
    location          text        NOT NULL,
    time_zone         text        NOT NULL,
    shelly_device_id  text        NOT NULL,
    shelly_channel    integer      NOT NULL,
    -- [{plan_id, name, minutes, price, currency}] as JSON text.
    plans             text        NOT NULL,
    status            text        NOT NULL,
    status_reason     text,
    holder_session_id text,
    queue_length      integer      NOT NULL,
    relay_on          integer,
    registered_at     text NOT NULL,
    updated_at        text NOT NULL
) STRICT;
