-- Resource bodies as text, not jsonb. Portico never queries inside a body (search reads the
-- index tables), so jsonb only cost time: every write parsed the JSON into jsonb and every read,
-- search page and export line turned it back into text (an export of 1.1M resources spent most
-- of its database time in that conversion). As text a body is stored and returned byte for byte
-- as Portico serialized it (the same text as on SQLite); TOAST compresses it as it did the jsonb.
-- Bodies written before this migration keep jsonb's rendering, which is equally valid JSON.
ALTER TABLE resource_history ALTER COLUMN body TYPE TEXT USING body::text;
