-- Every index is written by every token insert, the hottest write there is.
-- No query reads access tokens by user_id: a feature that lists or revokes a
-- user's tokens brings back the index it needs. Tokens without a family
-- (client_credentials) are never revoked by family, so they stay out of that
-- index.
DROP INDEX ix_access_tokens_user;
DROP INDEX ix_access_tokens_family;
CREATE INDEX ix_access_tokens_family ON access_tokens (family) WHERE family IS NOT NULL;
