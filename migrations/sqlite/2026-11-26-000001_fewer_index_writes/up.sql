-- Every index is written by every token insert, the hottest write there is.
-- No query reads access tokens by user_id: a feature that lists or revokes a
-- user's tokens brings back the index it needs. Tokens without a family
-- (client_credentials) are never revoked by family, so they stay out of that
-- index.
DROP INDEX ix_access_tokens_user;
DROP INDEX ix_access_tokens_family;
CREATE INDEX ix_access_tokens_family ON access_tokens (family) WHERE family IS NOT NULL;

-- Verifying or superseding a code changed its entry in the phone index, which
-- held those times too; a phone has a few codes at most, found by phone alone.
DROP INDEX ix_otp_codes_phone;
CREATE INDEX ix_otp_codes_phone ON otp_codes (phone);

-- Users made by phone login have no email: they stay out of the email index.
DROP INDEX uq_users_email;
CREATE UNIQUE INDEX uq_users_email ON users (email) WHERE email IS NOT NULL;
