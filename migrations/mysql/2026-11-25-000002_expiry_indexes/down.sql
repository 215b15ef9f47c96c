DROP INDEX ix_rate_limits_last_at ON rate_limits;
DROP INDEX ix_authorization_codes_expires ON authorization_codes;
DROP INDEX ix_refresh_tokens_expires ON refresh_tokens;
DROP INDEX ix_access_tokens_expires ON access_tokens;
