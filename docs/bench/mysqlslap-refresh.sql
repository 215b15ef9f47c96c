SELECT * FROM refresh_tokens WHERE token_hash = @h;
BEGIN;
UPDATE refresh_tokens SET used_at = 1 WHERE token_hash = @h AND used_at IS NULL AND revoked = 0;
INSERT INTO access_tokens (jti, client_id, user_id, scope, family, issued_at, expires_at, revoked, audience, token_hash) VALUES (CONVERT(UUID() USING ascii), 'clientclientclient', 'user_0123456789abcdef0123', 'read write', 'fam0123456789abcdef01234', 1795683070, 1795686670, 0, NULL, CONVERT(SHA2(UUID(),256) USING ascii));
INSERT INTO refresh_tokens (token_hash, family, parent_hash, client_id, user_id, scope, issued_at, expires_at, used_at, revoked, resource) VALUES (@h := CONVERT(SHA2(UUID(),256) USING ascii), 'fam0123456789abcdef01234', @h, 'clientclientclient', 'user_0123456789abcdef0123', 'read write', 1795683070, 1796892670, NULL, 0, NULL);
COMMIT;
