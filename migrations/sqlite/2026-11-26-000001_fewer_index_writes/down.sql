DROP INDEX ix_access_tokens_family;
CREATE INDEX ix_access_tokens_family ON access_tokens (family);
CREATE INDEX ix_access_tokens_user ON access_tokens (user_id);

DROP INDEX ix_otp_codes_phone;
CREATE INDEX ix_otp_codes_phone ON otp_codes (phone, superseded_at, verified_at);
DROP INDEX uq_users_email;
CREATE UNIQUE INDEX uq_users_email ON users (email);
