-- Every index is written by every insert into its table, on the hottest
-- writes there are. No query reads access tokens by user_id: a feature that
-- lists or revokes a user's tokens brings back the index it needs.
DROP INDEX ix_access_tokens_user ON access_tokens;

-- Verifying or superseding a code changed its entry in the phone index, which
-- held those times too; a phone has a few codes at most, found by phone alone.
DROP INDEX ix_otp_codes_phone ON otp_codes;
CREATE INDEX ix_otp_codes_phone ON otp_codes (phone);
