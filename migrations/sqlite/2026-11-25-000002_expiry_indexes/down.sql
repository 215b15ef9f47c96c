DROP INDEX ix_rate_limits_last_at;
DROP INDEX ix_authorization_codes_expires;
DROP INDEX ix_refresh_tokens_expires;
DROP INDEX ix_access_tokens_expires;
