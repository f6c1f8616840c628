-- Optional extensions, each used only where present.
--
-- timescaledb: telemetry becomes a hypertable with compression and retention (0003).
--   It must be preloaded (shared_preload_libraries); a server that has the files but not
--   the preload cannot create it, so we check both. `freecar migrate` sets
--   freecar.timescaledb = off when told not to use it (operators' choice, and how the
--   tests cover the plain-table path on a server that has TimescaleDB).
-- btree_gist: lets bookings use EXCLUDE USING gist over (vehicle, time range). The
--   embedded PostgreSQL ships without contrib; later migrations fall back to row locks.
-- cube + earthdistance: index-backed radius search for riders looking for a car.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
       AND current_setting('shared_preload_libraries', true) LIKE '%timescaledb%'
       AND coalesce(current_setting('freecar.timescaledb', true), '') <> 'off' THEN
        CREATE EXTENSION IF NOT EXISTS timescaledb;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'btree_gist') THEN
        CREATE EXTENSION IF NOT EXISTS btree_gist;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'earthdistance') THEN
        CREATE EXTENSION IF NOT EXISTS cube;
        CREATE EXTENSION IF NOT EXISTS earthdistance;
    END IF;
END
$$;
