//! Signing keys for access tokens (RFC 9068 JWTs; EdDSA over Ed25519, or
//! RS256 with `PHONEKEY_TOKEN_ALG=RS256` for resource servers without EdDSA):
//! made at first start, kept in the database, published as a JWKS.
//!
//! Rotation without a gap: `rotate` stores the new key with a start time
//! `PUBLISH_AHEAD` seconds away and retires the old one at that moment.
//! Every instance reloads the keys more often than that, so each publishes
//! the new key before any signs with it; the key that signs is chosen by the
//! clock. A retired key stays published until the tokens it signed expire.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::Signer as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use serde::{Deserialize, Serialize};

use crate::config::TokenAlg;
use crate::db::{self, keys::KeyRow, Conn, DbConn};
use crate::error::{AppError, AppResult};
use crate::secrets;

/// RFC 9068 access token claims.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    pub client_id: String,
    pub scope: String,
}

/// Seconds between `keys rotate` and the new key signing: longer than
/// `KEY_RELOAD_SECONDS`, so that every instance publishes it first.
pub const PUBLISH_AHEAD: i64 = 60;
/// How often every instance re-reads the keys.
pub const KEY_RELOAD_SECONDS: u64 = 20;

enum Signer {
    /// Parsed once: jsonwebtoken's `encode` would re-derive it from PKCS#8 on
    /// every token. `header_b64`: the JOSE header, the same for every token.
    Ed {
        key: Box<ed25519_dalek::SigningKey>,
        header_b64: String,
    },
    Rsa {
        key: EncodingKey,
        header: Box<Header>,
    },
}

struct SigningKey {
    kid: String,
    alg: TokenAlg,
    signer: Signer,
    /// Signs from this time (a rotated-in key starts in the future) …
    from: i64,
    /// … until this one, if retired.
    until: Option<i64>,
}

struct Verifier {
    kid: String,
    algorithm: Algorithm,
    key: DecodingKey,
    /// EdDSA keys, parsed once: jsonwebtoken decompresses the curve point
    /// again for every verification.
    ed: Option<ed25519_dalek::VerifyingKey>,
}

pub struct KeyRing {
    /// The algorithm new tokens are signed with.
    alg: TokenAlg,
    signing: Vec<SigningKey>,
    verifying: Vec<Verifier>,
    jwks: String,
}

impl KeyRing {
    /// Loads the published keys, making the first one if there is none.
    /// `keep_after`: keys retired after this time are still published.
    pub fn load_or_create(
        conn: &mut DbConn,
        alg: TokenAlg,
        now: i64,
        keep_after: i64,
    ) -> AppResult<KeyRing> {
        let mut rows = db::keys::published(conn, keep_after)?;
        if !rows
            .iter()
            .any(|k| k.retired_at.is_none() && k.alg == alg.name())
        {
            db::keys::insert(conn, &generate(alg, now)?)?;
            // If another instance raced us, both sign with the same key (see `current`).
            rows = db::keys::published(conn, keep_after)?;
        }
        KeyRing::from_rows(&rows, alg)
    }

    /// The published keys as stored now (for the periodic reload).
    pub fn load(conn: &mut DbConn, alg: TokenAlg, keep_after: i64) -> AppResult<KeyRing> {
        KeyRing::from_rows(&db::keys::published(conn, keep_after)?, alg)
    }

