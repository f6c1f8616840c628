-- Geofences are GeoJSON geometries: Polygon or MultiPolygon as they are, a circle as a
-- Point with radius_m, a corridor as a LineString with width_m.
CREATE TABLE geofences (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL,
    kind            text NOT NULL
                    CHECK (kind IN ('service_area', 'parking_zone', 'restricted')),
    geometry        jsonb NOT NULL
                    CHECK (geometry ->> 'type' IN ('Polygon', 'MultiPolygon', 'Point', 'LineString')),
    radius_m        double precision CHECK (radius_m > 0),
    width_m         double precision CHECK (width_m > 0),
    speed_limit_kmh real CHECK (speed_limit_kmh > 0),
    -- {"days": [1..7], "from": "HH:MM", "to": "HH:MM", "tz": "Area/City"}; null = always.
    schedule        jsonb,
    -- Hysteresis: how far inside or outside a fix must be, or how long it must stay, before
    -- the state flips. GPS jitters by metres; without these a car parked on the line flaps.
    enter_margin_m  real NOT NULL DEFAULT 10 CHECK (enter_margin_m >= 0),
    exit_margin_m   real NOT NULL DEFAULT 10 CHECK (exit_margin_m >= 0),
    dwell_s         integer NOT NULL DEFAULT 0 CHECK (dwell_s >= 0),
    active          boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK ((geometry ->> 'type' = 'Point') = (radius_m IS NOT NULL)),
    CHECK ((geometry ->> 'type' = 'LineString') = (width_m IS NOT NULL))
);

CREATE INDEX geofences_active_kind ON geofences (kind) WHERE active;
