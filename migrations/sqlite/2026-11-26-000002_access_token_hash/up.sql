-- The SHA-256 of each access token as issued: introspection compares it
-- instead of verifying the signature (31 µs of Ed25519 per call). Tokens
-- issued before this have none and are verified as before.
ALTER TABLE access_tokens ADD COLUMN token_hash TEXT;
