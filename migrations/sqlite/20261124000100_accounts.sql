-- Operator accounts (issue 9): users, their one-time backup codes, dashboard sessions,
-- failed login attempts (for rate limiting) and API tokens owned by users.
-- Times are unix milliseconds (integer) so both backends compare them the same way.
CREATE TABLE users
(
    user_id              text PRIMARY KEY,
    email                text    NOT NULL UNIQUE,
    role                 text    NOT NULL CHECK (role IN ('admin', 'operator', 'auditor')),
    -- argon2id PHC string.
    password_hash        text    NOT NULL,
    -- Set for a one-time password (created or reset by an admin or the CLI).
    must_change_password integer NOT NULL DEFAULT 0,
    -- Base32 TOTP secret; confirmed once the user typed a valid code for it.
    totp_secret          text,
    totp_confirmed       integer NOT NULL DEFAULT 0,
    -- The last accepted time step: a code is accepted once.
    totp_last_step       integer,
    deactivated_ms       integer,
    created_ms           integer  NOT NULL,
    updated_ms           integer  NOT NULL
) STRICT;

CREATE TABLE user_backup_codes
(
    user_id   text   NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    code_hash text   NOT NULL,
    used_ms   integer,
    PRIMARY KEY (user_id, code_hash)
) STRICT;

-- Only a SHA-256 of the cookie's session id is stored.
CREATE TABLE user_sessions
(
    session_hash text PRIMARY KEY,
    user_id      text   NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    -- 'code' while the second factor is outstanding, 'full' after it.
    stage        text   NOT NULL CHECK (stage IN ('code', 'full')),
    csrf_token   text   NOT NULL,
    created_ms   integer NOT NULL,
    last_seen_ms integer NOT NULL
) STRICT;
CREATE INDEX user_sessions_user ON user_sessions (user_id);

-- One row per failed password or code; scope is 'account:<email>' or 'address:<ip>'.
CREATE TABLE login_failures
(
    scope  text   NOT NULL,
    at_ms  integer NOT NULL
) STRICT;
CREATE INDEX login_failures_scope_at ON login_failures (scope, at_ms);

ALTER TABLE api_tokens ADD COLUMN user_id text REFERENCES users (user_id) ON DELETE CASCADE;
ALTER TABLE api_tokens ADD COLUMN token_id text;
ALTER TABLE api_tokens ADD COLUMN last4 text;
CREATE INDEX api_tokens_user ON api_tokens (user_id);
