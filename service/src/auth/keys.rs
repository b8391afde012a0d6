//! Verification keys from config (HS256 secret, PEM public key or JWKS) and token checks.
//!
//! The algorithm a token is checked with always comes from the configured key (its type, or
//! the JWK's `alg`), never from the token header: a token whose header names another algorithm
//! is rejected (no `alg: none`, no HS256 signed with an RSA public key).

use std::{collections::HashMap, fmt, time::Duration};

use jsonwebtoken::{
    Algorithm, DecodingKey, EncodingKey, Header, Validation,
    errors::ErrorKind,
    jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse},
};
use serde::{Deserialize, Serialize};

use crate::config::AuthConfig;

/// Shortest accepted HS256 secret (RFC 7518 section 3.2: at least the hash output size).
pub const MIN_SECRET_BYTES: usize = 32;
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

/// A problem with the `[auth]` configuration (reported at start-up, exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{why}")]
pub struct KeyConfigError {
    key: &'static str,
    why: String,
}

impl KeyConfigError {
    fn new(key: &'static str, why: impl Into<String>) -> Self {
        Self {
            key,
            why: why.into(),
        }
    }
    /// The config key at fault (`auth` when it is about the section as a whole).
    pub fn key(&self) -> &'static str {
        self.key
    }

    /// Auth is on but no key is configured (serving needs one).
    pub fn missing() -> Self {
        Self::new(
            "auth",
            "auth is enabled but no key is configured: set auth.hs256_secret, \
             auth.public_key_file or auth.jwks_file; for local use, `shipshape serve \
             --ephemeral-key` makes a key for this process only and prints a token (or \
             auth.enabled = false, env SHIPSHAPE_AUTH__ENABLED=false, turns auth off)",
        )
    }
}

/// One verification key and the single algorithm it verifies.
#[derive(Clone)]
struct PinnedKey {
    key: DecodingKey,
    validation: Validation,
}

impl PinnedKey {
    fn new(key: DecodingKey, alg: Algorithm, cfg: &AuthConfig) -> Self {
        Self {
            key,
            validation: validation(alg, cfg),
        }
    }
}

#[derive(Clone)]
enum Keys {
    /// Boxed: a decoding key with its validation is large next to the other variants.
    Single(Box<PinnedKey>),
    /// JWKS keys by `kid`; a token without `kid` is accepted only when there is one key.
    Set(HashMap<String, PinnedKey>),
    /// Fail closed: no usable key (the configuration could not be loaded).
    None,
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
            Keys::None => 0,
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

/// Selects the crate's RustCrypto provider once, so a second backend feature turned on
/// elsewhere in the dependency graph cannot make verification panic.
fn install_crypto_provider() {
    let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
        &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER,
    );
}

impl Verifier {
    /// A verifier that rejects every token (used when the key configuration is broken).
    pub fn reject_all() -> Verifier {
        Verifier { keys: Keys::None }
    }

    /// The verifier for `cfg`; `Ok(None)` when auth is disabled and no key is configured.
    pub fn from_config(cfg: &AuthConfig) -> Result<Option<Verifier>, KeyConfigError> {
        match Self::from_keys(cfg)? {
            None if cfg.enabled => Err(KeyConfigError::missing()),
            keys => Ok(keys),
        }
    }

