-- The last TOTP time step accepted for a user: a code is good once.
ALTER TABLE users ADD COLUMN mfa_last_step BIGINT;
