-- The otp grant's write in one round trip instead of six or eight (the user
-- lookup before it stays): spend the proof (a right SMS code, or a
-- verification ticket), create the phone's user if the caller passes one,
-- store the access token and, if passed, the refresh token, commit. Every
-- statement is the one the Rust path makes (src/db/codes.rs `spend_if_matches`,
-- src/db/tickets.rs `consume_for_token`, src/db/users.rs `insert`,
-- src/db/tokens.rs), so the two must change together.
-- It raises SQLSTATE 45000 'phonekey: proof not spent' when the proof did not
-- spend (wrong, used, expired: the caller then takes the path that counts the
-- attempt and says why) and the unique-key error when the phone got a user
-- meanwhile; either way it stores nothing. Parameters have the columns'
-- character sets, so that the keys are compared through their indexes.
CREATE PROCEDURE phonekey_otp_grant(
    IN proof_kind       VARCHAR(8) CHARACTER SET ascii COLLATE ascii_bin,
    IN proof_phone      VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin,
    IN proof_hash       VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin,
    IN max_attempts     INTEGER,
    IN now_s            BIGINT,
    IN u_id             VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin,
    IN u_username       VARCHAR(150) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN u_email          VARCHAR(254) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN u_first_name     VARCHAR(150) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN u_last_name      VARCHAR(150) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN u_password_hash  VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN u_is_superuser   BOOLEAN,
    IN u_is_active      BOOLEAN,
    IN u_date_joined    BIGINT,
    IN c_phone          VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin,
    IN c_blood_group    VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN c_dob            BIGINT,
    IN c_address        VARCHAR(1024) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN c_zip_code       VARCHAR(32) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN c_verified       BOOLEAN,
    IN a_jti            VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin,
    IN a_client_id      VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin,
    IN a_user_id        VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin,
    IN a_scope          TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN a_family         VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin,
    IN a_issued_at      BIGINT,
    IN a_expires_at     BIGINT,
    IN a_audience       TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN a_token_hash     VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin,
    IN r_token_hash     VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin,
    IN r_family         VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin,
    IN r_parent_hash    VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin,
    IN r_client_id      VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin,
    IN r_user_id        VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin,
    IN r_scope          TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin,
    IN r_issued_at      BIGINT,
    IN r_expires_at     BIGINT,
    IN r_resource       TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin
)
MODIFIES SQL DATA
BEGIN
    DECLARE EXIT HANDLER FOR SQLEXCEPTION
    BEGIN
        ROLLBACK;
        RESIGNAL;
    END;
    START TRANSACTION;
    IF proof_kind = 'code' THEN
        UPDATE otp_codes SET attempts = attempts + 1, verified_at = now_s
            WHERE phone = proof_phone AND code_hash = proof_hash AND superseded_at IS NULL
              AND verified_at IS NULL AND attempts < max_attempts AND expires_at > now_s;
    ELSE
        UPDATE verification_tickets SET used_for_token_at = now_s
            WHERE ticket_hash = proof_hash AND phone = proof_phone
              AND used_for_token_at IS NULL AND expires_at > now_s;
    END IF;
    IF ROW_COUNT() <> 1 THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'phonekey: proof not spent';
    END IF;
    IF u_id IS NOT NULL THEN
        INSERT INTO users
            (id, username, email, first_name, last_name, password_hash, is_superuser, is_active,
             date_joined)
            VALUES (u_id, u_username, u_email, u_first_name, u_last_name, u_password_hash,
                    u_is_superuser, u_is_active, u_date_joined);
        INSERT INTO accounts (user_id, phone, blood_group, dob, address, zip_code, verified)
            VALUES (u_id, c_phone, c_blood_group, c_dob, c_address, c_zip_code, c_verified);
    END IF;
    INSERT INTO access_tokens
        (jti, client_id, user_id, scope, family, issued_at, expires_at, revoked, audience, token_hash)
        VALUES (a_jti, a_client_id, a_user_id, a_scope, a_family, a_issued_at, a_expires_at, 0,
                a_audience, a_token_hash);
    IF r_token_hash IS NOT NULL THEN
        INSERT INTO refresh_tokens
            (token_hash, family, parent_hash, client_id, user_id, scope, issued_at, expires_at,
             used_at, revoked, resource)
            VALUES (r_token_hash, r_family, r_parent_hash, r_client_id, r_user_id, r_scope,
                    r_issued_at, r_expires_at, NULL, 0, r_resource);
    END IF;
    COMMIT;
END
