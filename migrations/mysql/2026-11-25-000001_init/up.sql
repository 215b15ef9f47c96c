-- Times are BIGINT Unix seconds on every backend. Secrets are stored only as hashes.
-- Binary collations: ids, hashes and tokens compare byte for byte, as on SQLite.
CREATE TABLE applications (
    client_id     VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    secret_hash   VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin,
    name          VARCHAR(255) NOT NULL,
    client_type   VARCHAR(16) NOT NULL,
    grant_types   TEXT NOT NULL,
    redirect_uris TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    default_scope TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    disabled_at   BIGINT
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE users (
    id            VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    username      VARCHAR(150) NOT NULL,
    email         VARCHAR(254),
    first_name    VARCHAR(150) NOT NULL,
    last_name     VARCHAR(150) NOT NULL,
    password_hash VARCHAR(255),
    is_superuser  BOOLEAN NOT NULL DEFAULT 0,
    is_active     BOOLEAN NOT NULL DEFAULT 1,
    date_joined   BIGINT NOT NULL,
    UNIQUE KEY uq_users_username (username),
    UNIQUE KEY uq_users_email (email)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE accounts (
    user_id     VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    phone       VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    blood_group VARCHAR(16) NOT NULL,
    dob         BIGINT,
    address     VARCHAR(1024) NOT NULL,
    zip_code    VARCHAR(32) NOT NULL,
    verified    BOOLEAN NOT NULL,
    UNIQUE KEY uq_accounts_phone (phone),
    CONSTRAINT fk_accounts_user FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE otp_codes (
    id            VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    phone         VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    code_hash     VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    attempts      INTEGER NOT NULL,
    superseded_at BIGINT,
    verified_at   BIGINT,
    KEY ix_otp_codes_phone (phone, superseded_at, verified_at),
    KEY ix_otp_codes_expires (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE verification_tickets (
    ticket_hash       VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    phone             VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    used_for_user_at  BIGINT,
    used_for_token_at BIGINT,
    KEY ix_verification_tickets_expires (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE authorization_codes (
    code_hash    VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    client_id    VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    user_id      VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    scope        TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    extensions   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    used_at      BIGINT
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE access_tokens (
    jti        VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    client_id  VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    user_id    VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin,
    scope      TEXT NOT NULL,
    family     VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin,
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked    BOOLEAN NOT NULL DEFAULT 0,
    KEY ix_access_tokens_family (family),
    KEY ix_access_tokens_user (user_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE refresh_tokens (
    token_hash  VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    family      VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    parent_hash VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin,
    client_id   VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    user_id     VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin,
    scope       TEXT NOT NULL,
    issued_at   BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,
    revoked     BOOLEAN NOT NULL DEFAULT 0,
    KEY ix_refresh_tokens_family (family)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE signing_keys (
    kid         VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    alg         VARCHAR(16) NOT NULL,
    private_key TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE settings (
    name  VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE rate_limits (
    bucket       VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    window_start BIGINT NOT NULL,
    hits         INTEGER NOT NULL,
    last_at      BIGINT NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
