DROP TABLE browser_sessions;
ALTER TABLE authorization_codes DROP COLUMN redirect_uri_sent, DROP COLUMN family;
