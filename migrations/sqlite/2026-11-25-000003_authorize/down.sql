DROP TABLE browser_sessions;
ALTER TABLE authorization_codes DROP COLUMN redirect_uri_sent;
ALTER TABLE authorization_codes DROP COLUMN family;
