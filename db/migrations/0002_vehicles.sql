-- The fleet inventory. Vehicle ids double as MQTT topic segments and client ids, so they
-- are restricted to the characters protocol v1 allows in a topic level.
CREATE TABLE vehicles (
    id               text PRIMARY KEY
                     CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$'),
    plate            text NOT NULL UNIQUE,
    make             text NOT NULL,
    model            text NOT NULL,
    year             smallint CHECK (year BETWEEN 1950 AND 2100),
    vin              text UNIQUE CHECK (vin ~ '^[A-HJ-NPR-Z0-9]{17}$'),
    category         text NOT NULL
                     CHECK (category IN ('economy', 'standard', 'luxury', 'suv', 'electric')),
    fuel_type        text NOT NULL
                     CHECK (fuel_type IN ('petrol', 'diesel', 'hybrid', 'electric')),
    seats            smallint NOT NULL DEFAULT 5 CHECK (seats BETWEEN 1 AND 12),
    features         text[] NOT NULL DEFAULT '{}',
    -- Money is integer minor units with its currency (ISO 4217).
    price_hour_minor integer NOT NULL CHECK (price_hour_minor >= 0),
    price_day_minor  integer NOT NULL CHECK (price_day_minor >= 0),
    currency         char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status           text NOT NULL DEFAULT 'available'
                     CHECK (status IN ('available', 'rented', 'maintenance', 'retired')),
    home_lat         double precision CHECK (home_lat BETWEEN -90 AND 90),
    home_lon         double precision CHECK (home_lon BETWEEN -180 AND 180),
    mileage_km       double precision NOT NULL DEFAULT 0 CHECK (mileage_km >= 0),
    notes            text NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX vehicles_status ON vehicles (status) WHERE status <> 'retired';
