-- Times are i64 Unix seconds on every backend. Secrets are stored only as hashes.
CREATE TABLE applications (
    client_id     TEXT PRIMARY KEY NOT NULL,
    secret_hash   TEXT,
    name          TEXT NOT NULL,
    client_type   TEXT NOT NULL,
    grant_types   TEXT NOT NULL,
    redirect_uris TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    default_scope TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    disabled_at   BIGINT
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY NOT NULL,
    username      TEXT NOT NULL,
    email         TEXT,
    first_name    TEXT NOT NULL,
    last_name     TEXT NOT NULL,
    password_hash TEXT,
    is_superuser  BOOLEAN NOT NULL DEFAULT 0,
    is_active     BOOLEAN NOT NULL DEFAULT 1,
    date_joined   BIGINT NOT NULL
);
CREATE UNIQUE INDEX uq_users_username ON users (username);
CREATE UNIQUE INDEX uq_users_email ON users (email);

CREATE TABLE accounts (
    user_id     TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    phone       TEXT NOT NULL,
    blood_group TEXT NOT NULL,
    dob         BIGINT,
    address     TEXT NOT NULL,
    zip_code    TEXT NOT NULL,
    verified    BOOLEAN NOT NULL
);
CREATE UNIQUE INDEX uq_accounts_phone ON accounts (phone);

CREATE TABLE otp_codes (
    id            TEXT PRIMARY KEY NOT NULL,
    phone         TEXT NOT NULL,
    code_hash     TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    attempts      INTEGER NOT NULL,
    superseded_at BIGINT,
    verified_at   BIGINT
);
CREATE INDEX ix_otp_codes_phone ON otp_codes (phone, superseded_at, verified_at);
CREATE INDEX ix_otp_codes_expires ON otp_codes (expires_at);

CREATE TABLE verification_tickets (
    ticket_hash       TEXT PRIMARY KEY NOT NULL,
    phone             TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    used_for_user_at  BIGINT,
    used_for_token_at BIGINT
);
CREATE INDEX ix_verification_tickets_expires ON verification_tickets (expires_at);

CREATE TABLE authorization_codes (
    code_hash    TEXT PRIMARY KEY NOT NULL,
    client_id    TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    scope        TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    extensions   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    used_at      BIGINT
);

CREATE TABLE access_tokens (
    jti        TEXT PRIMARY KEY NOT NULL,
    client_id  TEXT NOT NULL,
    user_id    TEXT,
    scope      TEXT NOT NULL,
    family     TEXT,
    issued_at  BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked    BOOLEAN NOT NULL DEFAULT 0
);
CREATE INDEX ix_access_tokens_family ON access_tokens (family);
CREATE INDEX ix_access_tokens_user ON access_tokens (user_id);

CREATE TABLE refresh_tokens (
    token_hash  TEXT PRIMARY KEY NOT NULL,
    family      TEXT NOT NULL,
    parent_hash TEXT,
    client_id   TEXT NOT NULL,
    user_id     TEXT,
    scope       TEXT NOT NULL,
    issued_at   BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,
    revoked     BOOLEAN NOT NULL DEFAULT 0
);
CREATE INDEX ix_refresh_tokens_family ON refresh_tokens (family);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY NOT NULL,
    alg         TEXT NOT NULL,
    private_key TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT
);

CREATE TABLE settings (
    name  TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);

CREATE TABLE rate_limits (
    bucket       TEXT PRIMARY KEY NOT NULL,
    window_start BIGINT NOT NULL,
    hits         INTEGER NOT NULL,
    last_at      BIGINT NOT NULL
);
