-- Doors list their offline fallback (issue 14's setting) in the catalogue, so
-- GET /api/doors and the dashboard read it from the read model like every other field.
ALTER TABLE catalogue_doors ADD COLUMN offline_fallback integer NOT NULL DEFAULT 0;

-- Doors whose fallback was set before this column existed: the last change wins.
UPDATE catalogue_doors SET offline_fallback = COALESCE((
    SELECT json_extract(e.payload, '$.enabled') IN (1, 'true')
    FROM events e
    WHERE e.aggregate_type = 'Door' AND e.aggregate_id = catalogue_doors.door_uid
      AND e.event_type = 'DoorOfflineFallbackChanged'
    ORDER BY e.sequence DESC
    LIMIT 1
), offline_fallback);
