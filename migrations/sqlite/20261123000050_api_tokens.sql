-- Bearer tokens for the operator/auditor JSON API. Only a SHA-256 of each token is kept:
-- a leaked table grants nothing. `LATCHKEY_API_TOKEN` (the bootstrap admin token) is not
-- stored here.
CREATE TABLE api_tokens
(
    token_hash  text PRIMARY KEY,
    role        text NOT NULL CHECK (role IN ('admin', 'operator', 'auditor')),
    label       text NOT NULL,
    created_at  text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    revoked_at  text
) STRICT;
