-- Hubs keep the inventory in memory (which vehicles they take telemetry from) and learn of
-- changes when told, as they learn of geofence and rule changes (0015, 0055). One
-- notification per vehicle rather than per statement: the table also changes for
-- bookings and mileage all day, and only additions, removals and (un)retirements matter,
-- so a hub applies each one without reading the table again. The payload is
-- `<active|retired|gone> <vehicle id>`; after a TRUNCATE it is `reload`. Hubs still reload
-- the whole inventory now and then, in case a notification went unheard.
CREATE FUNCTION vehicles_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('freecar_vehicles', 'reload');
        RETURN NULL;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') AND (TG_OP = 'DELETE' OR OLD.id <> NEW.id) THEN
        PERFORM pg_notify('freecar_vehicles', 'gone ' || OLD.id);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM pg_notify(
            'freecar_vehicles',
            CASE WHEN NEW.status = 'retired' THEN 'retired ' ELSE 'active ' END || NEW.id
        );
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER vehicles_notify_rows
    AFTER INSERT OR DELETE ON vehicles
    FOR EACH ROW EXECUTE FUNCTION vehicles_notify();

-- Only the updates that change what a hub knows: a new id, or a move into or out of
-- `retired`.
CREATE TRIGGER vehicles_notify_standing
    AFTER UPDATE OF id, status ON vehicles
    FOR EACH ROW
    WHEN (OLD.id IS DISTINCT FROM NEW.id
          OR (OLD.status = 'retired') IS DISTINCT FROM (NEW.status = 'retired'))
    EXECUTE FUNCTION vehicles_notify();

CREATE TRIGGER vehicles_notify_truncate
    AFTER TRUNCATE ON vehicles
    FOR EACH STATEMENT EXECUTE FUNCTION vehicles_notify();
