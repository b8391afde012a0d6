//! Bearer tokens (JWT): verification against the loaded keys, and minting for local use.
//!
//! The algorithm a token is checked with always comes from the configured key (its type, or
//! the JWK's `alg`; see `config::keys`), never from the token header: a token whose header
//! names another algorithm is rejected (no `alg: none`, no HS256 signed with an RSA public key).

use std::{collections::HashMap, fmt, time::Duration};

use jsonwebtoken::{Algorithm, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::config::{
    AuthConfig, PinnedKey, VerificationKeys,
    keys::{KeyError, install_crypto_provider},
};

/// Longest token considered; longer `Authorization` values are rejected unparsed.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub` claim.
    pub subject: String,
    /// Scopes from the space-separated `scope` claim.
    pub scopes: Vec<String>,
}

impl Principal {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// Why a token was not accepted. The `Display` text is safe to send to the client (it is the
/// RFC 6750 `error_description`): it never contains token or key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization: Bearer` header at all (RFC 6750: no `error` parameter then).
    Missing,
    /// The header is not `Bearer <token>`.
    Malformed,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
    /// Signature, algorithm, key id or shape are wrong.
    Invalid(&'static str),
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthError::Missing => "a bearer token is required",
            AuthError::Malformed => "the Authorization header must be `Bearer <token>`",
            AuthError::Expired => "the token has expired",
            AuthError::NotYetValid => "the token is not valid yet",
            AuthError::WrongIssuer => "the token was issued by an unexpected issuer",
            AuthError::WrongAudience => "the token is not meant for this service",
            AuthError::Invalid(why) => why,
        })
    }
}

impl std::error::Error for AuthError {}

impl AuthError {
    fn from_jwt(err: &jsonwebtoken::errors::Error) -> AuthError {
        match err.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
            ErrorKind::InvalidAudience => AuthError::WrongAudience,
            ErrorKind::InvalidSignature => AuthError::Invalid("the token signature is invalid"),
            ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                AuthError::Invalid("the token algorithm is not accepted")
            }
            ErrorKind::MissingRequiredClaim(_) => {
                AuthError::Invalid("the token lacks a required claim (exp, sub)")
            }
            ErrorKind::InvalidClaimFormat(_) => AuthError::Invalid("a token claim is malformed"),
            _ => AuthError::Invalid("the token is malformed"),
        }
    }
}

/// One verification key with the checks every token it verifies must pass.
#[derive(Clone)]
struct Checked {
    key: jsonwebtoken::DecodingKey,
    validation: Validation,
}

impl Checked {
    fn new(pinned: &PinnedKey, cfg: &AuthConfig) -> Self {
        Self {
            key: pinned.key.clone(),
            validation: validation(pinned.algorithm, cfg),
        }
    }
}

#[derive(Clone)]
enum Keys {
    /// Boxed: a decoding key with its validation is large next to the other variant.
    Single(Box<Checked>),
    /// JWKS keys by `kid`; a token without `kid` is accepted only when there is one key.
    Set(HashMap<String, Checked>),
}

/// Verifies bearer tokens against the configured key(s).
#[derive(Clone)]
pub struct Verifier {
    keys: Keys,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = match &self.keys {
            Keys::Single(_) => 1,
            Keys::Set(m) => m.len(),
        };
        f.debug_struct("Verifier").field("keys", &n).finish()
    }
}

/// Claims the service reads; everything else in the token is ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    scope: Option<String>,
}

fn validation(alg: Algorithm, cfg: &AuthConfig) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = cfg.leeway.as_secs();
    v.validate_nbf = true;
    v.set_required_spec_claims(&["exp", "sub"]);
    if !cfg.issuer.is_empty() {
        v.set_issuer(&[&cfg.issuer]);
        v.required_spec_claims.insert("iss".into());
    }
    if !cfg.audience.is_empty() {
        v.set_audience(&[&cfg.audience]);
        v.required_spec_claims.insert("aud".into());
    }
    v
}

