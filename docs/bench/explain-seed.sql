-- 20,000 synthetic rows per hot table, for EXPLAIN on MariaDB (docs/performance.md, "Query plans").
-- Run on a migrated database: mariadb -uroot -h127.0.0.1 plans < docs/bench/explain-seed.sql
INSERT INTO users (id, username, email, first_name, last_name, password_hash, is_superuser, is_active, date_joined)
  SELECT CONCAT('u', seq), CONCAT('user_', seq), NULL, '', '', NULL, 0, 1, 1795690000 FROM seq_1_to_20000;
INSERT INTO accounts (user_id, phone, blood_group, dob, address, zip_code, verified)
  SELECT CONCAT('u', seq), CONCAT('+1415', LPAD(seq, 7, '0')), '', NULL, '', '', 1 FROM seq_1_to_20000;
INSERT INTO access_tokens (jti, client_id, user_id, scope, family, issued_at, expires_at, revoked, audience, token_hash)
  SELECT CONCAT('j', seq), 'c', CONCAT('u', seq), 'read', CONCAT('f', seq), 1795690000, 1795693600, 0, NULL, SHA2(seq, 256) FROM seq_1_to_20000;
INSERT INTO refresh_tokens (token_hash, family, parent_hash, client_id, user_id, scope, issued_at, expires_at, used_at, revoked, resource)
  SELECT SHA2(seq, 256), CONCAT('f', seq), NULL, 'c', CONCAT('u', seq), 'read', 1795690000, 1797000000, NULL, 0, NULL FROM seq_1_to_20000;
INSERT INTO otp_codes (id, phone, code_hash, created_at, expires_at, attempts, superseded_at, verified_at)
  SELECT CONCAT('o', seq), CONCAT('+1415', LPAD(seq, 7, '0')), SHA2(seq, 256), 1795690000, 1795690300, 0, NULL, NULL FROM seq_1_to_20000;
INSERT INTO rate_limits (bucket, window_start, hits, last_at)
  SELECT CONCAT('phone:+1415', LPAD(seq, 7, '0')), 1795690000, 1, 1795690000 FROM seq_1_to_20000;
INSERT INTO verification_tickets (ticket_hash, phone, created_at, expires_at, used_for_user_at, used_for_token_at)
  SELECT SHA2(seq, 256), CONCAT('+1415', LPAD(seq, 7, '0')), 1795690000, 1795690600, NULL, NULL FROM seq_1_to_20000;
ANALYZE TABLE users, accounts, access_tokens, refresh_tokens, otp_codes, rate_limits, verification_tickets;
