-- Email, the rest of issue 21 item 1: messages frozen while in flight, guests' "lost your
-- link?" requests, operators' password resets, and the rate limits of both.
-- Times are Unix milliseconds on both backends.

-- The message as first rendered (RFC 5322 text, access links minted once) and its envelope
-- recipients, kept while the row is pending: every retry, a crash's included, sends the
-- same bytes with the same Message-ID. Cleared once the server accepted it, so a sent row
-- holds no usable link.
ALTER TABLE mail_outbox ADD COLUMN message text;
ALTER TABLE mail_outbox ADD COLUMN envelope_to text;

-- When the guest started the checkout: "lost your link?" resends the recent ones only.
-- For the device receipt, which waits for both the session's start and the capture (a
-- guest whose card Stripe declined after the relay came on gets no receipt): the session
-- the payment opened, the plan's name as the guest saw it, the session's times once it
-- started (JSON), and whether Stripe reported the payment succeeded. NULL for rows
-- recorded before these columns existed.
ALTER TABLE mail_recipients ADD COLUMN created_at_ms bigint;
ALTER TABLE mail_recipients ADD COLUMN session_id text;
ALTER TABLE mail_recipients ADD COLUMN plan_name text;
ALTER TABLE mail_recipients ADD COLUMN session_facts text;
ALTER TABLE mail_recipients ADD COLUMN succeeded_at_ms bigint;
CREATE INDEX mail_recipients_by_session ON mail_recipients (session_id);
CREATE INDEX mail_recipients_by_email ON mail_recipients (email, created_at_ms);

-- One row per request that may send mail to an address typed by a stranger ("lost your
-- link?", "forgot password"); scope is '<purpose>:email:<address>' or
-- '<purpose>:address:<ip>'. Rows older than the window are deleted as requests come.
CREATE TABLE mail_requests
(
    scope text   NOT NULL,
    at_ms bigint NOT NULL
);
CREATE INDEX mail_requests_scope_at ON mail_requests (scope, at_ms);

-- An operator's "forgot password": the link's token is minted when the mail is rendered
-- (only its SHA-256 is kept, NULL until then), good once, until expires_at_ms.
CREATE TABLE password_resets
(
    reset_id        text PRIMARY KEY,
    user_id         text   NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    token_hash      text UNIQUE,
    requested_at_ms bigint NOT NULL,
    expires_at_ms   bigint NOT NULL,
    used_at_ms      bigint
);
CREATE INDEX password_resets_user ON password_resets (user_id);
