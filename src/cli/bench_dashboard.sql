-- Synthetic read models for `latchkey bench dashboard`: :payments payments over the last
-- 365 days, written straight into the projections' tables with the same row shapes the
-- folds write (one INSERT … SELECT per table), so a million payments load in well under a
-- minute. The distribution follows scripts/bench-projections: doors d0–d19 and devices
-- v0–v9 in four locations, three zones and three currencies; even payments are door
-- payments, odd ones device payments; `md5('payment' || p)` ids.
-- The journal stays empty: the pages read projections only (a payment's own page reads
-- its events, which the benchmark does not measure).

CREATE TEMPORARY TABLE bench_places (i int PRIMARY KEY, location text, time_zone text, currency text);
INSERT INTO bench_places VALUES
  (0, 'Paris', 'Europe/Paris', 'eur'), (1, 'Lyon', 'Europe/Paris', 'eur'),
  (2, 'New York', 'America/New_York', 'usd'), (3, 'London', 'Europe/London', 'gbp');

INSERT INTO catalogue_doors (door_uid, lock_id, name, location, time_zone, price, currency,
  access_minutes, status, codes_issued, registered_at, updated_at)
SELECT 'd' || d, 1000 + d, 'Door ' || d, pl.location, pl.time_zone, 500 + d, pl.currency, 60,
  'active', :payments / 40, now() - interval '400 days', now() - interval '400 days'
FROM generate_series(0, 19) d JOIN bench_places pl ON pl.i = d % 4;

INSERT INTO catalogue_devices (device_uid, name, location, time_zone, shelly_device_id,
  shelly_channel, plans, status, queue_length, relay_on, registered_at, updated_at)
SELECT 'v' || v, 'Device ' || v, pl.location, pl.time_zone, 'shelly-' || v, 0,
  '[{"plan_id":"p30","name":"30 minutes","minutes":30,"price":300,"currency":"' || pl.currency || '"}]',
  'active', 0, false, now() - interval '400 days', now() - interval '400 days'
FROM generate_series(0, 9) v JOIN bench_places pl ON pl.i = v % 4;

INSERT INTO revenue_targets (target_kind, target_uid, location, time_zone)
SELECT 'door', door_uid, location, time_zone FROM catalogue_doors
UNION ALL SELECT 'device', device_uid, location, time_zone FROM catalogue_devices;

-- Statuses by p % 100: 80 succeeded, 5 partially refunded, 3 refunded, 5 failed,
-- 4 expired, 2 cancelled, 1 pending.
INSERT INTO payments (payment_id, kind, status, door_uid, device_uid, plan_id, amount,
  amount_received, amount_refunded, amount_capturable, currency, email,
  stripe_checkout_session, stripe_payment_intent, stripe_charge, failed_attempts,
  last_failure_reason, disputed, created_at, succeeded_at, refunded_at, updated_at)
SELECT pid, kind, status, door, device, plan, amount,
  CASE WHEN paid THEN amount ELSE 0 END,
  CASE status WHEN 'partially_refunded' THEN 100 WHEN 'refunded' THEN amount ELSE 0 END,
  0, currency, 'guest' || (p % 5000) || '@example.com', 'cs_' || p, 'pi_' || p,
  CASE WHEN paid THEN 'ch_' || p END,
  CASE WHEN status = 'failed' THEN 1 ELSE 0 END,
  CASE WHEN status = 'failed' THEN 'Your card was declined.' END,
  false, t, CASE WHEN paid THEN t + interval '1 minute' END,
  CASE WHEN status IN ('partially_refunded', 'refunded') THEN refunded_at END,
  CASE WHEN status IN ('partially_refunded', 'refunded') THEN refunded_at
       WHEN paid THEN t + interval '1 minute' ELSE t END
