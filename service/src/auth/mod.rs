//! Who may do what: bearer-token (JWT) verification against the configured keys, and the
//! scopes each operation needs. No HTTP framework here: `http::guard` applies it to requests.

mod scope;
mod token;

pub use scope::{SCOPE_READ, SCOPE_WRITE, required_scope};
pub use token::{AuthError, MAX_TOKEN_BYTES, Principal, Verifier, mint_hs256};
