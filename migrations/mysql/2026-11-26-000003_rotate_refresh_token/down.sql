DROP PROCEDURE IF EXISTS phonekey_rotate_refresh_token;
