-- resendd schema 1: the job queue and its attempt log.
-- Timestamps are ISO-8601 UTC text with milliseconds ("2026-11-26T12:00:00.000Z"): fixed width,
-- so comparing text compares time, and sqlite3 users read them as they are.

CREATE TABLE jobs (
  id              TEXT PRIMARY KEY,           -- what POST /resend returned
  state           TEXT NOT NULL CHECK (state IN ('queued', 'delivering', 'succeeded', 'dead', 'cancelled')),
  route           TEXT NOT NULL,              -- name of the route the location matched
  method          TEXT NOT NULL,
  location        TEXT NOT NULL,
  request         TEXT NOT NULL,              -- the /resend body as received (json_parse not applied)
  idempotency_key TEXT UNIQUE,                -- the Idempotency-Key header, if any
  client_token    TEXT,                       -- Feishu client_token sent on every attempt, if any
  resource_key    TEXT,                       -- writes sharing a key are serialized (see routes)
  attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),        -- tries that count
  free_attempts   INTEGER NOT NULL DEFAULT 0 CHECK (free_attempts >= 0),   -- rate-limited tries
  auth_refreshes  INTEGER NOT NULL DEFAULT 0 CHECK (auth_refreshes >= 0),
  next_attempt_at TEXT NOT NULL,
  lease_until     TEXT,                       -- set while delivering
  created_at      TEXT NOT NULL,
  updated_at      TEXT NOT NULL,
  finished_at     TEXT,                       -- when succeeded, dead or cancelled
  last_status     INTEGER,                    -- HTTP status of the last attempt
  last_error      TEXT,                       -- why the last attempt did not succeed
  last_response   TEXT,                       -- first KiBs of the last response
  CHECK ((state = 'delivering') = (lease_until IS NOT NULL))
) STRICT;

-- The claim's indexes: due jobs without a resource key in time order; jobs with a key grouped
-- by key, then in time order (one probe finds the next key, one its earliest due job).
CREATE INDEX jobs_due_unkeyed ON jobs (next_attempt_at, id) WHERE state = 'queued' AND resource_key IS NULL;
CREATE INDEX jobs_key_due ON jobs (resource_key, next_attempt_at, id)
  WHERE state = 'queued' AND resource_key IS NOT NULL;
-- The dispatcher's next wake-up: the earliest queued job.
CREATE INDEX jobs_due ON jobs (next_attempt_at) WHERE state = 'queued';
-- In-flight counts per resource and per route, for the claim's concurrency limits.
CREATE INDEX jobs_delivering ON jobs (resource_key, route) WHERE state = 'delivering';
-- Operators' and the admin API's listings: by state, newest first.
CREATE INDEX jobs_state_created ON jobs (state, created_at);
CREATE INDEX jobs_created ON jobs (created_at);

CREATE TABLE attempts (
  job_id      TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  n           INTEGER NOT NULL CHECK (n >= 1),   -- 1 = first try, counting every try
  started_at  TEXT NOT NULL,
  duration_ms INTEGER NOT NULL,
  http_status INTEGER,
  feishu_code INTEGER,
  outcome     TEXT NOT NULL CHECK (outcome IN ('succeeded', 'retry', 'rate_limited', 'refresh_credentials', 'dead')),
  error       TEXT,
  response    TEXT,                              -- first KiBs, secrets masked
  PRIMARY KEY (job_id, n)
) STRICT;

-- Earliest next write per resource key (routes with key_min_gap).
CREATE TABLE key_gaps (
  resource_key TEXT PRIMARY KEY,
  not_before   TEXT NOT NULL
) STRICT;
