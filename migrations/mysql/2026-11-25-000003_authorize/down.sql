DROP TABLE browser_sessions;
ALTER TABLE access_tokens DROP COLUMN audience;
ALTER TABLE refresh_tokens DROP COLUMN resource;
ALTER TABLE applications DROP COLUMN resources;
ALTER TABLE authorization_codes DROP COLUMN redirect_uri_sent, DROP COLUMN family, DROP COLUMN resource;
