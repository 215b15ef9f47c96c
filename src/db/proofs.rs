//! MySQL: SMS codes and verification tickets spent by many requests in one
//! transaction (`db::batch`: the otp grant, verifycode, user creation). The
//! batch locks the proofs its requests present, decides which of them spend
//! under the conditions of the one-by-one `UPDATE`s (`codes::spend_if_matches`,
//! `tickets::consume_for_*`), and spends those; a proof presented twice in a
//! batch is won by the first. A request whose proof does not spend takes the
//! one-by-one path, which counts the attempt and says why.

use std::collections::HashSet;

use super::fixed::{self, Bind};
use super::{DbConn, DbError, DbResult};
use crate::secrets;

/// What a request spends, by its stored hash.
#[derive(Debug, Clone)]
pub enum ProofKey {
    /// A right SMS code: its hash, and the wrong tries a code may take.
    Code { hash: String, max_attempts: i32 },
    /// A verification ticket from verifycode.
    Ticket { hash: String },
}

/// Which use of a ticket a batch spends: each can be made once.
#[derive(Debug, Clone, Copy)]
pub(super) enum TicketUse {
    Token,
    User,
}

impl TicketUse {
    /// The column that records the use (a constant, never input).
    fn column(self) -> &'static str {
        match self {
            TicketUse::Token => "used_for_token_at",
            TicketUse::User => "used_for_user_at",
        }
    }
}

/// A proof as one request of a batch presents it.
pub(super) struct Presented<'a> {
    phone: &'a str,
    proof: &'a ProofKey,
    now: i64,
}

impl<'a> Presented<'a> {
    pub(super) fn new(phone: &'a str, proof: &'a ProofKey, now: i64) -> Presented<'a> {
        Presented { phone, proof, now }
    }
}

/// Spends, inside the caller's transaction, the proofs of `presented` that
/// can be spent; answers, per request, whether its proof was.
pub(super) fn spend_many(
    conn: &mut DbConn,
    presented: &[Presented<'_>],
    tickets_for: TicketUse,
) -> DbResult<Vec<bool>> {
    let mut won = vec![false; presented.len()];
    let codes = claim_codes(conn, presented, &mut won)?;
    let tickets = claim_tickets(conn, presented, tickets_for, &mut won)?;
    let Some(now) = presented
        .iter()
        .zip(&won)
        .filter_map(|(p, won)| won.then_some(p.now))
        .max()
    else {
        return Ok(won);
    };
    spend(
        conn,
        "UPDATE otp_codes SET attempts = attempts + 1, verified_at = ? WHERE id IN",
        now,
        &codes,
    )?;
    let update = format!(
        "UPDATE verification_tickets SET {} = ? WHERE ticket_hash IN",
        tickets_for.column()
    );
    spend(conn, &update, now, &tickets)?;
    Ok(won)
}

/// Locks the live codes of the phones presenting one and marks in `won` the
/// requests whose code spends; returns the ids of those codes.
fn claim_codes(
    conn: &mut DbConn,
    presented: &[Presented<'_>],
    won: &mut [bool],
) -> DbResult<Vec<String>> {
    use diesel::sql_types::{BigInt, Integer, Text};
    let phones = fixed::distinct_texts(
        presented
            .iter()
            .filter(|p| matches!(p.proof, ProofKey::Code { .. }))
            .map(|p| p.phone),
    );
    if phones.is_empty() {
        return Ok(Vec::new());
    }
    let (sql, binds) = fixed::in_list(
        "SELECT id, phone, code_hash, attempts, expires_at FROM otp_codes \
         WHERE superseded_at IS NULL AND verified_at IS NULL AND phone IN",
        &[],
        &phones,
    );
    let live: Vec<(String, String, String, i32, i64)> =
        fixed::load_mysql::<(Text, Text, Text, Integer, BigInt), _>(
            conn,
            &format!("{sql} FOR UPDATE"),
            &binds,
        )?;
    let mut claimed = Vec::new();
    for (p, won) in presented.iter().zip(won.iter_mut()) {
        let ProofKey::Code { hash, max_attempts } = p.proof else {
            continue;
        };
        let spendable = live
            .iter()
            .find(|(_, phone, code_hash, attempts, expires_at)| {
                phone == p.phone
                    && secrets::ct_eq(code_hash, hash)
                    && attempts < max_attempts
                    && *expires_at > p.now
            });
        if let Some((id, ..)) = spendable.filter(|(id, ..)| !claimed.contains(id)) {
            claimed.push(id.clone());
            *won = true;
        }
    }
    Ok(claimed)
}

/// Locks the presented tickets not yet spent for `tickets_for` and marks in
/// `won` the requests whose ticket spends; returns those tickets' hashes.
fn claim_tickets(
    conn: &mut DbConn,
    presented: &[Presented<'_>],
    tickets_for: TicketUse,
    won: &mut [bool],
) -> DbResult<Vec<String>> {
    use diesel::sql_types::{BigInt, Text};
    let hashes = fixed::distinct_texts(presented.iter().filter_map(|p| match p.proof {
        ProofKey::Ticket { hash } => Some(hash.as_str()),
        ProofKey::Code { .. } => None,
    }));
    if hashes.is_empty() {
        return Ok(Vec::new());
    }
    let select = format!(
        "SELECT ticket_hash, phone, expires_at FROM verification_tickets \
             WHERE {} IS NULL AND ticket_hash IN",
        tickets_for.column()
    );
    let (sql, binds) = fixed::in_list(&select, &[], &hashes);
    let unspent: Vec<(String, String, i64)> =
        fixed::load_mysql::<(Text, Text, BigInt), _>(conn, &format!("{sql} FOR UPDATE"), &binds)?;
    let mut claimed: HashSet<&str> = HashSet::new();
    for (p, won) in presented.iter().zip(won.iter_mut()) {
        let ProofKey::Ticket { hash } = p.proof else {
            continue;
        };
        let spendable = unspent.iter().any(|(ticket_hash, phone, expires_at)| {
            ticket_hash == hash && phone == p.phone && *expires_at > p.now
        });
        *won = spendable && claimed.insert(hash);
    }
    Ok(claimed.into_iter().map(str::to_string).collect())
}

/// Spends the locked rows `keys` with `update` (ending in `IN`), which sets
/// one time column to `now`.
fn spend(conn: &mut DbConn, update: &str, now: i64, keys: &[String]) -> DbResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let keys: Vec<Bind<'_>> = keys.iter().map(|k| Bind::Text(k)).collect();
    let (sql, binds) = fixed::in_list(update, &[Bind::BigInt(now)], &keys);
    let spent = fixed::execute(conn, &sql, &binds)?;
    if spent != keys.len() {
        // Locked above, so this cannot happen; if it does, store nothing.
        return Err(DbError::Other("a locked proof was not spent".into()));
    }
    Ok(())
}
