-- The commit a conversation's worktree started from (its branch's base):
-- what `session_diff` shows the agent's changes against.
ALTER TABLE sessions ADD COLUMN worktree_base TEXT;
