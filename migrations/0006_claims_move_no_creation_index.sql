-- resendd schema 6: a claim or an outcome no longer moves an index entry ordered by creation time.
-- jobs_state_created (state, created_at, route) held every job under its state. A claim moved
-- the job from 'queued' to 'delivering' in it and the outcome moved it again: for jobs claimed
-- out of creation order (retries, due times that differ from arrival) each move is one more
-- page in the commit's log. Measured with bench/ (a claim of 64 such jobs at 1M queued): 119
-- pages written and 2.2 ms per claim before, 69 pages and 1.4 ms after.
DROP INDEX jobs_state_created;
-- Every job by creation time. Neither column ever changes, so this is written once, at enqueue,
-- and no claim or outcome touches it. It serves listings of queued and delivering jobs newest
-- first, the oldest queued job, and the count of jobs per route at start (queued = all jobs of
-- a route less those delivering and finished, both counted from the indexes that hold them).
CREATE INDEX jobs_created ON jobs (created_at, route);
-- Finished jobs (succeeded, dead, cancelled) by state, newest first: a job enters once, when it
-- finishes, and leaves when it is purged or retried. A query uses it when its WHERE repeats this
-- index's condition.
CREATE INDEX jobs_finished_state ON jobs (state, created_at, route)
  WHERE state NOT IN ('queued', 'delivering');
