-- A connection may send its password without TLS to a host outside the loopback only when it
-- says so explicitly (issue 14): false for every existing connection.
ALTER TABLE connections ADD COLUMN allow_cleartext BOOLEAN DEFAULT false;
UPDATE connections SET allow_cleartext = false WHERE allow_cleartext IS NULL;
