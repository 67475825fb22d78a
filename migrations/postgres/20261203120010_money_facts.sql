-- Issue 13, money facts. Every column starts at the value the journal so far implies: no
-- earlier event flagged an amount, held access or moved dispute money, so no rebuild.
--
-- A Stripe amount that differs from the locked price (`PaymentAmountMismatch`): its
-- direction (below, above, other_currency), and whether access waits for an operator.
ALTER TABLE payments ADD COLUMN amount_mismatch text;
ALTER TABLE payments ADD COLUMN access_held boolean NOT NULL DEFAULT false;
-- Money a dispute took back (withdrawn minus reinstated), in minor units; net revenue is
-- gross - refunds - disputes.
ALTER TABLE revenue ADD COLUMN disputes bigint NOT NULL DEFAULT 0;
ALTER TABLE revenue_daily ADD COLUMN disputes bigint NOT NULL DEFAULT 0;
