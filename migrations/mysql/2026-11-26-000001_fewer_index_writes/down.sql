CREATE INDEX ix_access_tokens_user ON access_tokens (user_id);
DROP INDEX ix_otp_codes_phone ON otp_codes;
CREATE INDEX ix_otp_codes_phone ON otp_codes (phone, superseded_at, verified_at);
