-- The authorization code flow: the token family a code's tokens join (so that
-- reuse of the code can revoke them), whether redirect_uri was sent to
-- /o/authorize/ (then the token request must repeat it), and browser login
-- sessions of the HTML pages.
ALTER TABLE authorization_codes ADD COLUMN family TEXT NOT NULL DEFAULT '';
ALTER TABLE authorization_codes ADD COLUMN redirect_uri_sent BOOLEAN NOT NULL DEFAULT 0;

CREATE TABLE browser_sessions (
    session_hash TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL
);
CREATE INDEX ix_browser_sessions_expires ON browser_sessions (expires_at);
