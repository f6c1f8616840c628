-- Every fix the fleet reports. (vehicle_id, ts) is the storage key: MQTT QoS 1 delivers at
-- least once, and INSERT ... ON CONFLICT DO NOTHING on this key makes storage exactly once.
--
-- No foreign key to vehicles: ingest writes by binary COPY at tens of thousands of rows a
-- second, and TimescaleDB compression works best without one. The broker's ACL is what
-- keeps unknown vehicles out.
CREATE TABLE telemetry (
    vehicle_id     text NOT NULL,
    ts             timestamptz NOT NULL,
    seq            bigint NOT NULL,
    lat            double precision,
    lon            double precision,
    speed_kmh      real,
    heading        real,
    odometer_km    double precision,
    fuel_pct       real,
    battery_pct    real,
    locked         boolean NOT NULL,
    doors_open     boolean NOT NULL,
    engine_on      boolean NOT NULL,
    alarm          boolean,
    accuracy_m     real,
    -- Fields a newer unit sent that protocol v1 does not name: kept, never rejected.
    extra          jsonb,
    received_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((lat IS NULL) = (lon IS NULL))
);

-- One index is both the conflict key and the per-vehicle "latest fixes" index.
CREATE UNIQUE INDEX telemetry_vehicle_ts ON telemetry (vehicle_id, ts DESC);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        -- One-day chunks: a 10,000-car fleet reporting every 5 s writes ~170M rows a day,
        -- and a day's chunk plus its index stays in memory on a modest server.
        PERFORM create_hypertable('telemetry', by_range('ts', INTERVAL '1 day'));
        ALTER TABLE telemetry SET (
            timescaledb.compress,
            timescaledb.compress_segmentby = 'vehicle_id',
            timescaledb.compress_orderby = 'ts DESC'
        );
        -- Late backfill arrives within hours, rarely days: compress after a week.
        PERFORM add_compression_policy('telemetry', INTERVAL '7 days');
        -- Raw fixes are kept 13 months (a year of trips plus a month for disputes).
        PERFORM add_retention_policy('telemetry', INTERVAL '395 days');
    ELSE
        -- Plain table: rows arrive in time order, so a BRIN index on ts is tiny and serves
        -- time-range scans and retention deletes.
        CREATE INDEX telemetry_ts_brin ON telemetry USING brin (ts);
    END IF;
END
$$;
