-- Every index is written by every token insert, the hottest write there is;
-- no query reads access tokens by user_id. A feature that lists or revokes a
-- user's tokens brings back the index it needs.
DROP INDEX ix_access_tokens_user ON access_tokens;
