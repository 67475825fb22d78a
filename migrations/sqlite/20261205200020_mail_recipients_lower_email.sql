-- "Lost your link?" finds a guest's payments by the address typed, compared lower-cased
-- (checkout keeps the address as the guest typed it): the index must be on lower(email)
-- for the lookup to use it.
DROP INDEX mail_recipients_by_email;
CREATE INDEX mail_recipients_by_email ON mail_recipients (lower(email), created_at_ms);
