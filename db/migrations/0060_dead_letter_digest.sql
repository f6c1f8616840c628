-- A dead letter keeps at most the first 256 KiB of its payload (hub/batch.py says why:
-- kept whole, a flood of large junk exhausted the hub and then the database), so it also
-- records the whole payload's size and SHA-256: a cut payload is still identified, and
-- `octet_length(payload) < payload_size` says it was cut. Older rows were kept whole.
ALTER TABLE dead_letters
    ADD COLUMN payload_size bigint,
    ADD COLUMN payload_sha256 bytea;

UPDATE dead_letters SET payload_size = octet_length(payload), payload_sha256 = sha256(payload);

ALTER TABLE dead_letters
    ALTER COLUMN payload_size SET NOT NULL,
    ALTER COLUMN payload_sha256 SET NOT NULL,
    ADD CHECK (payload_size >= octet_length(payload)),
    ADD CHECK (octet_length(payload_sha256) = 32);