    fn from_rows(rows: &[KeyRow], alg: TokenAlg) -> AppResult<KeyRing> {
        let corrupt = |kid: &str, e: &dyn std::fmt::Display| {
            AppError::Internal(format!("stored key {kid} is corrupt: {e}"))
        };
        let mut signing = Vec::new();
        let mut verifying = Vec::new();
        let mut jwks = Vec::new();
        for row in rows {
            let der = STANDARD
                .decode(&row.private_key)
                .map_err(|e| corrupt(&row.kid, &e))?;
            let (key_alg, algorithm, decoding, jwk, signer, ed) = match row.alg.as_str() {
                "EdDSA" => {
                    let key = ed25519_dalek::SigningKey::from_pkcs8_der(&der)
                        .map_err(|e| corrupt(&row.kid, &e))?;
                    let header =
                        serde_json::json!({ "typ": "at+jwt", "alg": "EdDSA", "kid": row.kid });
                    let ed = Some(key.verifying_key());
                    (
                        TokenAlg::EdDsa,
                        Algorithm::EdDSA,
                        DecodingKey::from_ed_components(&row.public_key)
                            .map_err(|e| corrupt(&row.kid, &e))?,
                        serde_json::json!({ "kty": "OKP", "crv": "Ed25519", "x": row.public_key }),
                        Signer::Ed {
                            key: Box::new(key),
                            header_b64: URL_SAFE_NO_PAD.encode(header.to_string()),
                        },
                        ed,
                    )
                }
                "RS256" => {
                    let parts: RsaPublic =
                        serde_json::from_str(&row.public_key).map_err(|e| corrupt(&row.kid, &e))?;
                    let mut header = Header::new(Algorithm::RS256);
                    header.typ = Some("at+jwt".into());
                    header.kid = Some(row.kid.clone());
                    (
                        TokenAlg::Rs256,
                        Algorithm::RS256,
                        DecodingKey::from_rsa_components(&parts.n, &parts.e)
                            .map_err(|e| corrupt(&row.kid, &e))?,
                        serde_json::json!({ "kty": "RSA", "n": parts.n, "e": parts.e }),
                        Signer::Rsa {
                            key: EncodingKey::from_rsa_der(&der),
                            header: Box::new(header),
                        },
                        None,
                    )
                }
                // A key of an algorithm this build does not know: not ours to use.
                _ => continue,
            };
            let mut jwk = jwk;
            jwk["kid"] = serde_json::json!(row.kid);
            jwk["use"] = serde_json::json!("sig");
            jwk["alg"] = serde_json::json!(row.alg);
            jwks.push(jwk);
            verifying.push(Verifier {
                kid: row.kid.clone(),
                algorithm,
                key: decoding,
                ed,
            });
            signing.push(SigningKey {
                kid: row.kid.clone(),
                alg: key_alg,
                signer,
                from: row.created_at,
                until: row.retired_at,
            });
        }
        if !signing.iter().any(|k| k.alg == alg) {
            return Err(AppError::Internal(format!("no {} signing key", alg.name())));
        }
        Ok(KeyRing {
            alg,
            signing,
            verifying,
            jwks: serde_json::json!({ "keys": jwks }).to_string(),
        })
    }

    /// The key of the configured algorithm that signs at `now`: the newest that has started and is not
    /// retired (ties broken by kid, so racing instances agree). If the clock
    /// stepped back before every start, the earliest unretired key.
    fn current(&self, now: i64) -> Option<&SigningKey> {
        let live = || {
            self.signing
                .iter()
                .filter(move |k| k.alg == self.alg && k.until.is_none_or(|u| u > now))
        };
        live()
            .filter(|k| k.from <= now)
            .max_by(|a, b| a.from.cmp(&b.from).then_with(|| b.kid.cmp(&a.kid)))
            .or_else(|| live().min_by(|a, b| a.from.cmp(&b.from).then_with(|| a.kid.cmp(&b.kid))))
    }

    /// A JWS in compact serialization (RFC 7515 §7.1): header.payload.signature,
    /// each base64url; the signature is ed25519-dalek's over the first two.
    /// The key is the one current at the token's `iat`.
    pub fn sign(&self, claims: &AccessClaims) -> AppResult<String> {
        let signer = self
            .current(claims.iat)
            .ok_or_else(|| AppError::Internal("no signing key is current".into()))?;
        let (key, header_b64) = match &signer.signer {
            Signer::Ed { key, header_b64 } => (key, header_b64),
            Signer::Rsa { key, header } => {
                return jsonwebtoken::encode(header, claims, key)
                    .map_err(|e| AppError::Internal(format!("signing failed: {e}")))
            }
        };
        let payload =
            serde_json::to_vec(claims).map_err(|e| AppError::Internal(format!("claims: {e}")))?;
        let mut jws = String::with_capacity(header_b64.len() + payload.len() * 4 / 3 + 100);
        jws.push_str(header_b64);
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut jws);
        let signature = key.sign(jws.as_bytes());
        jws.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut jws);
        Ok(jws)
    }

    /// Verifies signature, issuer, audience and expiry; `None` for anything else.
    pub fn verify(&self, token: &str, issuer: &str, audience: &str) -> Option<AccessClaims> {
        let verifier = self.named_key(token)?;
        let mut validation = Validation::new(verifier.algorithm);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.leeway = 0;
        jsonwebtoken::decode::<AccessClaims>(token, &verifier.key, &validation)
            .ok()
            .map(|d| d.claims)
    }

    /// The published key that a token's header names, if the header also
    /// names that key's algorithm.
    fn named_key(&self, token: &str) -> Option<&Verifier> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        let kid = header.kid?;
        let verifier = self.verifying.iter().find(|v| v.kid == kid)?;
        (header.alg == verifier.algorithm).then_some(verifier)
    }

    /// The `jti` a token claims if its header names one of the published keys
    /// with that key's algorithm. Nothing is verified: the caller must bind
    /// the token to what it finds (introspection compares the stored hash).
    pub fn claimed_jti(&self, token: &str) -> Option<String> {
        self.named_key(token)?;
        let payload = token.split('.').nth(1)?;
        let claims: Jti = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        Some(claims.jti)
    }

    /// The `jti` of a token that carries our signature (from any of the
    /// published keys), whatever its expiry or audience: the database decides
    /// whether it is still active.
    pub fn verified_jti(&self, token: &str) -> Option<String> {
        let verifier = self.named_key(token)?;
        if let Some(key) = &verifier.ed {
            return ed_payload::<Jti>(token, key).map(|c| c.jti);
        }
        let mut validation = Validation::new(verifier.algorithm);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<Jti>(token, &verifier.key, &validation)
            .ok()
            .map(|d| d.claims.jti)
    }

    pub fn jwks_json(&self) -> &str {
        &self.jwks
    }
}

