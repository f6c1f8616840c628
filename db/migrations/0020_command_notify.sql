-- Commands wake whoever waits for them. Triggers rather than NOTIFYs sent by the application:
-- every writer (the API, `freecar command`, a hub, an operator in psql) wakes the hubs'
-- dispatchers and every waiter alike, and a notification leaves only when its row commits.
--   freecar_commands        a new command to send (payload: its id)
--   freecar_command_status  a command changed status (payload: "<id> <status>")
CREATE FUNCTION vehicle_commands_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('freecar_commands', NEW.id::text);
    END IF;
    IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN
        PERFORM pg_notify('freecar_command_status', NEW.id::text || ' ' || NEW.status);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER vehicle_commands_notify
    AFTER INSERT OR UPDATE OF status ON vehicle_commands
    FOR EACH ROW EXECUTE FUNCTION vehicle_commands_notify();

-- The protocol refuses tokens that live longer than an hour (protocol/schema.py).
ALTER TABLE vehicle_commands
    ADD CONSTRAINT vehicle_commands_ttl_at_most_an_hour
    CHECK (expires_at <= created_at + interval '1 hour');
