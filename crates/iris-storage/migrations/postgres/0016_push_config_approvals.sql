-- Whether a push config's creator may decide approvals: only then are the
-- task's waits on an approval pushed (input-required); others see it
-- working, as they do through A2A's calls.
ALTER TABLE push_configs ADD COLUMN sees_approvals BIGINT NOT NULL DEFAULT 0;
