-- resendd schema 2: fencing tokens, per-route fair claims, fresh age windows on manual retry.
--
-- claim_no: every claim gives the job a new number that its delivery carries; finish, cancel and
--   retry change the row only while it still matches (a fencing token).
-- inflight_until: the lease of the latest claim. Unlike lease_until it survives a cancel, so a
--   job cancelled mid-delivery cannot be retried (and sent twice at once) until that delivery ends.
-- retried_at: a manual retry starts a new max_age window from here (created_at stays the truth).
ALTER TABLE jobs ADD COLUMN claim_no INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN inflight_until TEXT;
ALTER TABLE jobs ADD COLUMN retried_at TEXT;

-- Claims are made per route: due unkeyed jobs of one route in time order ...
DROP INDEX jobs_due_unkeyed;
CREATE INDEX jobs_route_due ON jobs (route, next_attempt_at, id)
  WHERE state = 'queued' AND resource_key IS NULL;
-- ... and, for keyed jobs, the earliest due jobs of one key on one route.
DROP INDEX jobs_key_due;
CREATE INDEX jobs_key_due ON jobs (resource_key, route, next_attempt_at, id)
  WHERE state = 'queued' AND resource_key IS NOT NULL;
-- The wake-up time now comes from the per-route indexes and key_heads.
DROP INDEX jobs_due;
-- In-flight rows by lease: expired leases are found with one probe; counting what is busy reads
-- only the rows in flight.
DROP INDEX jobs_delivering;
CREATE INDEX jobs_leases ON jobs (lease_until) WHERE state = 'delivering';
-- Purge and retention: finished jobs by age.
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;

-- One row per (key, route) that has queued jobs: when the earliest of them is due. The claim
-- walks this in time order, so it visits only keys with a due job, never idle ones. Kept by the
-- triggers below, so every path that changes a job keeps it right.
CREATE TABLE key_heads (
  resource_key TEXT NOT NULL,
  route        TEXT NOT NULL,
  head_at      TEXT NOT NULL,
  PRIMARY KEY (resource_key, route)
) STRICT, WITHOUT ROWID;
CREATE INDEX key_heads_due ON key_heads (route, head_at);

INSERT INTO key_heads (resource_key, route, head_at)
  SELECT resource_key, route, min(next_attempt_at) FROM jobs
  WHERE state = 'queued' AND resource_key IS NOT NULL GROUP BY resource_key, route;

CREATE TRIGGER jobs_key_head_insert AFTER INSERT ON jobs
  WHEN NEW.state = 'queued' AND NEW.resource_key IS NOT NULL
BEGIN
  INSERT INTO key_heads (resource_key, route, head_at)
    VALUES (NEW.resource_key, NEW.route, NEW.next_attempt_at)
    ON CONFLICT (resource_key, route) DO UPDATE SET head_at = min(head_at, excluded.head_at);
END;

CREATE TRIGGER jobs_key_head_update AFTER UPDATE OF state, next_attempt_at ON jobs
  WHEN NEW.resource_key IS NOT NULL AND (OLD.state = 'queued' OR NEW.state = 'queued')
BEGIN
  DELETE FROM key_heads WHERE resource_key = NEW.resource_key AND route = NEW.route;
  INSERT INTO key_heads (resource_key, route, head_at)
    SELECT resource_key, route, next_attempt_at FROM jobs INDEXED BY jobs_key_due
    WHERE state = 'queued' AND resource_key = NEW.resource_key AND route = NEW.route
    ORDER BY next_attempt_at LIMIT 1;
END;

CREATE TRIGGER jobs_key_head_delete AFTER DELETE ON jobs
  WHEN OLD.state = 'queued' AND OLD.resource_key IS NOT NULL
BEGIN
  DELETE FROM key_heads WHERE resource_key = OLD.resource_key AND route = OLD.route;
  INSERT INTO key_heads (resource_key, route, head_at)
    SELECT resource_key, route, next_attempt_at FROM jobs INDEXED BY jobs_key_due
    WHERE state = 'queued' AND resource_key = OLD.resource_key AND route = OLD.route
    ORDER BY next_attempt_at LIMIT 1;
END;

-- /readyz after a failed commit proves the store writes again by inserting and deleting a row
-- here (it allocates pages and writes the log like a real job would).
CREATE TABLE store_probe (id INTEGER PRIMARY KEY, filler BLOB) STRICT;
