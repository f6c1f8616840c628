-- Each vehicle's latest known state. Ingest moves it forward only (a backfilled older fix
-- never overwrites a newer one), so it can be upserted per batch in any order.
CREATE TABLE vehicle_state (
    vehicle_id        text PRIMARY KEY REFERENCES vehicles (id) ON DELETE CASCADE,
    ts                timestamptz NOT NULL,
    seq               bigint NOT NULL,
    lat               double precision,
    lon               double precision,
    speed_kmh         real,
    heading           real,
    odometer_km       double precision,
    fuel_pct          real,
    battery_pct       real,
    locked            boolean NOT NULL,
    doors_open        boolean NOT NULL,
    engine_on         boolean NOT NULL,
    alarm             boolean,
    online            boolean NOT NULL DEFAULT false,
    online_changed_at timestamptz,
    last_seen_at      timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK ((lat IS NULL) = (lon IS NULL))
);
