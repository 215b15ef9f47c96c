//! OAuth 2.0 on oxide-auth: our database-backed primitives (`store`,
//! `registrar`, `issuer`), the token endpoint's dispatcher (`token`), our own
//! grants (`grants`), signing keys and client registration.

pub mod authorize;
pub mod authorizer;
pub mod clients;
pub mod detached;
mod error;
pub mod grants;
pub mod introspect;
pub mod issuer;
pub mod keys;
mod registrar;
pub mod request;
pub mod store;
pub mod token;

pub use error::{OAuthError, OAuthErrorKind};
