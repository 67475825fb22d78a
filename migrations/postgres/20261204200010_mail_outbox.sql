-- Email (issue 21): the outbox the mail worker sends from, and what it needs to address a
-- guest. Times are Unix milliseconds on both backends, so "due" compares the same way.
--
-- mail_recipients: the guest's email and the price of each payment, recorded by the outbox
-- subscriber from `CheckoutStarted`, so a later fact (a code issued, a refund) finds the
-- address inside the subscriber's own transaction.
CREATE TABLE mail_recipients
(
    payment_id  text PRIMARY KEY,
    email       text   NOT NULL,
    kind        text   NOT NULL,
    target_uid  text   NOT NULL,
    price_minor bigint NOT NULL,
    currency    text   NOT NULL
);

-- mail_outbox: one row per mail, keyed by the fact it reports (`receipt:<payment>`,
-- `refund:<payment>:<refunded total>`): a fact handled twice still mails once. `facts` is
-- the JSON the mail is written from; the access link is minted when it is sent, so no
-- usable token is ever stored here. Status: pending → sent, or failed after the last
-- attempt, or expired when the fact was too old to be worth a mail.
CREATE TABLE mail_outbox
(
    mail_key           text PRIMARY KEY,
    kind               text    NOT NULL,
    payment_id         text    NOT NULL,
    recipient          text    NOT NULL,
    facts              text    NOT NULL,
    fact_position      bigint  NOT NULL,
    fact_at_ms         bigint  NOT NULL,
    created_at_ms      bigint  NOT NULL,
    status             text    NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sent', 'failed', 'expired')),
    attempts           integer NOT NULL DEFAULT 0,
    next_attempt_at_ms bigint  NOT NULL,
    last_error         text,
    sent_at_ms         bigint
);

CREATE INDEX mail_outbox_due ON mail_outbox (status, next_attempt_at_ms);
CREATE INDEX mail_outbox_newest ON mail_outbox (created_at_ms);

-- A guest's capability may now exist several times per payment: the checkout's, and the
-- one each mail carries (minted at send time, stored as a hash like the first).
ALTER TABLE access_tokens DROP CONSTRAINT access_tokens_payment_id_key;
CREATE INDEX access_tokens_by_payment ON access_tokens (payment_id);
