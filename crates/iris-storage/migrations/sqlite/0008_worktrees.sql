-- A conversation that runs in its own git worktree (teams with
-- `isolation: worktree`, or a call that asked for it): the worktree's
-- folder; its branch is `iris/<session id>`. NULL: the team's own folder.
ALTER TABLE sessions ADD COLUMN worktree TEXT;
