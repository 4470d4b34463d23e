-- As SQLite's migration 5: an enqueue changes its key's key_heads row only when the new job is
-- due earlier than the head (an unchanged upsert still writes a new row version here).
CREATE OR REPLACE FUNCTION jobs_key_head() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NEW.state = 'queued' AND NEW.resource_key IS NOT NULL THEN
      INSERT INTO key_heads (resource_key, route, head_at)
        VALUES (NEW.resource_key, NEW.route, NEW.next_attempt_at)
        ON CONFLICT (resource_key, route)
        DO UPDATE SET head_at = excluded.head_at WHERE excluded.head_at < key_heads.head_at;
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
