-- Each vehicle's standing with each geofence, so that a hub restart does not fire events
-- again. A row exists once a vehicle has been near enough to a fence to matter; a missing
-- row means outside. `inside` is the hysteresis state and `since` when it last flipped;
-- `pending_since` is when a dwell began (inside, not yet long enough to count as entered).
-- `fix_*` is the fix that last changed the row: hubs write a row only with a newer fix, so
-- batches may be saved in any order and by several hubs.
CREATE TABLE geofence_state (
    vehicle_id    text NOT NULL REFERENCES vehicles (id) ON DELETE CASCADE,
    geofence_id   bigint NOT NULL REFERENCES geofences (id) ON DELETE CASCADE,
    inside        boolean NOT NULL,
    since         timestamptz,
    pending_since timestamptz,
    fix_ts        timestamptz NOT NULL,
    fix_lat       double precision NOT NULL CHECK (fix_lat BETWEEN -90 AND 90),
    fix_lon       double precision NOT NULL CHECK (fix_lon BETWEEN -180 AND 180),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (vehicle_id, geofence_id),
    CHECK (NOT (inside AND pending_since IS NOT NULL))
);

-- The primary key leads with the vehicle; deleting a fence cascades by fence.
CREATE INDEX geofence_state_geofence ON geofence_state (geofence_id);

-- Hubs reload their fences when told. A trigger rather than NOTIFYs sent by the API: every
-- writer (the API, `freecar geofence import`, an operator in psql) wakes every hub, and the
-- notification leaves only when the change commits. One per statement: hubs reload all
-- fences anyway, and PostgreSQL folds identical notifications of one transaction into one.
CREATE FUNCTION geofences_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('freecar_geofences', TG_OP);
    RETURN NULL;
END
$$;

CREATE TRIGGER geofences_notify
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON geofences
    FOR EACH STATEMENT EXECUTE FUNCTION geofences_notify();

-- A deactivated fence is dropped by the hubs with its in-memory state; drop the stored
-- state too, or a reactivation would resume from a stay that ended long ago.
CREATE FUNCTION geofences_forget_state() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM geofence_state WHERE geofence_id = NEW.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER geofences_forget_state
    AFTER UPDATE OF active ON geofences
    FOR EACH ROW WHEN (OLD.active AND NOT NEW.active)
    EXECUTE FUNCTION geofences_forget_state();
