//! Users: creation from a verified phone (the seed's profile fields), the
//! WhatsApp-style auto-created user, superusers, and passwords (Argon2id).

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::SaltString;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use chrono::{DateTime, NaiveDate, SecondsFormat};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::core::Core;
use crate::db::tickets::TicketRow;
use crate::db::{self, users::AccountRow, users::UserRow, Conn, DbConn, DbError, DbResult};
use crate::error::{AppError, AppResult};
use crate::{otp, phone, secrets};

#[derive(Debug, Serialize)]
pub struct UserView {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    pub first_name: String,
    pub last_name: String,
    pub account: Option<AccountView>,
    pub date_joined: String,
}

#[derive(Debug, Serialize)]
pub struct AccountView {
    pub phone: String,
    pub blood_group: String,
    pub dob: Option<String>,
    pub address: String,
    pub zip_code: String,
    pub verified: bool,
}

fn rfc3339(secs: i64) -> String {
    DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl UserView {
    fn new(user: &UserRow, account: Option<&AccountRow>) -> UserView {
        UserView {
            id: user.id.clone(),
            username: user.username.clone(),
            email: user.email.clone(),
            first_name: user.first_name.clone(),
            last_name: user.last_name.clone(),
            account: account.map(|a| AccountView {
                phone: a.phone.clone(),
                blood_group: a.blood_group.clone(),
                dob: a.dob.map(rfc3339),
                address: a.address.clone(),
                zip_code: a.zip_code.clone(),
                verified: a.verified,
            }),
            date_joined: rfc3339(user.date_joined),
        }
    }
}

/// Collects per-field messages, nested like the input (`account.phone`).
#[derive(Default)]
struct FieldErrors(Map<String, Value>);

impl FieldErrors {
    fn add(&mut self, path: &[&str], message: &str) {
        let mut map = &mut self.0;
        for key in &path[..path.len() - 1] {
            let entry = map
                .entry(key.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            let Value::Object(inner) = entry else { return };
            map = inner;
        }
        map.insert(
            path[path.len() - 1].to_string(),
            Value::String(message.into()),
        );
    }

    fn into_result(self) -> AppResult<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        Err(AppError::InvalidRequest {
            description: "some fields are invalid".into(),
            fields: Some(Value::Object(self.0)),
        })
    }
}

/// A string field: strings as given, numbers as their text (zip codes come as
/// both), null or absent as `None`.
fn text(
    obj: &Map<String, Value>,
    key: &str,
    path: &[&str],
    max: usize,
    errors: &mut FieldErrors,
) -> Option<String> {
    let value = match obj.get(key) {
        None | Some(Value::Null) => return None,
        Some(Value::String(s)) => s.trim().to_string(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => {
            errors.add(path, "must be a string");
            return None;
        }
    };
    if value.chars().count() > max {
        errors.add(path, &format!("must be at most {max} characters"));
        return None;
    }
    Some(value)
}

fn flag(obj: &Map<String, Value>, key: &str, errors: &mut FieldErrors) -> bool {
    match obj.get(key) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" | "" => false,
            _ => {
                errors.add(&[key], "must be true or false");
                false
            }
        },
        Some(_) => {
            errors.add(&[key], "must be true or false");
            false
        }
    }
}

/// A date (`1989-12-12`) or an RFC 3339 datetime, as Unix seconds.
fn parse_dob(s: &str) -> Option<i64> {
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp());
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|dt| dt.and_utc().timestamp())
}

fn valid_username(name: &str) -> bool {
    // Django's: letters, digits and @.+-_
    !name.is_empty()
        && name.chars().count() <= 150
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "@.+-_".contains(c))
}

pub fn hash_password(password: &str) -> AppResult<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AppError::Internal(format!("password hashing failed: {e}")))
}

