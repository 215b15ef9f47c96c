-- A refresh-token rotation in one round trip instead of six (the read before
-- it stays): the spend of the old token and the two inserts of its
-- successors, in a transaction of the procedure's own. On this machine each
-- statement costs a round trip and a context switch on both ends; mysqlslap
-- with 16 connections ran 4,679-5,841 rotations/s as six statements and
-- 6,946-8,472/s as SELECT + CALL (docs/performance.md). The parameters have
-- the columns' character set: with the default (utf8mb4) the key comparison
-- could not use the primary key and locked ranges, and rotations deadlocked.
-- A token already spent or revoked raises SQLSTATE 45000 with the message
-- below (matched in src/db/tokens.rs) and stores nothing.
CREATE PROCEDURE phonekey_rotate_refresh_token(
    IN spend_hash       VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin,
    IN spent_at         BIGINT,
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
    UPDATE refresh_tokens SET used_at = spent_at
        WHERE token_hash = spend_hash AND used_at IS NULL AND revoked = 0;
    IF ROW_COUNT() <> 1 THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'phonekey: refresh token already spent';
    END IF;
    INSERT INTO access_tokens
        (jti, client_id, user_id, scope, family, issued_at, expires_at, revoked, audience, token_hash)
        VALUES (a_jti, a_client_id, a_user_id, a_scope, a_family, a_issued_at, a_expires_at, 0,
                a_audience, a_token_hash);
    INSERT INTO refresh_tokens
        (token_hash, family, parent_hash, client_id, user_id, scope, issued_at, expires_at, used_at,
         revoked, resource)
        VALUES (r_token_hash, r_family, r_parent_hash, r_client_id, r_user_id, r_scope, r_issued_at,
                r_expires_at, NULL, 0, r_resource);
    COMMIT;
END