FROM (
  SELECT p, md5('payment' || p)::uuid::text AS pid,
    now() - (p * interval '365 days') / :payments - interval '2 minutes' AS t,
    LEAST(now() - (p * interval '365 days') / :payments + interval '1 day', now()) AS refunded_at,
    CASE WHEN p % 2 = 0 THEN 'door' ELSE 'device' END AS kind,
    CASE WHEN p % 2 = 0 THEN 'd' || ((p / 2) % 20) END AS door,
    CASE WHEN p % 2 = 1 THEN 'v' || ((p / 2) % 10) END AS device,
    CASE WHEN p % 2 = 1 THEN 'p30' END AS plan,
    CASE WHEN p % 2 = 0 THEN 500 + (p / 2) % 20 ELSE 300 END AS amount,
    (ARRAY['eur','eur','usd','gbp'])[1 + CASE WHEN p % 2 = 0 THEN (p / 2) % 20 ELSE (p / 2) % 10 END % 4] AS currency,
    CASE WHEN p % 100 < 80 THEN 'succeeded' WHEN p % 100 < 85 THEN 'partially_refunded'
         WHEN p % 100 < 88 THEN 'refunded' WHEN p % 100 < 93 THEN 'failed'
         WHEN p % 100 < 97 THEN 'expired' WHEN p % 100 < 99 THEN 'cancelled'
         ELSE 'pending' END AS status,
    p % 100 < 88 AS paid
  FROM generate_series(0, :payments - 1) p
) generated;

-- Revenue: each success adds its amount on its success time, each refund subtracts on its
-- refund time, summed per 15-minute slot and target as the revenue fold does.
INSERT INTO revenue (slot_start, local_day, target_kind, target_uid, location, time_zone,
  currency, gross, refunds, count)
SELECT date_bin('15 minutes', at, timestamptz '2000-01-01 00:00:00+00') AS slot,
  to_char(date_bin('15 minutes', at, timestamptz '2000-01-01 00:00:00+00') AT TIME ZONE t.time_zone, 'YYYY-MM-DD'),
  t.target_kind, t.target_uid, t.location, t.time_zone, facts.currency,
  SUM(gross), SUM(refunds), SUM(count)
FROM (
  SELECT kind, COALESCE(door_uid, device_uid) AS uid, currency, succeeded_at AS at,
    amount_received AS gross, 0 AS refunds, 1 AS count
  FROM payments WHERE succeeded_at IS NOT NULL
  UNION ALL
  SELECT kind, COALESCE(door_uid, device_uid), currency, refunded_at, 0, amount_refunded, 0
  FROM payments WHERE refunded_at IS NOT NULL
) facts
JOIN revenue_targets t ON t.target_kind = facts.kind AND t.target_uid = facts.uid
GROUP BY 1, 2, 3, 4, 5, 6, 7;

INSERT INTO revenue_daily (local_day, target_kind, target_uid, location, time_zone, currency,
  gross, refunds, count)
SELECT local_day, target_kind, target_uid, location, time_zone, currency,
  SUM(gross), SUM(refunds), SUM(count)
FROM revenue GROUP BY 1, 2, 3, 4, 5, 6;

-- A session per paid device payment: completed after 30 minutes, or still active when
-- that is not over yet.
INSERT INTO sessions (session_id, payment_id, device_uid, plan_id, plan_minutes,
  grace_seconds, state, opened_at, grace_ends_at, started_at, ends_at, ended_at,
  relay_commanded, relay_observed, on_attempts, off_attempts, updated_at)
SELECT md5('session' || payment_id)::uuid::text, payment_id, device_uid, 'p30', 30, 120,
  CASE WHEN succeeded_at + interval '30 minutes' > now() THEN 'active' ELSE 'completed' END,
  created_at, created_at + interval '2 minutes', succeeded_at, succeeded_at + interval '30 minutes',
  CASE WHEN succeeded_at + interval '30 minutes' <= now() THEN succeeded_at + interval '30 minutes' END,
  succeeded_at + interval '30 minutes' > now(), succeeded_at + interval '30 minutes' > now(), 1,
  CASE WHEN succeeded_at + interval '30 minutes' > now() THEN 0 ELSE 1 END,
  LEAST(succeeded_at + interval '30 minutes', now())
FROM payments WHERE kind = 'device' AND succeeded_at IS NOT NULL;

-- One audit entry per payment (its checkout), newest payments at the highest positions.
INSERT INTO audit_log (position, at, recorded_at, action, aggregate_type, aggregate_id,
  sequence, event_type, actor, details)
SELECT row_number() OVER (ORDER BY created_at, payment_id), created_at, created_at,
  'payment_started', 'Payment', payment_id, 1, 'CheckoutStarted', 'guest',
  '{"guest_email":"' || email || '"}'
FROM payments;

ANALYZE;
