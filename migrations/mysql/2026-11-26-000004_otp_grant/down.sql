DROP PROCEDURE IF EXISTS phonekey_otp_grant;
