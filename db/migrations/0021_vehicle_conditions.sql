-- What the hub's status-event detectors remember per vehicle (hub/events/conditions.py):
-- which conditions hold (low fuel, overspeed, moving while locked...) and since when. Saved
-- with each batch, so a restarted hub neither forgets a condition nor raises it again.
CREATE TABLE vehicle_conditions (
    vehicle_id text PRIMARY KEY REFERENCES vehicles (id) ON DELETE CASCADE,
    state      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Events found in old data (a backfill after an outage) are kept for the record but sent to
-- nobody: `notify` says which is which, `notified_at` when notifications went out.
ALTER TABLE events
    ADD COLUMN notify boolean NOT NULL DEFAULT true,
    ADD COLUMN notified_at timestamptz;

CREATE INDEX events_ts ON events (ts DESC);
