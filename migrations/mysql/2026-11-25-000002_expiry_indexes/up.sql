-- The purge finds expired rows by these.
CREATE INDEX ix_access_tokens_expires ON access_tokens (expires_at);
CREATE INDEX ix_refresh_tokens_expires ON refresh_tokens (expires_at);
CREATE INDEX ix_authorization_codes_expires ON authorization_codes (expires_at);
CREATE INDEX ix_rate_limits_last_at ON rate_limits (last_at);
