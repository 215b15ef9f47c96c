//! MySQL: the otp grant's write in one call of the stored procedure
//! `phonekey_otp_grant` (migration `2026-11-26-000004_otp_grant`): spend the
//! proof, create the phone's user if one is given, store the tokens, commit.
//! One round trip instead of six to eight. It covers the common case only;
//! whatever it does not store (a wrong code, a phone that got its user
//! meanwhile) is left exactly as it was, for the path that makes the same
//! statements one by one and says why. SQLite has no such path: its writes
//! are in-process calls anyway.

use super::fixed::{self, Bind};
use super::tokens::{access_binds, refresh_binds, AccessTokenRow, RefreshTokenRow};
use super::users::{AccountRow, UserRow};
use super::{DbConn, DbError, DbResult};

/// What the grant spends, by its stored hash.
pub enum ProofKey<'a> {
    /// A right SMS code: its hash, and the wrong tries a code may take.
    Code { hash: &'a str, max_attempts: i32 },
    /// A verification ticket from verifycode.
    Ticket { hash: &'a str },
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Spent and stored, and committed.
    Stored,
    /// Nothing changed: the proof did not spend, or the phone got a user
    /// since it was read. The step-by-step path tells which.
    NotStored,
}

/// The message the procedure raises for a proof that did not spend; the
/// migration says the same.
const NOT_SPENT: &str = "phonekey: proof not spent";

/// Runs the grant's write as one call; never inside another transaction
/// (the procedure has its own).
pub fn store_in_one_call(
    conn: &mut DbConn,
    phone: &str,
    proof: ProofKey<'_>,
    now: i64,
    new_user: Option<(&UserRow, &AccountRow)>,
    access: &AccessTokenRow,
    refresh: Option<&RefreshTokenRow>,
) -> DbResult<Outcome> {
    let (kind, hash, max_attempts) = match proof {
        ProofKey::Code { hash, max_attempts } => ("code", hash, max_attempts),
        ProofKey::Ticket { hash } => ("ticket", hash, 0),
    };
    let user = new_user.map(|(u, _)| u);
    let account = new_user.map(|(_, a)| a);
    let flag = |b: Option<bool>| Bind::OptInt(b.map(i32::from));
    let head = [
        Bind::Text(kind),
        Bind::Text(phone),
        Bind::Text(hash),
        Bind::Int(max_attempts),
        Bind::BigInt(now),
        Bind::OptText(user.map(|u| u.id.as_str())),
        Bind::OptText(user.map(|u| u.username.as_str())),
        Bind::OptText(user.and_then(|u| u.email.as_deref())),
        Bind::OptText(user.map(|u| u.first_name.as_str())),
        Bind::OptText(user.map(|u| u.last_name.as_str())),
        Bind::OptText(user.and_then(|u| u.password_hash.as_deref())),
        flag(user.map(|u| u.is_superuser)),
        flag(user.map(|u| u.is_active)),
        Bind::OptBigInt(user.map(|u| u.date_joined)),
        Bind::OptText(account.map(|a| a.phone.as_str())),
        Bind::OptText(account.map(|a| a.blood_group.as_str())),
        Bind::OptBigInt(account.and_then(|a| a.dob)),
        Bind::OptText(account.map(|a| a.address.as_str())),
        Bind::OptText(account.map(|a| a.zip_code.as_str())),
        flag(account.map(|a| a.verified)),
    ];
    let binds = [&head[..], &access_binds(access), &refresh_binds(refresh)].concat();
    let called = fixed::execute(
        conn,
        "CALL phonekey_otp_grant(?, ?, ?, ?, ?, \
         ?, ?, ?, ?, ?, ?, ?, ?, ?, \
         ?, ?, ?, ?, ?, ?, \
         ?, ?, ?, ?, ?, ?, ?, ?, ?, \
         ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        &binds,
    );
    match called {
        Ok(_) => Ok(Outcome::Stored),
        Err(DbError::Other(message)) if message == NOT_SPENT => Ok(Outcome::NotStored),
        // The phone's account (or, rarely, the generated username) exists.
        Err(DbError::Conflict(_)) => Ok(Outcome::NotStored),
        Err(e) => Err(e),
    }
}