/// Checks a password against a stored Argon2 hash. Without a hash (unknown
/// user, no password set) it still does the same work against a dummy hash,
/// so that timing does not tell the cases apart.
pub fn verify_password(stored: Option<&str>, password: &str) -> bool {
    static DUMMY: std::sync::LazyLock<Option<String>> =
        std::sync::LazyLock::new(|| hash_password("no user has this password").ok());
    let (hash, real) = match stored {
        Some(h) => (h.to_string(), true),
        None => match DUMMY.as_ref() {
            Some(d) => (d.clone(), false),
            None => return false,
        },
    };
    let Ok(parsed) = PasswordHash::new(&hash) else {
        return false;
    };
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && real
}

fn auto_username() -> String {
    format!("user_{}", secrets::ordered_id(4))
}

/// Which unique index refused the row.
fn conflict_field(message: &str) -> &'static str {
    if message.contains("phone") {
        "phone"
    } else if message.contains("email") {
        "email"
    } else {
        "username"
    }
}

/// A sign-up as the client sent it, read and checked without the database,
/// so that it can be read where the request is (on an HTTP worker: phone
/// parsing there keeps libphonenumber's per-thread regex caches off the
/// blocking pool). Its field errors are reported only after the ticket has
/// been checked, as the contract orders them.
pub struct SignUp {
    secret: String,
    user: UserFields,
    account: AccountFields,
    /// `account.phone` in E.164; `Err` if it was given and is not a phone.
    phone: Result<Option<String>, AppError>,
    errors: FieldErrors,
}

impl SignUp {
    /// Whether creating this user hashes a password (argon2, tens of
    /// milliseconds of CPU).
    pub fn hashes_password(&self) -> bool {
        self.user.password.is_some()
    }
}

struct UserFields {
    username: String,
    email: Option<String>,
    first_name: String,
    last_name: String,
    password: Option<String>,
}

struct AccountFields {
    blood_group: String,
    dob: Option<i64>,
    address: String,
    zip_code: String,
}

/// Reads the body of `PUT /api/v1/user/`. Only a body that is not an object,
/// or has no secret identifier, is refused here.
pub fn read_sign_up(input: &Value, region: Option<phone::Region>) -> AppResult<SignUp> {
    let Some(obj) = input.as_object() else {
        return Err(AppError::invalid_request("the body must be an object"));
    };
    let secret = match obj.get("secret_identifier") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(AppError::InvalidSecretIdentifier),
    };

    let mut errors = FieldErrors::default();
    let email = text(obj, "email", &["email"], 254, &mut errors)
        .filter(|e| !e.is_empty())
        .and_then(|e| {
            if email_address::EmailAddress::is_valid(&e) {
                Some(e.to_lowercase())
            } else {
                errors.add(&["email"], "not an email address");
                None
            }
        });
    let first_name = text(obj, "first_name", &["first_name"], 150, &mut errors).unwrap_or_default();
    let last_name = text(obj, "last_name", &["last_name"], 150, &mut errors).unwrap_or_default();
    let password = match obj.get("password") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) if p.chars().count() >= 8 && p.len() <= 1024 => Some(p.clone()),
        Some(Value::String(_)) => {
            errors.add(&["password"], "must be 8 to 1024 characters");
            None
        }
        Some(_) => {
            errors.add(&["password"], "must be a string");
            None
        }
    };
    let username = if flag(obj, "auto_username", &mut errors) {
        auto_username()
    } else {
        match text(obj, "username", &["username"], 150, &mut errors) {
            Some(u) if valid_username(&u) => u,
            Some(_) => {
                errors.add(&["username"], "may contain only letters, digits and @.+-_");
                String::new()
            }
            None => {
                errors.add(&["username"], "required unless auto_username is true");
                String::new()
            }
        }
    };

    let empty = Map::new();
    let account = match obj.get("account") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(a)) => a,
        Some(_) => {
            errors.add(&["account"], "must be an object");
            &empty
        }
    };
    let phone = match text(account, "phone", &["account", "phone"], 32, &mut errors) {
        None => Ok(None),
        Some(given) => phone::normalize(&given, region)
            .map(Some)
            .ok_or(AppError::InvalidPhone),
    };
    let blood_group = text(
        account,
        "blood_group",
        &["account", "blood_group"],
        16,
        &mut errors,
    )
    .unwrap_or_default();
    let address = text(
        account,
        "address",
        &["account", "address"],
        1024,
        &mut errors,
    )
    .unwrap_or_default();
    let zip_code = text(
        account,
        "zip_code",
        &["account", "zip_code"],
        32,
        &mut errors,
    )
    .unwrap_or_default();
    let dob = text(account, "dob", &["account", "dob"], 64, &mut errors)
        .filter(|d| !d.is_empty())
        .and_then(|d| {
            let parsed = parse_dob(&d);
            if parsed.is_none() {
                errors.add(
                    &["account", "dob"],
                    "must be a date (1989-12-12) or an RFC 3339 datetime",
                );
            }
            parsed
        });
    Ok(SignUp {
        secret,
        user: UserFields {
            username,
            email,
            first_name,
            last_name,
            password,
        },
        account: AccountFields {
            blood_group,
            dob,
            address,
            zip_code,
        },
        phone,
        errors,
    })
}

