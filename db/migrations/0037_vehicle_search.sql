-- Radius search over live positions, with one query text on every server.
--
-- The API's search calls geo_near(lat, lon, centre_lat, centre_lon, radius_m) as a cheap,
-- index-backed prefilter (a superset of the circle) and then keeps what geo_distance_m
-- puts inside the radius. geo_near is a one-expression SQL function, which the planner
-- inlines, so its body's conditions reach the index. This migration picks the body:
--
-- * with cube + earthdistance (0001 creates them where available): a GiST index on
--   ll_to_earth(lat, lon) and an earth_box containment test;
-- * without them (the embedded PostgreSQL): a btree on (lat, lon) and the circle's exact
--   bounding box in degrees (the whole longitude range near a pole or the antimeridian).
--
-- `SET freecar.earthdistance = off` before migrating takes the plain path on a server that
-- has the extensions (how the tests cover both).
--
-- Distances are great-circle (haversine) on a sphere of the Earth's mean radius,
-- 6,371,008.8 m, on both paths; earthdistance's own sphere is 6,378,168 m, so its box is
-- scaled up by their ratio to stay a superset of the circle.

CREATE FUNCTION geo_distance_m(lat1 float8, lon1 float8, lat2 float8, lon2 float8)
RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 2 * 6371008.8 * asin(sqrt(least(1.0,
        sin(radians(lat2 - lat1) / 2) ^ 2
        + cos(radians(lat1)) * cos(radians(lat2)) * sin(radians(lon2 - lon1) / 2) ^ 2)))
$$;

-- Half the longitude span of a circle's bounding box, in degrees; 360 (everything) when the
-- circle reaches a pole or crosses the antimeridian.
CREATE FUNCTION geo_lon_span(qlat float8, qlon float8, radius_m float8)
RETURNS float8
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN abs(qlat) + degrees(radius_m / 6371008.8) >= 90 THEN 360.0
        WHEN abs(qlon) + degrees(asin(sin(radius_m / 6371008.8) / cos(radians(qlat)))) > 180
            THEN 360.0
        ELSE degrees(asin(sin(radius_m / 6371008.8) / cos(radians(qlat))))
    END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'earthdistance')
       AND coalesce(current_setting('freecar.earthdistance', true), '') <> 'off' THEN
        CREATE INDEX vehicle_state_position ON vehicle_state
            USING gist (ll_to_earth(lat, lon));
        CREATE FUNCTION geo_near(lat float8, lon float8, qlat float8, qlon float8,
                                 radius_m float8)
        RETURNS boolean
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $f$
            SELECT earth_box(ll_to_earth(qlat, qlon), radius_m * earth() / 6371008.8)
                   @> ll_to_earth(lat, lon)
        $f$;
    ELSE
        CREATE INDEX vehicle_state_position ON vehicle_state (lat, lon);
        CREATE FUNCTION geo_near(lat float8, lon float8, qlat float8, qlon float8,
                                 radius_m float8)
        RETURNS boolean
        LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $f$
            SELECT lat BETWEEN qlat - degrees(radius_m / 6371008.8)
                           AND qlat + degrees(radius_m / 6371008.8)
               AND lon BETWEEN qlon - geo_lon_span(qlat, qlon, radius_m)
                           AND qlon + geo_lon_span(qlat, qlon, radius_m)
        $f$;
    END IF;
END
$$;

-- Which path this database took, for tests, the benchmark and operators.
CREATE FUNCTION geo_search_path() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_indexes
                             WHERE indexname = 'vehicle_state_position'
                               AND indexdef LIKE '%gist%')
                THEN 'earthdistance' ELSE 'btree' END
$$;