#[derive(Deserialize)]
struct Jti {
    jti: String,
}

/// The payload of a compact JWS (header.payload.signature) if `key` made its
/// EdDSA signature over header.payload; the caller has checked the header.
fn ed_payload<T: serde::de::DeserializeOwned>(
    token: &str,
    key: &ed25519_dalek::VerifyingKey,
) -> Option<T> {
    let (signed, signature) = token.rsplit_once('.')?;
    let (_, payload) = signed.split_once('.')?;
    let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
    let signature = ed25519_dalek::Signature::from_slice(&signature).ok()?;
    key.verify_strict(signed.as_bytes(), &signature).ok()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

/// `phonekey keys rotate`: a new key that starts signing `PUBLISH_AHEAD`
/// seconds from `now`, when the current keys retire. Returns the new kid.
pub fn rotate(conn: &mut Conn, alg: TokenAlg, now: i64) -> AppResult<String> {
    let switch = now + PUBLISH_AHEAD;
    let row = generate(alg, switch)?;
    let kid = row.kid.clone();
    conn.write_tx(move |c| {
        db::keys::retire_current(c, switch)?;
        db::keys::insert(c, &row)
    })?;
    Ok(kid)
}

#[derive(Serialize, Deserialize)]
struct RsaPublic {
    n: String,
    e: String,
}

fn generate(alg: TokenAlg, now: i64) -> AppResult<KeyRow> {
    let failed =
        |e: &dyn std::fmt::Display| AppError::Internal(format!("key generation failed: {e}"));
    let (private_der, public_key, canonical) = match alg {
        TokenAlg::EdDsa => {
            let seed: [u8; 32] = secrets::random_bytes(32)
                .try_into()
                .map_err(|_| AppError::Internal("short random read".into()))?;
            let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
            let der = signing.to_pkcs8_der().map_err(|e| failed(&e))?;
            let x = URL_SAFE_NO_PAD.encode(signing.verifying_key().to_bytes());
            let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
            (der.as_bytes().to_vec(), x, canonical)
        }
        TokenAlg::Rs256 => {
            let key =
                rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).map_err(|e| failed(&e))?;
            // jsonwebtoken signs RS256 from PKCS#1 DER.
            let der = key.to_pkcs1_der().map_err(|e| failed(&e))?;
            let n = URL_SAFE_NO_PAD.encode(key.n().to_bytes_be());
            let e = URL_SAFE_NO_PAD.encode(key.e().to_bytes_be());
            let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
            let public = serde_json::to_string(&RsaPublic { n, e }).map_err(|e| failed(&e))?;
            (der.as_bytes().to_vec(), public, canonical)
        }
    };
    Ok(KeyRow {
        kid: thumbprint(&canonical),
        alg: alg.name().into(),
        private_key: STANDARD.encode(private_der),
        public_key,
        created_at: now,
        retired_at: None,
    })
}

/// RFC 7638 JWK thumbprint of the required members, given in lexicographic order without spaces.
fn thumbprint(canonical: &str) -> String {
    URL_SAFE_NO_PAD.encode(secrets::sha256(canonical.as_bytes()))
}
