-- resendd schema 7: a claim moves its keys' heads itself, with one row update per key.
-- Before, a trigger did it for every job that left 'queued': it deleted the key's key_heads row,
-- looked up the key's next queued job in jobs_key_due and inserted the row again. In delivery of
-- 200,000 keyed jobs (bench/, SQLite's statement profile) that trigger was a third of the
-- claim's UPDATE, 13 of its 36 µs per job. The claim has just read the key's queued jobs in
-- order, so it knows the next head without looking it up again (sqlite_store.cpp, claim).
--
-- What key_heads promises is now: every key with a queued job has a row whose head_at is at or
-- before that key's earliest queued job. A job that goes back to 'queued' (a retry, a lease that
-- expired, retry of a dead job) or is due earlier brings the head forward, as an insert does. A
-- job that leaves 'queued' by another way than a claim (a cancel) may leave the row early, or
-- with nothing queued behind it: the next claim that visits the key puts it right.
DROP TRIGGER jobs_key_head_update;
CREATE TRIGGER jobs_key_head_update AFTER UPDATE OF state, next_attempt_at ON jobs
  WHEN NEW.resource_key IS NOT NULL AND NEW.state = 'queued'
BEGIN
  INSERT INTO key_heads (resource_key, route, head_at)
    VALUES (NEW.resource_key, NEW.route, NEW.next_attempt_at)
    ON CONFLICT (resource_key, route) DO UPDATE SET head_at = excluded.head_at
      WHERE excluded.head_at < key_heads.head_at;
END;
