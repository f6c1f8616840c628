-- Bookings (the minimal table the bookings issue extends) and maintenance windows.
--
-- Two bookings of one vehicle must never overlap, and neither may two of its maintenance
-- windows; the database makes both impossible, not the application:
--
-- * with btree_gist (0001 creates it where the server has it): EXCLUDE USING gist over
--   (vehicle_id WITH =, period WITH &&), the textbook constraint (see below for its COLLATE);
-- * without it (the embedded PostgreSQL ships no contrib): a trigger that first locks the
--   vehicle's row (SELECT ... FOR NO KEY UPDATE on vehicles), so writers of one vehicle
--   queue up, then refuses an overlap with SQLSTATE 23P01 (exclusion_violation), the same
--   error the constraint raises, so callers handle one error whatever the path.
--
-- `SET freecar.btree_gist = off` before migrating (or `options=-c freecar.btree_gist=off`
-- in the URL) takes the trigger path on a server that has btree_gist: that is how the
-- tests cover both paths on one server, like freecar.timescaledb in 0001.
--
-- Periods are [from, to) ranges: a booking ending at 10:00 and the next starting at 10:00
-- touch but do not overlap. The buffer between bookings is an API setting applied when
-- searching, not a database rule.

CREATE TABLE bookings (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    vehicle_id text NOT NULL REFERENCES vehicles (id),
    user_id    uuid NOT NULL REFERENCES users (id),
    period     tstzrange NOT NULL
               CHECK (NOT isempty(period) AND NOT lower_inf(period) AND NOT upper_inf(period)
                      AND lower_inc(period) AND NOT upper_inc(period)),
    status     text NOT NULL DEFAULT 'confirmed'
               CHECK (status IN ('confirmed', 'active', 'completed', 'cancelled')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A rider's bookings, newest first.
CREATE INDEX bookings_user ON bookings (user_id, created_at DESC);
-- Availability looks at a vehicle's bookings that end after the window starts; this index
-- answers that from the index alone (period included), on both paths.
CREATE INDEX bookings_vehicle_end ON bookings (vehicle_id, upper(period)) INCLUDE (period)
    WHERE status <> 'cancelled';

CREATE TABLE maintenance_windows (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    vehicle_id text NOT NULL REFERENCES vehicles (id) ON DELETE CASCADE,
    period     tstzrange NOT NULL
               CHECK (NOT isempty(period) AND NOT lower_inf(period) AND NOT upper_inf(period)
                      AND lower_inc(period) AND NOT upper_inc(period)),
    reason     text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    created_by uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX maintenance_windows_vehicle_end ON maintenance_windows (vehicle_id, upper(period))
    INCLUDE (period);

-- The trigger path's functions exist on both paths (they cost nothing unattached), so a
-- later migration or a test can rely on them.
CREATE FUNCTION bookings_refuse_overlap() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'cancelled' THEN
        RETURN NEW;
    END IF;
    -- Under REPEATABLE READ the check below would read a snapshot taken before the lock
    -- was granted and miss a booking committed meanwhile; READ COMMITTED (the default) sees
    -- it, SERIALIZABLE detects the conflict itself.
    IF current_setting('transaction_isolation') = 'repeatable read' THEN
        RAISE EXCEPTION 'bookings cannot be written under REPEATABLE READ without btree_gist'
            USING ERRCODE = 'feature_not_supported';
    END IF;
    -- Serialises every writer of this vehicle's bookings: the next one waits here and then
    -- sees this one's row. NO KEY UPDATE, the row lock an UPDATE of the vehicle takes:
    -- it queues booking writers behind each other but, unlike FOR UPDATE, not behind the
    -- key-share locks that inserts referencing the vehicle (telemetry, events) hold.
    PERFORM 1 FROM vehicles WHERE id = NEW.vehicle_id FOR NO KEY UPDATE;
    IF EXISTS (
        SELECT 1 FROM bookings
        WHERE vehicle_id = NEW.vehicle_id AND id <> NEW.id AND status <> 'cancelled'
          AND period && NEW.period
    ) THEN
        RAISE EXCEPTION 'vehicle % is already booked during %', NEW.vehicle_id, NEW.period
            USING ERRCODE = 'exclusion_violation', CONSTRAINT = 'bookings_no_overlap',
                  TABLE = 'bookings';
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION maintenance_windows_refuse_overlap() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('transaction_isolation') = 'repeatable read' THEN
        RAISE EXCEPTION
            'maintenance windows cannot be written under REPEATABLE READ without btree_gist'
            USING ERRCODE = 'feature_not_supported';
    END IF;
    PERFORM 1 FROM vehicles WHERE id = NEW.vehicle_id FOR NO KEY UPDATE;
    IF EXISTS (
        SELECT 1 FROM maintenance_windows
        WHERE vehicle_id = NEW.vehicle_id AND id <> NEW.id AND period && NEW.period
    ) THEN
        RAISE EXCEPTION 'vehicle % already has maintenance during %', NEW.vehicle_id, NEW.period
            USING ERRCODE = 'exclusion_violation', CONSTRAINT = 'maintenance_windows_no_overlap',
                  TABLE = 'maintenance_windows';
    END IF;
    RETURN NEW;
END
$$;

-- The constraints compare vehicle ids under the "C" collation: for ids (ASCII, and
-- deterministic collations compare equal bytes as equal anyway) that is the same equality,
-- but the planner can then no longer use these GiST indexes for a plain `vehicle_id = x`
-- lookup. It would otherwise prefer them for the search's per-vehicle availability probes,
-- where a btree_gist text lookup measured about five times slower than the btree above.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'btree_gist')
       AND coalesce(current_setting('freecar.btree_gist', true), '') <> 'off' THEN
        ALTER TABLE bookings ADD CONSTRAINT bookings_no_overlap
            EXCLUDE USING gist ((vehicle_id COLLATE "C") WITH =, period WITH &&)
            WHERE (status <> 'cancelled');
        ALTER TABLE maintenance_windows ADD CONSTRAINT maintenance_windows_no_overlap
            EXCLUDE USING gist ((vehicle_id COLLATE "C") WITH =, period WITH &&);
    ELSE
        CREATE TRIGGER bookings_no_overlap
            BEFORE INSERT OR UPDATE OF vehicle_id, period, status ON bookings
            FOR EACH ROW EXECUTE FUNCTION bookings_refuse_overlap();
        CREATE TRIGGER maintenance_windows_no_overlap
            BEFORE INSERT OR UPDATE OF vehicle_id, period ON maintenance_windows
            FOR EACH ROW EXECUTE FUNCTION maintenance_windows_refuse_overlap();
    END IF;
END
$$;
