-- Riders rate a vehicle after a booking: one rating per booking, 1 to 5 stars.
--
-- A vehicle's rating (average and count) is read on every search, so it is kept as running
-- totals in vehicle_rating_totals by a trigger rather than aggregated per request; ratings
-- are written a few times a day per vehicle, so the totals row is never contended.

CREATE TABLE vehicle_ratings (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    vehicle_id text NOT NULL REFERENCES vehicles (id) ON DELETE CASCADE,
    user_id    uuid NOT NULL REFERENCES users (id),
    -- Nullable until trips exist; the bookings issue makes ratings require one.
    booking_id uuid UNIQUE REFERENCES bookings (id),
    stars      smallint NOT NULL CHECK (stars BETWEEN 1 AND 5),
    comment    text NOT NULL DEFAULT '' CHECK (length(comment) <= 1000),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX vehicle_ratings_vehicle ON vehicle_ratings (vehicle_id, created_at DESC);

CREATE TABLE vehicle_rating_totals (
    vehicle_id text PRIMARY KEY REFERENCES vehicles (id) ON DELETE CASCADE,
    ratings    integer NOT NULL CHECK (ratings >= 0),
    stars_sum  integer NOT NULL CHECK (stars_sum >= 0)
);

CREATE FUNCTION vehicle_ratings_totals() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        UPDATE vehicle_rating_totals
        SET ratings = ratings - 1, stars_sum = stars_sum - OLD.stars
        WHERE vehicle_id = OLD.vehicle_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO vehicle_rating_totals AS t (vehicle_id, ratings, stars_sum)
        VALUES (NEW.vehicle_id, 1, NEW.stars)
        ON CONFLICT (vehicle_id)
        DO UPDATE SET ratings = t.ratings + 1, stars_sum = t.stars_sum + NEW.stars;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER vehicle_ratings_totals
    AFTER INSERT OR DELETE OR UPDATE OF vehicle_id, stars ON vehicle_ratings
    FOR EACH ROW EXECUTE FUNCTION vehicle_ratings_totals();
