-- An enqueue on a key that already has queued jobs leaves its key_heads row alone unless the new
-- job is due earlier (it rarely is: new jobs are due now, the head is older). Before, the upsert
-- set head_at = min(head_at, ...) every time: the same value, but SQLite still rewrites the row
-- and its key_heads_due entry, two more pages in every commit's log for each keyed job
-- (measured with scripts/bench.sh: the intake's log writes per job, see the README).
DROP TRIGGER jobs_key_head_insert;
CREATE TRIGGER jobs_key_head_insert AFTER INSERT ON jobs
  WHEN NEW.state = 'queued' AND NEW.resource_key IS NOT NULL
BEGIN
  INSERT INTO key_heads (resource_key, route, head_at)
    VALUES (NEW.resource_key, NEW.route, NEW.next_attempt_at)
    ON CONFLICT (resource_key, route) DO UPDATE SET head_at = excluded.head_at
      WHERE excluded.head_at < key_heads.head_at;
END;