/// `PUT /api/v1/user/`: creates a user for the phone a verification ticket proves.
pub fn create(conn: &mut Conn, core: &Core, sign_up: SignUp, now: i64) -> AppResult<UserView> {
    let ticket = db::tickets::lookup(conn, &sign_up.ticket_hash(core)?)?;
    let (write, view) = sign_up_rows(sign_up, ticket, now)?;
    signed_up(db::users::create_with_ticket(conn, write), view)
}

impl SignUp {
    /// The hash of the ticket it presents (`otp::presented_ticket`).
    pub fn ticket_hash(&self, core: &Core) -> AppResult<String> {
        otp::presented_ticket(core, &self.secret)
    }
}

/// The write that creates the user, given the ticket found under
/// `SignUp::ticket_hash`, and what the user will look like: the ticket is
/// checked before anything else. Hashes the password, if any.
pub fn sign_up_rows(
    sign_up: SignUp,
    ticket: Option<TicketRow>,
    now: i64,
) -> AppResult<(db::users::SignUpWrite, UserView)> {
    let SignUp {
        secret: _,
        user: fields,
        account: account_fields,
        phone,
        mut errors,
    } = sign_up;
    let ticket = otp::usable_for_user(ticket, now)?;
    if phone?.is_some_and(|p| p != ticket.phone) {
        errors.add(&["account", "phone"], "does not match the verified phone");
    }
    errors.into_result()?;

    let password_hash = fields.password.as_deref().map(hash_password).transpose()?;
    let user = UserRow {
        id: new_user_id(),
        username: fields.username,
        email: fields.email,
        first_name: fields.first_name,
        last_name: fields.last_name,
        password_hash,
        is_superuser: false,
        is_active: true,
        date_joined: now,
    };
    let account = AccountRow {
        user_id: user.id.clone(),
        phone: ticket.phone.clone(),
        blood_group: account_fields.blood_group,
        dob: account_fields.dob,
        address: account_fields.address,
        zip_code: account_fields.zip_code,
        verified: true,
    };
    let view = UserView::new(&user, Some(&account));
    let write = db::users::SignUpWrite {
        ticket_hash: ticket.ticket_hash,
        now,
        user,
        account,
    };
    Ok((write, view))
}

/// The answer to a sign-up whose write answered `stored`.
pub fn signed_up(stored: DbResult<bool>, view: UserView) -> AppResult<UserView> {
    match stored {
        Ok(true) => Ok(view),
        Ok(false) => Err(AppError::InvalidSecretIdentifier),
        Err(DbError::Conflict(m)) => Err(AppError::Conflict {
            field: conflict_field(&m),
        }),
        Err(e) => Err(e.into()),
    }
}

/// A fresh user id: 32 hex digits, 80 of its bits random, in time order.
pub fn new_user_id() -> String {
    secrets::ordered_id(10)
}

