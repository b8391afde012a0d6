//! Bearer-token (JWT) authentication: key loading and verification, and the request guard.

pub mod keys;
pub mod middleware;

pub use keys::{AuthError, Principal, Verifier};
