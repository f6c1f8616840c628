-- Hubs reload the event rules when told, as they reload the geofences (0015). A trigger
-- rather than NOTIFYs sent by the API: every writer (the API, an operator in psql, a
-- geofence deleted with its rules) wakes every hub, and the notification leaves only when
-- the change commits. One per statement: hubs reload every rule anyway, and PostgreSQL
-- folds identical notifications of one transaction into one. Hubs still reload at every
-- silence sweep, in case a notification went unheard.
CREATE FUNCTION event_rules_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('freecar_event_rules', TG_OP);
    RETURN NULL;
END
$$;

CREATE TRIGGER event_rules_notify
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON event_rules
    FOR EACH STATEMENT EXECUTE FUNCTION event_rules_notify();

-- A rule reacts to an alarm; it never opens a car. The API refuses `unlock` and `mobilize`
-- (409 command_not_allowed); the constraint makes sure a rule written in SQL cannot either,
-- since the hub issues whatever command a rule names.
ALTER TABLE event_rules DROP CONSTRAINT event_rules_command_check;
ALTER TABLE event_rules ADD CONSTRAINT event_rules_command_check
    CHECK (command IN ('lock', 'locate', 'honk', 'immobilize'));
