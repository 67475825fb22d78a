-- Lookups the write path needs before any projection has caught up.
--
-- payment_refs: every Stripe id (checkout session, payment intent, charge) known to belong to
-- one of our payments, so a webhook whose object carries no metadata (a charge, a dispute)
-- still finds its payment.
CREATE TABLE payment_refs
(
    stripe_id  text PRIMARY KEY,
    payment_id text NOT NULL
) STRICT;

-- access_tokens: the guest's capability for /access/{token} and /session/{token}. Only a
-- SHA-256 of the token is stored, bound to one payment.
CREATE TABLE access_tokens
(
    token_hash text PRIMARY KEY,
    payment_id text NOT NULL UNIQUE,
    kind       text NOT NULL CHECK (kind IN ('door', 'device'))
) STRICT;
