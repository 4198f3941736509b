-- The draws of many requests in one call (the API sends those of one event-loop turn together, as
-- the SQLite limiter shares one transaction among them): one round trip and one statement where
-- there were as many as requests. Measured on the create route, the per-request draw of 0003 took
-- about half of what PostgreSQL could serve. Each request stays all or nothing across its budgets,
-- and requests are decided in the order given, each seeing the budgets the ones before it drew.
-- proxy_consume_rate (0003) stays for API processes of the release before, during an upgrade, and
-- now calls this one, so both decide the same way.
CREATE FUNCTION proxy_consume_rates(owners INT[], keys TEXT[], intervals BIGINT[], tolerances BIGINT[], now_ms BIGINT)
RETURNS TABLE (allowed_out BOOLEAN, tat_out BIGINT) LANGUAGE plpgsql AS $$
DECLARE
  n INT := coalesce(array_length(keys, 1), 0);
  verdicts BOOLEAN[] := '{}';
  tats BIGINT[] := '{}';
  first_i INT := 1;
  last_i INT;
  every_one BOOLEAN;
  current_tat BIGINT;
BEGIN
  -- Rows exist first, then are locked in key order, so two calls never deadlock.
  INSERT INTO rate_limits (key, tat) SELECT DISTINCT k, now_ms FROM unnest(keys) AS k ON CONFLICT (key) DO NOTHING;
  PERFORM 1 FROM rate_limits r WHERE r.key = ANY (keys) ORDER BY r.key FOR UPDATE;
  -- A request's budgets are the consecutive entries with the same owner.
  WHILE first_i <= n LOOP
    last_i := first_i;
    WHILE last_i < n AND owners[last_i + 1] = owners[first_i] LOOP
      last_i := last_i + 1;
    END LOOP;
    every_one := true;
    FOR i IN first_i .. last_i LOOP
      SELECT greatest(r.tat, now_ms) INTO current_tat FROM rate_limits r WHERE r.key = keys[i];
      IF current_tat - now_ms <= tolerances[i] THEN
        verdicts[i] := true;
        tats[i] := current_tat + intervals[i];
      ELSE
        verdicts[i] := false;
        tats[i] := current_tat;
        every_one := false;
      END IF;
    END LOOP;
    IF every_one THEN
      FOR i IN first_i .. last_i LOOP
        UPDATE rate_limits r SET tat = tats[i] WHERE r.key = keys[i];
      END LOOP;
    END IF;
    first_i := last_i + 1;
  END LOOP;
  RETURN QUERY SELECT v, t FROM unnest(verdicts, tats) AS u(v, t);
END $$;

CREATE OR REPLACE FUNCTION proxy_consume_rate(keys TEXT[], intervals BIGINT[], tolerances BIGINT[], now_ms BIGINT)
RETURNS TABLE (allowed_out BOOLEAN, tat_out BIGINT) LANGUAGE sql AS $$
  SELECT * FROM proxy_consume_rates(array_fill(0, ARRAY[coalesce(array_length(keys, 1), 0)]), keys, intervals, tolerances, now_ms)
$$;
