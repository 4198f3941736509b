-- A budget is at most spent whole: a draw leaves its tat at most its tolerance and one interval ahead
-- of now. Further ahead (by more than a second, CLOCK_STEP_SLACK_MS: the API hosts read the server's
-- clock each through its own offset), the server's clock stepped back since (a clock corrected, a machine restored
-- from a snapshot), and every budget drawn before the step refused for as long as the step (an hour
-- back: an hour of 429s for every client). Such a tat is now taken as spent whole, and written so
-- whether the request is allowed or not, so the budget fills again as the clock now runs. The
-- signature is unchanged, so the release before runs on it as on 0007's (and proxy_consume_rate,
-- which calls this one, decides the same way).
CREATE OR REPLACE FUNCTION proxy_consume_rates(owners INT[], keys TEXT[], intervals BIGINT[], tolerances BIGINT[], now_ms BIGINT)
RETURNS TABLE (allowed_out BOOLEAN, tat_out BIGINT) LANGUAGE plpgsql AS $$
DECLARE
  n INT := coalesce(array_length(keys, 1), 0);
  verdicts BOOLEAN[] := '{}';
  tats BIGINT[] := '{}';
  first_i INT := 1;
  last_i INT;
  every_one BOOLEAN;
  stored_tat BIGINT;
  full_tat BIGINT;
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
      SELECT r.tat INTO stored_tat FROM rate_limits r WHERE r.key = keys[i];
      full_tat := now_ms + tolerances[i] + intervals[i];
      IF stored_tat > full_tat + 1000 THEN
        UPDATE rate_limits r SET tat = full_tat WHERE r.key = keys[i];
        stored_tat := full_tat;
      END IF;
      current_tat := greatest(stored_tat, now_ms);
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
