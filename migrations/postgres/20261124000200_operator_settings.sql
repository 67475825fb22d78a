-- Settings saved on the dashboard's Settings page, named like the environment variables
-- they stand in for (an environment variable, when set, wins). Secrets are kept only as
-- AES-256-GCM ciphertext under LATCHKEY_MASTER_KEY (`key_id` names the key) plus their
-- last four characters; `value` holds non-secret values.
CREATE TABLE operator_settings
(
    name       text PRIMARY KEY,
    value      text,
    ciphertext text,
    key_id     text,
    last4      text,
    updated_ms bigint NOT NULL,
    updated_by text   NOT NULL
);
