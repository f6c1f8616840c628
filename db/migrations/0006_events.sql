-- What happened to a vehicle: geofence crossings, alarms, offline, failed commands.
CREATE TABLE events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    vehicle_id  text NOT NULL REFERENCES vehicles (id) ON DELETE CASCADE,
    kind        text NOT NULL,
    ts          timestamptz NOT NULL,
    lat         double precision,
    lon         double precision,
    geofence_id bigint REFERENCES geofences (id) ON DELETE SET NULL,
    details     jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX events_vehicle_ts ON events (vehicle_id, ts DESC);
CREATE INDEX events_kind_ts ON events (kind, ts DESC);