impl Verifier {
    /// The verifier for the keys `cfg` has loaded; `None` when it has none (auth off).
    pub fn new(cfg: &AuthConfig) -> Option<Verifier> {
        install_crypto_provider();
        let keys = match cfg.keys.as_ref()? {
            VerificationKeys::Single(k) => Keys::Single(Box::new(Checked::new(k, cfg))),
            VerificationKeys::Set(set) => Keys::Set(
                set.iter()
                    .map(|(kid, k)| (kid.clone(), Checked::new(k, cfg)))
                    .collect(),
            ),
        };
        Some(Verifier { keys })
    }

    /// Checks an `Authorization` header value and returns the caller it names.
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<Principal, AuthError> {
        let Some(raw) = header else {
            return Err(AuthError::Missing);
        };
        let raw = std::str::from_utf8(raw).map_err(|_| AuthError::Malformed)?;
        let (scheme, token) = raw.trim().split_once(' ').ok_or(AuthError::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::Malformed);
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Malformed);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Invalid("the token is too long"));
        }
        self.verify(token)
    }

    /// Verifies a compact JWT.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let pinned = match &self.keys {
            Keys::Single(k) => k,
            Keys::Set(keys) => {
                // The header is read only to find the key id; the algorithm is the key's.
                let header =
                    jsonwebtoken::decode_header(token).map_err(|e| AuthError::from_jwt(&e))?;
                match (header.kid.as_deref(), keys.len()) {
                    (Some(kid), _) => keys
                        .get(kid)
                        .ok_or(AuthError::Invalid("the token's key id (kid) is unknown"))?,
                    (None, 1) => keys
                        .values()
                        .next()
                        .ok_or(AuthError::Invalid("no verification key"))?,
                    (None, _) => {
                        return Err(AuthError::Invalid("the token has no key id (kid)"));
                    }
                }
            }
        };
        let data = jsonwebtoken::decode::<Claims>(token, &pinned.key, &pinned.validation)
            .map_err(|e| AuthError::from_jwt(&e))?;
        let Claims { sub, scope } = data.claims;
        if sub.is_empty() || sub.len() > 256 {
            return Err(AuthError::Invalid(
                "the token's sub claim is empty or too long",
            ));
        }
        let scopes = scope
            .unwrap_or_default()
            .split(' ')
            .filter(|s| !s.is_empty())
            .take(64)
            .map(str::to_owned)
            .collect();
        Ok(Principal {
            subject: sub,
            scopes,
        })
    }
}

/// Claims of a token minted by `shipshape token`.
#[derive(Debug, Serialize)]
struct MintClaims<'a> {
    sub: &'a str,
    scope: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
    #[serde(skip_serializing_if = "str::is_empty")]
    iss: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    aud: &'a str,
}

