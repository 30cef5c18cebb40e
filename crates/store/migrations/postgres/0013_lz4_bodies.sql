-- Bodies over TOAST's ~2 kB threshold (ExplanationOfBenefit, Claim, DiagnosticReport, …) are
-- compressed; lz4 does that several times faster than PostgreSQL's default pglz, on every write
-- and every read of such a body. Servers built without lz4 (or before PostgreSQL 14) keep pglz.
-- Only new values use it: bodies already stored stay as they are, readable either way.
DO $$
BEGIN
    ALTER TABLE resource_history ALTER COLUMN body SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR syntax_error OR invalid_parameter_value THEN
    RAISE NOTICE 'lz4 compression is not available; bodies stay compressed with pglz';
END
$$;
