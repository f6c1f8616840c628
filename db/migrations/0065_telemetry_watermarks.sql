-- Storage watermarks, protocol contract 1.1 (docs/protocol.md, section 6.2): per vehicle,
-- which fixes of its unit's current queue the hub has handled, and what it last told the
-- unit on its retained `stored` topic. The rules live in hub/watermarks.py.
--
-- A batch locks its vehicles (the turn lock of hub/repository.py), loads their rows
-- FOR UPDATE, moves them on and writes them back in its own transaction, so hubs sharing
-- a subscription agree; the periodic sweep publishes the rows whose publication fell due
-- and skips the rows a batch holds (FOR UPDATE SKIP LOCKED).
--
-- Not indexed beyond the key: next_seq, messages_since and due_at change with nearly
-- every batch, and updates must stay HOT (fillfactor leaves room on the page). The sweep
-- reads the table instead, a few milliseconds per 10,000 vehicles every sweep.
CREATE TABLE telemetry_watermarks (
    vehicle_id     text PRIMARY KEY REFERENCES vehicles (id) ON DELETE CASCADE,
    -- The unit's queue (its seq counter); a fix of another queue id starts afresh.
    queue_id       bigint NOT NULL CHECK (queue_id BETWEEN 1 AND 2147483647),
    -- Every seq below this is handled: stored, or refused for good.
    next_seq       bigint NOT NULL CHECK (next_seq >= 0),
    -- Seqs handled above next_seq as flattened [first, last] pairs, ascending
    -- ({f1,l1,f2,l2,...}); the hub keeps at most 32 pairs, the check allows 128.
    handled        bigint[] NOT NULL DEFAULT '{}'
                   CHECK (cardinality(handled) % 2 = 0 AND cardinality(handled) <= 256),
    -- The newest ts (the unit's clock, Unix ms) of a handled fix of this queue: a fix of
    -- an unknown queue id replaces this queue only if it is newer.
    top_ts         bigint NOT NULL DEFAULT 0 CHECK (top_ts >= 0),
    -- Earlier queue ids of the vehicle, newest first, whose late fixes change nothing.
    retired        bigint[] NOT NULL DEFAULT '{}' CHECK (cardinality(retired) <= 16),
    -- The vehicle's telemetry messages since the last publication.
    messages_since bigint NOT NULL DEFAULT 0 CHECK (messages_since >= 0),
    -- The last next_seq published for this queue (null: none yet), and when.
    published_next bigint CHECK (published_next >= 0),
    published_at   timestamptz,
    -- When next_seq first moved past published_next (null: nothing unpublished).
    advanced_at    timestamptz,
    -- When the next publication is due (null: none is).
    due_at         timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 80);