/// Mints an HS256 token with the configured secret (for local use and tests).
pub fn mint_hs256(
    cfg: &AuthConfig,
    subject: &str,
    scopes: &[String],
    ttl: Duration,
) -> Result<String, KeyError> {
    install_crypto_provider();
    let secret = cfg.hs256_secret.expose();
    if secret.is_empty() {
        return Err(KeyError {
            key: "auth.hs256_secret",
            why: "no HS256 secret is configured, so no token can be minted \
                  (set SHIPSHAPE_AUTH__HS256_SECRET, e.g. file:/path/to/secret; a server \
                  started with --ephemeral-key prints its own token at start)"
                .into(),
        });
    }
    let key = EncodingKey::from_secret(secret.as_bytes()).map_err(|e| KeyError {
        key: "auth.hs256_secret",
        why: e.to_string(),
    })?;
    let now = jsonwebtoken::get_current_timestamp();
    let scope = scopes.join(" ");
    let claims = MintClaims {
        sub: subject,
        scope: &scope,
        iat: now,
        nbf: now,
        exp: now.saturating_add(ttl.as_secs()),
        iss: &cfg.issuer,
        aud: &cfg.audience,
    };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).map_err(|e| KeyError {
        key: "auth.hs256_secret",
        why: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use jsonwebtoken::DecodingKey;

    use super::*;
    use crate::config::Secret;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn hs256(cfg: &mut AuthConfig) -> Verifier {
        cfg.use_hs256_secret(Secret::new(SECRET)).unwrap();
        Verifier::new(cfg).unwrap()
    }

    fn token(cfg: &AuthConfig, sub: &str) -> String {
        mint_hs256(
            cfg,
            sub,
            &["items:read".into(), "items:write".into()],
            Duration::from_secs(60),
        )
        .unwrap()
    }

    #[test]
    fn no_loaded_key_is_no_verifier() {
        assert!(Verifier::new(&AuthConfig::default()).is_none());
    }

    #[test]
    fn minted_tokens_verify_with_their_scopes() {
        let mut cfg = AuthConfig::default();
        let v = hs256(&mut cfg);
        assert_eq!(format!("{v:?}"), "Verifier { keys: 1 }");
        let header = format!("Bearer {}", token(&cfg, "ci"));
        let p = v.authenticate(Some(header.as_bytes())).unwrap();
        assert_eq!(p.subject, "ci");
        assert!(p.has_scope("items:write") && !p.has_scope("admin"));
    }

    #[test]
    fn malformed_headers_and_tokens_are_rejected() {
        let mut cfg = AuthConfig::default();
        let v = hs256(&mut cfg);
        let check = |h: &[u8]| v.authenticate(Some(h)).unwrap_err();
        assert_eq!(v.authenticate(None).unwrap_err(), AuthError::Missing);
        assert_eq!(check(b"Basic abc"), AuthError::Malformed);
        assert_eq!(check(b"Bearer"), AuthError::Malformed);
        assert_eq!(check(b"Bearer   "), AuthError::Malformed);
        assert_eq!(check(&[0xff, 0xfe]), AuthError::Malformed);
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_BYTES + 1));
        assert_eq!(
            check(long.as_bytes()),
            AuthError::Invalid("the token is too long")
        );
        assert!(matches!(check(b"Bearer not.a.jwt"), AuthError::Invalid(_)));
        let empty_sub = format!("Bearer {}", token(&cfg, ""));
        assert_eq!(
            check(empty_sub.as_bytes()),
            AuthError::Invalid("the token's sub claim is empty or too long")
        );
        let other = AuthConfig {
            hs256_secret: Secret::new("another-secret-another-secret-123"),
            ..AuthConfig::default()
        };
        let forged = format!("Bearer {}", token(&other, "x"));
        assert_eq!(
            check(forged.as_bytes()),
            AuthError::Invalid("the token signature is invalid")
        );
    }

    #[test]
    fn key_sets_select_by_kid() {
        let mut cfg = AuthConfig::default();
        let pinned = |_| PinnedKey {
            key: DecodingKey::from_secret(SECRET.as_bytes()).unwrap(),
            algorithm: Algorithm::HS256,
        };
        let set: HashMap<String, PinnedKey> = ["a", "b"]
            .iter()
            .map(|k| (k.to_string(), pinned(k)))
            .collect();
        cfg.keys = Some(VerificationKeys::Set(set));
        let v = Verifier::new(&cfg).unwrap();
        assert_eq!(format!("{v:?}"), "Verifier { keys: 2 }");
        cfg.hs256_secret = Secret::new(SECRET);
        let no_kid = token(&cfg, "x");
        assert_eq!(
            v.verify(&no_kid).unwrap_err(),
            AuthError::Invalid("the token has no key id (kid)")
        );
        let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
        let with_kid = |kid: &str| {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(kid.into());
            let claims =
                serde_json::json!({"sub": "k", "exp": jsonwebtoken::get_current_timestamp() + 60});
            jsonwebtoken::encode(&header, &claims, &key).unwrap()
        };
        assert_eq!(v.verify(&with_kid("b")).unwrap().subject, "k");
        assert_eq!(
            v.verify(&with_kid("zz")).unwrap_err(),
            AuthError::Invalid("the token's key id (kid) is unknown")
        );
    }

    #[test]
    fn minting_needs_a_secret() {
        let e = mint_hs256(&AuthConfig::default(), "x", &[], Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.key, "auth.hs256_secret");
        assert!(e.why.starts_with("no HS256 secret is configured"));
    }
}
