-- Which Iris process took a job to run it: with several processes on one
-- database, a job is claimed before it runs and one claimer wins. NULL:
-- not taken (queued, or put back after an interruption).
ALTER TABLE jobs ADD COLUMN claimed_by TEXT;
