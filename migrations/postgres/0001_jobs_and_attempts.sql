-- resendd PostgreSQL schema 1: the job queue, its attempt log and what the claim needs.
-- The same columns as the SQLite schema (migrations/*.sql, version 4), with timestamptz for times
-- and one more column, claimed_by: which daemon holds a delivering job's lease. Several daemons
-- share these tables; see src/store/pg_store.cpp for how they coordinate.

-- Times as resendd writes them everywhere else: ISO-8601 UTC with milliseconds.
CREATE FUNCTION resendd_ts(t timestamptz) RETURNS text LANGUAGE sql STABLE AS
$$ SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') $$;

CREATE TABLE jobs (
  id              text PRIMARY KEY,           -- what POST /resend returned (UUIDv7)
  state           text NOT NULL CHECK (state IN ('queued', 'delivering', 'succeeded', 'dead', 'cancelled')),
  route           text NOT NULL,
  method          text NOT NULL,
  location        text NOT NULL,
  request         text NOT NULL,              -- the /resend body as received
  idempotency_key text UNIQUE,                -- unique across every daemon
  client_token    text,
  resource_key    text,
  attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  free_attempts   integer NOT NULL DEFAULT 0 CHECK (free_attempts >= 0),
  auth_refreshes  integer NOT NULL DEFAULT 0 CHECK (auth_refreshes >= 0),
  claim_no        bigint NOT NULL DEFAULT 0,  -- fencing token: a new one at every claim
  claimed_by      text,                       -- the daemon slot that made the latest claim
  next_attempt_at timestamptz NOT NULL,
  lease_until     timestamptz,                -- set while delivering
  inflight_until  timestamptz,                -- the latest claim's lease; survives a cancel
  created_at      timestamptz NOT NULL,
  updated_at      timestamptz NOT NULL,
  finished_at     timestamptz,
  retried_at      timestamptz,
  last_status     integer,
  last_error      text,
  last_response   text,
  CHECK ((state = 'delivering') = (lease_until IS NOT NULL))
);

CREATE INDEX jobs_route_due ON jobs (route, next_attempt_at, id)
  WHERE state = 'queued' AND resource_key IS NULL;
CREATE INDEX jobs_key_due ON jobs (resource_key, route, next_attempt_at, id)
  WHERE state = 'queued' AND resource_key IS NOT NULL;
CREATE INDEX jobs_leases ON jobs (lease_until) INCLUDE (route, resource_key, claimed_by)
  WHERE state = 'delivering';
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_state_created ON jobs (state, created_at) INCLUDE (route);

CREATE TABLE attempts (
  job_id      text NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
  n           integer NOT NULL CHECK (n >= 1),
  started_at  timestamptz NOT NULL,
  duration_ms integer NOT NULL,
  http_status integer,
  feishu_code bigint,
  outcome     text NOT NULL CHECK (outcome IN ('succeeded', 'retry', 'rate_limited', 'refresh_credentials', 'dead')),
  error       text,
  response    text,
  PRIMARY KEY (job_id, n)
);

CREATE TABLE key_gaps (
  resource_key text PRIMARY KEY,
  not_before   timestamptz NOT NULL
);

-- One row per (key, route) with queued jobs: when the earliest is due (see the SQLite schema 2).
CREATE TABLE key_heads (
  resource_key text NOT NULL,
  route        text NOT NULL,
  head_at      timestamptz NOT NULL,
  PRIMARY KEY (resource_key, route)
);
CREATE INDEX key_heads_due ON key_heads (route, head_at);

CREATE FUNCTION resendd_key_head(k text, r text) RETURNS void LANGUAGE sql AS $$
  DELETE FROM key_heads WHERE resource_key = k AND route = r;
  INSERT INTO key_heads (resource_key, route, head_at)
    SELECT resource_key, route, next_attempt_at FROM jobs
    WHERE state = 'queued' AND resource_key = k AND route = r
    ORDER BY next_attempt_at LIMIT 1
  ON CONFLICT (resource_key, route) DO UPDATE SET head_at = excluded.head_at;
$$;

CREATE FUNCTION jobs_key_head() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NEW.state = 'queued' AND NEW.resource_key IS NOT NULL THEN
      INSERT INTO key_heads (resource_key, route, head_at)
        VALUES (NEW.resource_key, NEW.route, NEW.next_attempt_at)
        ON CONFLICT (resource_key, route)
        DO UPDATE SET head_at = least(key_heads.head_at, excluded.head_at);
    END IF;
  ELSIF TG_OP = 'UPDATE' THEN
    IF NEW.resource_key IS NOT NULL AND (OLD.state = 'queued' OR NEW.state = 'queued')
       AND (OLD.state <> NEW.state OR OLD.next_attempt_at <> NEW.next_attempt_at) THEN
      PERFORM resendd_key_head(NEW.resource_key, NEW.route);
    END IF;
  ELSIF OLD.state = 'queued' AND OLD.resource_key IS NOT NULL THEN
    PERFORM resendd_key_head(OLD.resource_key, OLD.route);
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER jobs_key_head AFTER INSERT OR UPDATE OR DELETE ON jobs
  FOR EACH ROW EXECUTE FUNCTION jobs_key_head();

-- /readyz after a failed commit proves the store writes again with a row here.
CREATE TABLE store_probe (id integer PRIMARY KEY, filler bytea);
