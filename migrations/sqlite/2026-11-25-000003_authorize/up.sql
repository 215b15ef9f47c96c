-- The authorization code flow: the token family a code's tokens join (so that
-- reuse of the code can revoke them), whether redirect_uri was sent to
-- /o/authorize/ (then the token request must repeat it), and browser login
-- sessions of the HTML pages. RFC 8707 resource indicators: the resources a
-- client may name, and the audience a code, refresh token or access token has
-- (NULL: the default audience).
ALTER TABLE authorization_codes ADD COLUMN family TEXT NOT NULL DEFAULT '';
ALTER TABLE authorization_codes ADD COLUMN redirect_uri_sent BOOLEAN NOT NULL DEFAULT 0;
ALTER TABLE authorization_codes ADD COLUMN resource TEXT;
ALTER TABLE applications ADD COLUMN resources TEXT NOT NULL DEFAULT '';
ALTER TABLE refresh_tokens ADD COLUMN resource TEXT;
ALTER TABLE access_tokens ADD COLUMN audience TEXT;

CREATE TABLE browser_sessions (
    session_hash TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX ix_browser_sessions_expires ON browser_sessions (expires_at);
