-- A synthetic journal for `latchkey bench all` (rebuild_1m): :payments payments and what
-- follows them, in the exact serde shapes of the domain's events, written with one
-- INSERT … SELECT over generate_series (the generator of scripts/bench-projections, 6.6
-- events per payment on average; doors d0–d19, devices v0–v9, payments over 120 days).
-- No hash chains: `latchkey verify` would reject these events, and a rebuild does not care.

CREATE FUNCTION pg_temp.ts(t timestamptz) RETURNS text LANGUAGE sql IMMUTABLE AS
  $$ SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') $$;
CREATE FUNCTION pg_temp.money(amount bigint, currency text) RETURNS json LANGUAGE sql IMMUTABLE AS
  $$ SELECT json_build_object('amount_minor', amount, 'currency', currency) $$;

-- Doors and devices: three zones, four locations, two currencies.
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT 'Door', 'd' || d, 1, 'DoorRegistered', '1',
  json_build_object('type', 'DoorRegistered', 'door_uid', 'd' || d, 'lock_id', d,
    'name', 'Door ' || d, 'location', (ARRAY['Paris','Lyon','New York','London'])[1 + d % 4],
    'time_zone', (ARRAY['Europe/Paris','Europe/Paris','America/New_York','Europe/London'])[1 + d % 4],
    'price', pg_temp.money(500 + d, (ARRAY['eur','eur','usd','gbp'])[1 + d % 4]), 'access_minutes', 60,
    'actor', json_build_object('kind', 'operator', 'id', 'bench'), 'at', '2026-06-01T00:00:00Z'),
  '{"actor":"operator:bench","source":"bench"}'
FROM generate_series(0, 20 - 1) d;
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT 'Device', 'v' || v, 1, 'DeviceRegistered', '1',
  json_build_object('type', 'DeviceRegistered', 'device_uid', 'v' || v, 'name', 'Device ' || v,
    'location', (ARRAY['Paris','Lyon','New York','London'])[1 + v % 4],
    'time_zone', (ARRAY['Europe/Paris','Europe/Paris','America/New_York','Europe/London'])[1 + v % 4],
    'shelly_device_id', 'shelly-' || v, 'shelly_channel', 0,
    'plans', json_build_array(json_build_object('plan_id', 'p30', 'name', '30 minutes', 'minutes', 30,
       'price', pg_temp.money(300, (ARRAY['eur','eur','usd','gbp'])[1 + v % 4]))),
    'actor', json_build_object('kind', 'operator', 'id', 'bench'), 'at', '2026-06-01T00:00:00Z'),
  '{"actor":"operator:bench","source":"bench"}'
FROM generate_series(0, 10 - 1) v;

