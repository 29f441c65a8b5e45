-- A team created through the API whose agent an admin set outside the
-- profiles (api.teams.allowCustomAgents): only such rows may run a custom
-- agent. Rows from before agent profiles are 0: custom fields in them are
-- not trusted (they may have been set by any teams:write caller).
ALTER TABLE teams ADD COLUMN custom_agent BIGINT NOT NULL DEFAULT 0;
