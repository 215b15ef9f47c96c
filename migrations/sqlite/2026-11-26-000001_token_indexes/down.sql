DROP INDEX ix_access_tokens_family;
CREATE INDEX ix_access_tokens_family ON access_tokens (family);
CREATE INDEX ix_access_tokens_user ON access_tokens (user_id);