-- Payments and what follows them, in one statement, in (payment, step) order.
INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
SELECT e.aggregate_type, e.aggregate_id, e.sequence, e.event_type, '1', e.payload, e.metadata
FROM (
  SELECT p, t, pid, door, device, currency, amount,
         pg_temp.ts(t) AS at, pg_temp.ts(t + interval '1 minute') AS paid_at
  FROM (
    SELECT p,
           timestamptz '2026-07-01' + (p * interval '120 days') / :payments AS t,
           md5('payment' || p)::uuid::text AS pid,
           'd' || ((p / 2) % 20) AS door,
           'v' || ((p / 2) % 10) AS device,
           CASE WHEN p % 2 = 0 THEN (ARRAY['eur','eur','usd','gbp'])[1 + ((p / 2) % 20) % 4]
                ELSE (ARRAY['eur','eur','usd','gbp'])[1 + ((p / 2) % 10) % 4] END AS currency,
           CASE WHEN p % 2 = 0 THEN 500 + (p / 2) % 20 ELSE 300 END AS amount
    FROM generate_series(0, :payments - 1) p
  ) base
) x
CROSS JOIN LATERAL (
  SELECT * FROM (VALUES
    (1, 'Payment', x.pid, 1, 'CheckoutStarted', json_build_object('type', 'CheckoutStarted', 'payment_id', x.pid,
       'target', CASE WHEN x.p % 2 = 0 THEN json_build_object('kind', 'door', 'door_uid', x.door)
                      ELSE json_build_object('kind', 'device', 'device_uid', x.device, 'plan_id', 'p30') END,
       'price', pg_temp.money(x.amount, x.currency), 'guest_email', 'guest' || (x.p % 5000) || '@example.com',
       'at', x.at), '{"actor":"guest","source":"bench"}'::json),
    (2, 'Payment', x.pid, 2, 'CheckoutSessionCreated', json_build_object('type', 'CheckoutSessionCreated',
       'checkout_session_id', 'cs_' || x.p, 'payment_intent_id', 'pi_' || x.p, 'expires_at', NULL, 'at', x.at),
       '{"actor":"system","source":"bench"}'::json),
    (3, 'Payment', x.pid, 3, 'PaymentAuthorized', json_build_object('type', 'PaymentAuthorized',
       'payment_intent_id', 'pi_' || x.p, 'amount_capturable', pg_temp.money(x.amount, x.currency),
       'status', 'authorized', 'stripe_event', json_build_object('id', 'evt_a' || x.p, 'created', x.at), 'at', x.at),
       '{"actor":"stripe","source":"bench"}'::json),
    (4, 'Payment', x.pid, CASE WHEN x.p % 2 = 0 THEN 3 ELSE 4 END, 'PaymentSucceeded', json_build_object('type', 'PaymentSucceeded',
       'payment_intent_id', 'pi_' || x.p, 'charge_id', 'ch_' || x.p, 'amount_received', pg_temp.money(x.amount, x.currency),
       'status', 'succeeded', 'stripe_event', json_build_object('id', 'evt_s' || x.p, 'created', x.paid_at), 'at', x.paid_at),
       '{"actor":"stripe","source":"bench"}'::json),
    (5, 'Payment', x.pid, 4, 'RefundRecorded', json_build_object('type', 'RefundRecorded',
       'charge_id', 'ch_' || x.p, 'amount_refunded', pg_temp.money(100, x.currency),
       'refunded_increase', pg_temp.money(100, x.currency), 'status', 'partially_refunded',
       'stripe_event', json_build_object('id', 'evt_r' || x.p, 'created', pg_temp.ts(x.t + interval '1 day')),
       'at', pg_temp.ts(x.t + interval '1 day')), '{"actor":"stripe","source":"bench"}'::json),
    (6, 'Door', x.door, 2 + (x.p / 2) / 20, 'AccessCodeIssued', json_build_object('type', 'AccessCodeIssued',
       'payment_id', x.pid, 'attempt', 1, 'passcode_id', x.p, 'code', '123456', 'valid_from', x.paid_at,
       'valid_to', pg_temp.ts(x.t + interval '61 minutes'), 'remotely_revocable', true, 'at', x.paid_at),
       '{"actor":"system","source":"bench"}'::json),
    (7, 'DeviceSession', md5('session' || x.p)::uuid::text, 1, 'SessionOpened', json_build_object('type', 'SessionOpened',
       'terms', json_build_object('session_id', md5('session' || x.p)::uuid::text, 'payment_id', x.pid,
         'device_uid', x.device, 'relay', json_build_object('shelly_device_id', 'shelly-' || x.device, 'channel', 0),
         'plan_id', 'p30', 'plan_minutes', 30, 'grace_seconds', 120),
       'grace_ends_at', pg_temp.ts(x.t + interval '2 minutes'), 'at', x.at), '{"actor":"system","source":"bench"}'::json),
    (8, 'DeviceSession', md5('session' || x.p)::uuid::text, 2, 'RelayOnRequested', json_build_object('type', 'RelayOnRequested',
       'attempt', 1, 'auto_off_seconds', 1860, 'at', x.at), '{"actor":"system","source":"bench"}'::json),
    (9, 'DeviceSession', md5('session' || x.p)::uuid::text, 3, 'RelayOnSucceeded', json_build_object('type', 'RelayOnSucceeded',
       'attempt', 1, 'at', x.at), '{"actor":"system","source":"bench"}'::json),
    (10, 'DeviceSession', md5('session' || x.p)::uuid::text, 4, 'SessionActivated', json_build_object('type', 'SessionActivated',
       'started_at', x.at, 'ends_at', pg_temp.ts(x.t + interval '30 minutes')), '{"actor":"system","source":"bench"}'::json),
    (11, 'DeviceSession', md5('session' || x.p)::uuid::text, 5, 'SessionCompleted', json_build_object('type', 'SessionCompleted',
       'at', pg_temp.ts(x.t + interval '31 minutes')), '{"actor":"system","source":"bench"}'::json)
  ) AS steps(step, aggregate_type, aggregate_id, sequence, event_type, payload, metadata)
  WHERE CASE WHEN x.p % 2 = 0 THEN step IN (1, 2, 4, 6) OR (step = 5 AND x.p % 10 = 0)
             ELSE step IN (1, 2, 3, 4, 7, 8, 9, 10, 11) END
) e
ORDER BY x.p, e.step;
ANALYZE events;