    /// The verifier for the configured key, `Ok(None)` when none is configured (whether auth
    /// is on or not): checks the key material only.
    pub fn from_keys(cfg: &AuthConfig) -> Result<Option<Verifier>, KeyConfigError> {
        install_crypto_provider();
        let secret = cfg.hs256_secret.expose();
        let sources = [
            !secret.is_empty(),
            !cfg.public_key_file.is_empty(),
            !cfg.jwks_file.is_empty(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        if sources > 1 {
            return Err(KeyConfigError::new(
                "auth",
                "configure exactly one of auth.hs256_secret, auth.public_key_file, auth.jwks_file",
            ));
        }
        if !secret.is_empty() {
            if secret.len() < MIN_SECRET_BYTES {
                return Err(KeyConfigError::new(
                    "auth.hs256_secret",
                    format!("must be at least {MIN_SECRET_BYTES} bytes"),
                ));
            }
            let key = DecodingKey::from_secret(secret.as_bytes())
                .map_err(|e| KeyConfigError::new("auth.hs256_secret", e.to_string()))?;
            return Ok(Some(Verifier {
                keys: Keys::Single(Box::new(PinnedKey::new(key, Algorithm::HS256, cfg))),
            }));
        }
        if !cfg.public_key_file.is_empty() {
            let pem = read("auth.public_key_file", &cfg.public_key_file)?;
            let (key, alg) =
                pem_key(&pem).map_err(|why| KeyConfigError::new("auth.public_key_file", why))?;
            return Ok(Some(Verifier {
                keys: Keys::Single(Box::new(PinnedKey::new(key, alg, cfg))),
            }));
        }
        if !cfg.jwks_file.is_empty() {
            let text = read("auth.jwks_file", &cfg.jwks_file)?;
            let set: JwkSet = serde_json::from_slice(&text).map_err(|e| {
                KeyConfigError::new("auth.jwks_file", format!("not a JWKS document: {e}"))
            })?;
            let keys =
                jwks_keys(&set, cfg).map_err(|why| KeyConfigError::new("auth.jwks_file", why))?;
            return Ok(Some(Verifier {
                keys: Keys::Set(keys),
            }));
        }
        Ok(None)
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
            Keys::None => return Err(AuthError::Invalid("no verification key is configured")),
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

fn read(key: &'static str, path: &str) -> Result<Vec<u8>, KeyConfigError> {
    std::fs::read(path).map_err(|e| KeyConfigError::new(key, format!("cannot read {path}: {e}")))
}

/// A PEM public key and the algorithm its type implies.
fn pem_key(pem: &[u8]) -> Result<(DecodingKey, Algorithm), String> {
    let text = std::str::from_utf8(pem).map_err(|_| "not a PEM file".to_owned())?;
    if text.contains("PRIVATE KEY") {
        return Err("holds a private key; configure the public key only".into());
    }
    if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        return Ok((k, Algorithm::RS256));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        // The curve follows from the uncompressed point size: P-256 65 bytes, P-384 97.
        return match k.try_get_as_bytes().map(<[u8]>::len) {
            Ok(65) => Ok((k, Algorithm::ES256)),
            Ok(97) => Ok((k, Algorithm::ES384)),
            _ => Err("unsupported elliptic curve (use P-256 or P-384)".into()),
        };
    }
    if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        return Ok((k, Algorithm::EdDSA));
    }
    Err("not an RSA, EC (P-256/P-384) or Ed25519 public key in PEM form".into())
}

fn jwks_keys(set: &JwkSet, cfg: &AuthConfig) -> Result<HashMap<String, PinnedKey>, String> {
    let mut keys = HashMap::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let implied = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(p) => match p.curve {
                EllipticCurve::P256 => Algorithm::ES256,
                EllipticCurve::P384 => Algorithm::ES384,
                _ => return Err(format!("key {i}: unsupported curve")),
            },
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                Algorithm::EdDSA
            }
            AlgorithmParameters::OctetKey(_) => {
                return Err(format!(
                    "key {i}: symmetric (oct) keys are not accepted from a JWKS; use auth.hs256_secret"
                ));
            }
            _ => return Err(format!("key {i}: unsupported key type")),
        };
        let alg = match jwk.common.key_algorithm {
            None => implied,
            Some(declared) => {
                let alg = signing_alg(declared)
                    .ok_or_else(|| format!("key {i}: alg is not a signature algorithm"))?;
                if alg.family() != implied.family() {
                    return Err(format!("key {i}: alg does not match the key type"));
                }
                alg
            }
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {i}: {e}"))?;
        let kid = jwk.common.key_id.clone().unwrap_or_default();
        if keys.insert(kid, PinnedKey::new(key, alg, cfg)).is_some() {
            return Err(format!("key {i}: duplicate kid"));
        }
    }
    if keys.is_empty() {
        return Err("holds no signature verification keys".into());
    }
    if keys.len() > 1 && keys.contains_key("") {
        return Err("every key needs a kid when there is more than one".into());
    }
    Ok(keys)
}

fn signing_alg(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Bytes of OS randomness in an ephemeral HS256 key (hex-encoded: a 64-character secret).
const EPHEMERAL_KEY_BYTES: usize = 32;

/// A fresh random HS256 secret from the OS random number generator, for `--ephemeral-key`.
pub fn ephemeral_secret() -> Result<crate::config::Secret, getrandom::Error> {
    let mut key = [0u8; EPHEMERAL_KEY_BYTES];
    getrandom::fill(&mut key)?;
    Ok(crate::config::Secret::new(hex::encode(key)))
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
) -> Result<String, KeyConfigError> {
    install_crypto_provider();
    let secret = cfg.hs256_secret.expose();
    if secret.is_empty() {
        return Err(KeyConfigError::new(
            "auth.hs256_secret",
            "no HS256 secret is configured, so no token can be minted \
             (set SHIPSHAPE_AUTH__HS256_SECRET, e.g. file:/path/to/secret; a server started \
             with --ephemeral-key prints its own token at start)",
        ));
    }
    let key = EncodingKey::from_secret(secret.as_bytes())
        .map_err(|e| KeyConfigError::new("auth.hs256_secret", e.to_string()))?;
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
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
        .map_err(|e| KeyConfigError::new("auth.hs256_secret", e.to_string()))
}
