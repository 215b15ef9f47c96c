ALTER TABLE access_tokens DROP COLUMN token_hash;
