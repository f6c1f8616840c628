-- Which of two fixes of a vehicle is the newer, for `vehicle_state` (hub/ordering.py holds
-- the same rule for the hub's memory; docs/protocol.md explains it). A unit's clock can be
-- minutes off, so its persisted counter `seq` decides first: a higher seq is newer. A lower
-- seq is newer only when its ts is later than the stored one by more than `allowance` (the
-- hub's FREECAR_HUB_MAX_FUTURE_S): no clock passes the hub's future filter that far ahead,
-- so that much later is real time, and the unit's counter started again. Equal seqs, or a
-- stored state without one, compare ts.
CREATE FUNCTION vehicle_fix_is_newer(
    seq bigint, ts timestamptz, than_seq bigint, than_ts timestamptz, allowance interval
) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN than_seq IS NULL OR seq = than_seq THEN ts > than_ts
        WHEN seq > than_seq THEN true
        ELSE ts > than_ts + allowance
    END
$$;

-- Status messages were dated by the unit's clock without a bound, so a status from the
-- future could set presence_at ahead and make every later piece of evidence look old. The
-- hub now dates evidence no later than it receives it; bring rows already ahead back.
UPDATE vehicle_state SET presence_at = now() WHERE presence_at > now();
