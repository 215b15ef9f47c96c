//! MySQL: the otp grant's write (spend the proof, create the phone's user if
//! one is given, store the tokens, commit) for the common case only. Whatever
//! it does not store (a wrong code, a phone that got its user meanwhile) is
//! left exactly as it was, for the path that makes the same statements one
//! by one and says why. A request alone is one call of the stored procedure
//! `phonekey_otp_grant` (migration `2026-11-26-000004_otp_grant`); the
//! grants of concurrent requests share one transaction (`db::batch`). SQLite
//! has no such path: its writes are in-process calls anyway.

use super::fixed::{self, Bind};
use super::proofs::{self, Presented, ProofKey, TicketUse};
use super::tokens::{self, access_binds, refresh_binds, AccessTokenRow, RefreshTokenRow};
use super::users::{self, AccountRow, UserRow};
use super::{Conn, DbConn, DbError, DbResult};

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

/// Many grants in one transaction (`db::batch`): spend the proofs that can
/// be spent (`db::proofs`, the same conditions as the procedure's), insert the winners' users, accounts and
/// tokens with one multi-row `INSERT` each, commit. A new user whose phone
/// or username is taken fails the whole batch, which is then run again one
/// grant at a time, so that only that grant is left unstored.
pub(super) fn store_many(conn: &mut DbConn, batch: &[GrantWrite]) -> DbResult<Vec<Outcome>> {
    if let [one] = batch {
        return Ok(vec![store_in_one_call(conn, one)?]);
    }
    conn.write_tx(|conn| {
        let presented: Vec<Presented<'_>> = batch
            .iter()
            .map(|w| Presented::new(&w.phone, &w.proof, w.now))
            .collect();
        let won = proofs::spend_many(conn, &presented, TicketUse::Token)?;
        let winners: Vec<&GrantWrite> = batch
            .iter()
            .zip(&won)
            .filter_map(|(w, won)| won.then_some(w))
            .collect();
        if winners.is_empty() {
            return Ok(outcomes(&won));
        }
        let new_users: Vec<(&UserRow, &AccountRow)> = winners
            .iter()
            .filter_map(|w| w.new_user.as_ref().map(|(u, a)| (u, a)))
            .collect();
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
