-- The teams a message passed through to get here (team-to-team messaging):
-- a JSON array of team names, the first the team whose turn started it,
-- the last this turn's own team. NULL for turns from before.
ALTER TABLE turns ADD COLUMN chain TEXT;

-- When the agent no longer had a conversation Iris resumes ("No conversation
-- found") and Iris started it afresh under the same id.
ALTER TABLE sessions ADD COLUMN restarted_at INTEGER;
