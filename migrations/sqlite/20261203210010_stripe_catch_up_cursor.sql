-- Where the Stripe catch-up job stands in Stripe's event list (issue 14): the newest event
-- it has fed into the inbox, walking the list oldest first. The next run asks Stripe for
-- the events after this one (`ending_before`), so a run stopped half-way resumes where it
-- stopped and an old loss is never skipped. `created` is Stripe's (Unix seconds), kept for
-- when the event itself is no longer listed (Stripe keeps 30 days). One row per name.
CREATE TABLE stripe_catch_up_cursor
(
    name          TEXT PRIMARY KEY,
    event_id      TEXT    NOT NULL,
    created       INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
) STRICT;
