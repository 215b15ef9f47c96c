// Kept by hand: only types that every backend of the MultiConnection accepts.

diesel::table! {
    applications (client_id) {
        client_id -> Text,
        secret_hash -> Nullable<Text>,
        name -> Text,
        client_type -> Text,
        grant_types -> Text,
        redirect_uris -> Text,
        scopes -> Text,
        default_scope -> Text,
        created_at -> BigInt,
        disabled_at -> Nullable<BigInt>,
        resources -> Text,
    }
}

diesel::table! {
    users (id) {
        id -> Text,
        username -> Text,
        email -> Nullable<Text>,
        first_name -> Text,
        last_name -> Text,
        password_hash -> Nullable<Text>,
        is_superuser -> Bool,
        is_active -> Bool,
        date_joined -> BigInt,
    }
}

diesel::table! {
    accounts (user_id) {
        user_id -> Text,
        phone -> Text,
        blood_group -> Text,
        dob -> Nullable<BigInt>,
        address -> Text,
        zip_code -> Text,
        verified -> Bool,
    }
}

diesel::table! {
    otp_codes (id) {
        id -> Text,
        phone -> Text,
        code_hash -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
        attempts -> Integer,
        superseded_at -> Nullable<BigInt>,
        verified_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    verification_tickets (ticket_hash) {
        ticket_hash -> Text,
        phone -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
        used_for_user_at -> Nullable<BigInt>,
        used_for_token_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    authorization_codes (code_hash) {
        code_hash -> Text,
        client_id -> Text,
        user_id -> Text,
        scope -> Text,
        redirect_uri -> Text,
        extensions -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
        used_at -> Nullable<BigInt>,
        family -> Text,
        redirect_uri_sent -> Bool,
        resource -> Nullable<Text>,
    }
}

diesel::table! {
    browser_sessions (session_hash) {
        session_hash -> Text,
        user_id -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
    }
}

diesel::table! {
    access_tokens (jti) {
        jti -> Text,
        client_id -> Text,
        user_id -> Nullable<Text>,
        scope -> Text,
        family -> Nullable<Text>,
        issued_at -> BigInt,
        expires_at -> BigInt,
        revoked -> Bool,
        audience -> Nullable<Text>,
        token_hash -> Nullable<Text>,
    }
}

diesel::table! {
    refresh_tokens (token_hash) {
        token_hash -> Text,
        family -> Text,
        parent_hash -> Nullable<Text>,
        client_id -> Text,
        user_id -> Nullable<Text>,
        scope -> Text,
        issued_at -> BigInt,
        expires_at -> BigInt,
        used_at -> Nullable<BigInt>,
        revoked -> Bool,
        resource -> Nullable<Text>,
    }
}

diesel::table! {
    signing_keys (kid) {
        kid -> Text,
        alg -> Text,
        private_key -> Text,
        public_key -> Text,
        created_at -> BigInt,
        retired_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    settings (name) {
        name -> Text,
        value -> Text,
    }
}

diesel::table! {
    rate_limits (bucket) {
        bucket -> Text,
        window_start -> BigInt,
        hits -> Integer,
        last_at -> BigInt,
    }
}

diesel::joinable!(accounts -> users (user_id));
diesel::allow_tables_to_appear_in_same_query!(users, accounts);
diesel::allow_tables_to_appear_in_same_query!(access_tokens, users);
diesel::allow_tables_to_appear_in_same_query!(refresh_tokens, users);
