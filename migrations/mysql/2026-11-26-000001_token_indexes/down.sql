CREATE INDEX ix_access_tokens_user ON access_tokens (user_id);
