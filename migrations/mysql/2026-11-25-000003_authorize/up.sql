-- The authorization code flow: the token family a code's tokens join (so that
-- reuse of the code can revoke them), whether redirect_uri was sent to
-- /o/authorize/ (then the token request must repeat it), and browser login
-- sessions of the HTML pages. RFC 8707 resource indicators: the resources a
-- client may name, and the audience a code, refresh token or access token has
-- (NULL: the default audience).
ALTER TABLE authorization_codes
    ADD COLUMN family VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '',
    ADD COLUMN redirect_uri_sent BOOLEAN NOT NULL DEFAULT 0,
    ADD COLUMN resource TEXT NULL;
ALTER TABLE applications ADD COLUMN resources TEXT NOT NULL DEFAULT '';
ALTER TABLE refresh_tokens ADD COLUMN resource TEXT NULL;
ALTER TABLE access_tokens ADD COLUMN audience TEXT NULL;

CREATE TABLE browser_sessions (
    session_hash VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    user_id      VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    INDEX ix_browser_sessions_expires (expires_at),
    CONSTRAINT fk_browser_sessions_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