/// The phone's user, created with only the phone if there is none (the
/// WhatsApp-style sign-up); for use inside a write transaction.
pub fn user_for_phone(conn: &mut DbConn, phone: &str, now: i64) -> AppResult<UserRow> {
    user_for_phone_as(conn, phone, None, now)
}

/// As `user_for_phone`, with the id a new user gets chosen by the caller
/// (who may already have signed a token for it); `None` draws one. A caller
/// with an id has just seen no user for this phone, so the insert comes first
/// and a lookup only follows a conflict.
pub fn user_for_phone_as(
    conn: &mut DbConn,
    phone: &str,
    new_id: Option<String>,
    now: i64,
) -> AppResult<UserRow> {
    if new_id.is_none() {
        if let Some(user) = db::users::find_by_phone(conn, phone)? {
            return Ok(user);
        }
    }
    let (user, account) = phone_user_rows(new_id.unwrap_or_else(new_user_id), phone, now);
    match db::users::insert(conn, &user, Some(&account)) {
        Ok(()) => Ok(user),
        // Another request created this phone's user first: use that one. A
        // failed statement undoes only itself, so the user row goes too.
        Err(DbError::Conflict(_)) => {
            db::users::delete(conn, &user.id)?;
            db::users::find_by_phone(conn, phone)?.ok_or(AppError::Conflict { field: "phone" })
        }
        Err(e) => Err(e.into()),
    }
}

/// The rows of a user made by signing in with `phone`: a generated
/// username, no password, the phone verified.
pub fn phone_user_rows(id: String, phone: &str, now: i64) -> (UserRow, AccountRow) {
    let user = UserRow {
        id,
        username: auto_username(),
        email: None,
        first_name: String::new(),
        last_name: String::new(),
        password_hash: None,
        is_superuser: false,
        is_active: true,
        date_joined: now,
    };
    let account = AccountRow {
        user_id: user.id.clone(),
        phone: phone.to_string(),
        blood_group: String::new(),
        dob: None,
        address: String::new(),
        zip_code: String::new(),
        verified: true,
    };
    (user, account)
}

/// `phonekey createsuperuser`.
pub fn create_superuser(
    conn: &mut Conn,
    username: &str,
    email: &str,
    password: &str,
    now: i64,
) -> AppResult<UserRow> {
    if !valid_username(username) {
        return Err(AppError::invalid_request(
            "username may contain only letters, digits and @.+-_",
        ));
    }
    if !email.is_empty() && !email_address::EmailAddress::is_valid(email) {
        return Err(AppError::invalid_request("not an email address"));
    }
    if password.chars().count() < 8 {
        return Err(AppError::invalid_request(
            "the password must be at least 8 characters",
        ));
    }
    let user = UserRow {
        id: new_user_id(),
        username: username.to_string(),
        email: (!email.is_empty()).then(|| email.to_lowercase()),
        first_name: String::new(),
        last_name: String::new(),
        password_hash: Some(hash_password(password)?),
        is_superuser: true,
        is_active: true,
        date_joined: now,
    };
    db::users::insert(conn.db()?, &user, None).map_err(|e| match e {
        DbError::Conflict(m) => AppError::Conflict {
            field: conflict_field(&m),
        },
        other => other.into(),
    })?;
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dob_formats() {
        assert_eq!(parse_dob("1989-12-12"), Some(629_424_000));
        assert_eq!(parse_dob("1989-12-12T00:00:00Z"), Some(629_424_000));
        assert_eq!(parse_dob("12/12/1989"), None);
    }

    #[test]
    fn nested_field_errors() {
        let mut e = FieldErrors::default();
        e.add(&["account", "phone"], "bad");
        e.add(&["email"], "bad");
        let AppError::InvalidRequest {
            fields: Some(f), ..
        } = e.into_result().unwrap_err()
        else {
            panic!("expected field errors")
        };
        assert_eq!(f["account"]["phone"], "bad");
        assert_eq!(f["email"], "bad");
    }
}
