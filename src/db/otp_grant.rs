//! MySQL: the otp grant's write (spend the proof, create the phone's user if
//! one is given, store the tokens, commit) for the common case only. Whatever
//! it does not store (a wrong code, a phone that got its user meanwhile) is
//! left exactly as it was, for the path that makes the same statements one
//! by one and says why. A request alone is one call of the stored procedure
//! `phonekey_otp_grant` (migration `2026-11-26-000004_otp_grant`); the
//! grants of concurrent requests share one transaction (`db::batch`). SQLite
//! has no such path: its writes are in-process calls anyway.

use std::collections::HashSet;

use super::fixed::{self, Bind};
use super::tokens::{self, access_binds, refresh_binds, AccessTokenRow, RefreshTokenRow};
use super::users::{self, AccountRow, UserRow};
use super::{Conn, DbConn, DbError, DbResult};
use crate::secrets;

/// What the grant spends, by its stored hash.
#[derive(Debug, Clone)]
pub enum ProofKey {
    /// A right SMS code: its hash, and the wrong tries a code may take.
    Code { hash: String, max_attempts: i32 },
    /// A verification ticket from verifycode.
    Ticket { hash: String },
}

/// One grant's write, owned so that it can wait in a batch.
#[derive(Debug)]
pub struct GrantWrite {
    pub phone: String,
    pub proof: ProofKey,
    pub now: i64,
    /// The phone's new user, when it had none.
    pub new_user: Option<(UserRow, AccountRow)>,
    pub access: AccessTokenRow,
    pub refresh: Option<RefreshTokenRow>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Stores `write` if its proof spends; never inside another transaction.
pub fn store(conn: &mut Conn, write: GrantWrite) -> DbResult<Outcome> {
    if let Some(batched) = &conn.batched {
        return batched.otp_grants.run(write);
    }
    conn.write_atomic(move |c| store_in_one_call(c, &write))
}

/// One grant as one call of the procedure (it has its own transaction).
fn store_in_one_call(conn: &mut DbConn, write: &GrantWrite) -> DbResult<Outcome> {
    let (kind, hash, max_attempts) = match &write.proof {
        ProofKey::Code { hash, max_attempts } => ("code", hash, *max_attempts),
        ProofKey::Ticket { hash } => ("ticket", hash, 0),
    };
    let user = write.new_user.as_ref().map(|(u, _)| u);
    let account = write.new_user.as_ref().map(|(_, a)| a);
    let head = [
        Bind::Text(kind),
        Bind::Text(&write.phone),
        Bind::Text(hash),
        Bind::Int(max_attempts),
        Bind::BigInt(write.now),
    ];
    let binds = [
        &head[..],
        &users::user_binds(user),
        &users::account_binds(account),
        &access_binds(&write.access),
        &refresh_binds(write.refresh.as_ref()),
    ]
    .concat();
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

/// Many grants in one transaction (`db::batch`): lock the live codes of the
/// phones and the unspent tickets presented, decide which grants spend
/// (the same conditions as the procedure's `UPDATE`s; a proof presented twice
/// is won by the first), spend them, insert the winners' users, accounts and
/// tokens with one multi-row `INSERT` each, commit. A new user whose phone
/// or username is taken fails the whole batch, which is then run again one
/// grant at a time, so that only that grant is left unstored.
pub(super) fn store_many(conn: &mut DbConn, batch: &[GrantWrite]) -> DbResult<Vec<Outcome>> {
    if let [one] = batch {
        return Ok(vec![store_in_one_call(conn, one)?]);
    }
    conn.write_tx(|conn| {
        let mut won = vec![false; batch.len()];
        let code_ids = claim_codes(conn, batch, &mut won)?;
        let tickets = claim_tickets(conn, batch, &mut won)?;
        let winners: Vec<&GrantWrite> = batch
            .iter()
            .zip(&won)
            .filter_map(|(w, won)| won.then_some(w))
            .collect();
        if winners.is_empty() {
            return Ok(outcomes(&won));
        }
        let now = winners.iter().map(|w| w.now).max().unwrap_or_default();
        spend(
            conn,
            "UPDATE otp_codes SET attempts = attempts + 1, verified_at = ? WHERE id IN",
            now,
            &code_ids,
        )?;
        spend(
            conn,
            "UPDATE verification_tickets SET used_for_token_at = ? WHERE ticket_hash IN",
            now,
            &tickets,
        )?;
        let new_users: Vec<&(UserRow, AccountRow)> =
            winners.iter().filter_map(|w| w.new_user.as_ref()).collect();
        if !new_users.is_empty() {
            users::insert_many(conn, &new_users)?;
        }
        tokens::insert_access_many(conn, winners.iter().map(|w| &w.access))?;
        let refresh: Vec<&RefreshTokenRow> =
            winners.iter().filter_map(|w| w.refresh.as_ref()).collect();
        if !refresh.is_empty() {
            tokens::insert_refresh_many(conn, refresh.into_iter())?;
        }
        Ok(outcomes(&won))
    })
}

fn outcomes(won: &[bool]) -> Vec<Outcome> {
    won.iter()
        .map(|&w| {
            if w {
                Outcome::Stored
            } else {
                Outcome::NotStored
            }
        })
        .collect()
}

/// Locks the codes the batch's code grants could spend and marks in `won`
/// those that do; returns the ids of the codes they spend.
fn claim_codes(conn: &mut DbConn, batch: &[GrantWrite], won: &mut [bool]) -> DbResult<Vec<String>> {
    use diesel::sql_types::{BigInt, Integer, Text};
    let phones = fixed::distinct_texts(
        batch
            .iter()
            .filter(|w| matches!(w.proof, ProofKey::Code { .. }))
            .map(|w| w.phone.as_str()),
    );
    if phones.is_empty() {
        return Ok(Vec::new());
    }
    let sql = fixed::in_list_sql(
        "SELECT id, phone, code_hash, attempts, expires_at FROM otp_codes \
         WHERE superseded_at IS NULL AND verified_at IS NULL AND phone IN",
        phones.len(),
    );
    let live: Vec<(String, String, String, i32, i64)> =
        fixed::load_mysql::<(Text, Text, Text, Integer, BigInt), _>(
            conn,
            &format!("{sql} FOR UPDATE"),
            &phones,
        )?;
    let mut claimed = HashSet::new();
    for (write, won) in batch.iter().zip(won.iter_mut()) {
        let ProofKey::Code { hash, max_attempts } = &write.proof else {
            continue;
        };
        let spendable = live
            .iter()
            .find(|(_, phone, code_hash, attempts, expires_at)| {
                *phone == write.phone
                    && secrets::ct_eq(code_hash, hash)
                    && attempts < max_attempts
                    && *expires_at > write.now
            });
        if let Some((id, ..)) = spendable {
            *won = claimed.insert(id.clone());
        }
    }
    Ok(claimed.into_iter().collect())
}

/// Locks the unspent tickets the batch's ticket grants present and marks in
/// `won` those that spend; returns their hashes.
fn claim_tickets(
    conn: &mut DbConn,
    batch: &[GrantWrite],
    won: &mut [bool],
) -> DbResult<Vec<String>> {
    use diesel::sql_types::{BigInt, Text};
    let hashes = fixed::distinct_texts(batch.iter().filter_map(|w| match &w.proof {
        ProofKey::Ticket { hash } => Some(hash.as_str()),
        ProofKey::Code { .. } => None,
    }));
    if hashes.is_empty() {
        return Ok(Vec::new());
    }
    let sql = fixed::in_list_sql(
        "SELECT ticket_hash, phone, expires_at FROM verification_tickets \
         WHERE used_for_token_at IS NULL AND ticket_hash IN",
        hashes.len(),
    );
    let unspent: Vec<(String, String, i64)> =
        fixed::load_mysql::<(Text, Text, BigInt), _>(conn, &format!("{sql} FOR UPDATE"), &hashes)?;
    let mut claimed = HashSet::new();
    for (write, won) in batch.iter().zip(won.iter_mut()) {
        let ProofKey::Ticket { hash } = &write.proof else {
            continue;
        };
        let spendable = unspent.iter().any(|(ticket_hash, phone, expires_at)| {
            ticket_hash == hash && *phone == write.phone && *expires_at > write.now
        });
        if spendable {
            *won = claimed.insert(hash.clone());
        }
    }
    Ok(claimed.into_iter().collect())
}

/// Spends the locked rows `keys` with `update` (ending in `IN`), which sets
/// one time column to `now`.
fn spend(conn: &mut DbConn, update: &str, now: i64, keys: &[String]) -> DbResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut binds = vec![Bind::BigInt(now)];
    binds.extend(keys.iter().map(|k| Bind::Text(k)));
    let spent = fixed::execute(conn, &fixed::in_list_sql(update, keys.len()), &binds)?;
    if spent != keys.len() {
        // Locked above, so this cannot happen; if it does, store nothing.
        return Err(DbError::Other("a locked proof was not spent".into()));
    }
    Ok(())
}
