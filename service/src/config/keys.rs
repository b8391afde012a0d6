//! Token verification keys, loaded once at start: an HS256 secret, a PEM public key or a JWKS,
//! each pinned to the one algorithm it verifies.
//!
//! The algorithm always comes from the key (its type, or the JWK's `alg`), never from a token's
//! header, so `auth` can reject a token that names another one (no `alg: none`, no HS256 signed
//! with an RSA public key).

use std::{collections::HashMap, fmt};

use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm, PublicKeyUse},
};

use super::{AuthConfig, Secret};

/// Shortest accepted HS256 secret (RFC 7518 section 3.2: at least the hash output size).
pub const MIN_SECRET_BYTES: usize = 32;

/// A verification key and the single algorithm it verifies.
#[derive(Clone)]
pub struct PinnedKey {
    pub key: DecodingKey,
    pub algorithm: Algorithm,
}

/// The configured verification key(s).
#[derive(Clone)]
pub enum VerificationKeys {
    /// `auth.hs256_secret` or `auth.public_key_file`.
    Single(Box<PinnedKey>),
    /// `auth.jwks_file`, by `kid` (`""` for the one key of a set without key ids).
    Set(HashMap<String, PinnedKey>),
}

impl fmt::Debug for VerificationKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerificationKeys::Single(k) => write!(f, "Single({:?})", k.algorithm),
            VerificationKeys::Set(m) => write!(f, "Set({} keys)", m.len()),
        }
    }
}

/// A key that cannot be used, with the config key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{why}")]
pub struct KeyError {
    /// `auth` when it is about the section as a whole.
    pub key: &'static str,
    pub why: String,
}

impl KeyError {
    fn new(key: &'static str, why: impl Into<String>) -> Self {
        Self {
            key,
            why: why.into(),
        }
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

/// Selects jsonwebtoken's RustCrypto provider once, so a second backend feature turned on
/// elsewhere in the dependency graph cannot make key loading or verification panic.
pub fn install_crypto_provider() {
    let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
        &jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER,
    );
}

/// Loads the key `cfg` configures; `Ok(None)` when none is (whether auth is on or not).
pub fn load(cfg: &AuthConfig) -> Result<Option<VerificationKeys>, KeyError> {
    install_crypto_provider();
    let secret = cfg.hs256_secret.expose();
    let configured = [
        !secret.is_empty(),
        !cfg.public_key_file.is_empty(),
        !cfg.jwks_file.is_empty(),
    ];
    if configured.iter().filter(|s| **s).count() > 1 {
        return Err(KeyError::new(
            "auth",
            "configure exactly one of auth.hs256_secret, auth.public_key_file, auth.jwks_file",
        ));
    }
    if !secret.is_empty() {
        return hs256(&cfg.hs256_secret).map(Some);
    }
    if !cfg.public_key_file.is_empty() {
        let pem = read("auth.public_key_file", &cfg.public_key_file)?;
        let (key, algorithm) =
            pem_key(&pem).map_err(|why| KeyError::new("auth.public_key_file", why))?;
        return Ok(Some(VerificationKeys::Single(Box::new(PinnedKey {
            key,
            algorithm,
        }))));
    }
    if !cfg.jwks_file.is_empty() {
        let text = read("auth.jwks_file", &cfg.jwks_file)?;
        let set: JwkSet = serde_json::from_slice(&text)
            .map_err(|e| KeyError::new("auth.jwks_file", format!("not a JWKS document: {e}")))?;
        let keys = jwks_keys(&set).map_err(|why| KeyError::new("auth.jwks_file", why))?;
        return Ok(Some(VerificationKeys::Set(keys)));
    }
    Ok(None)
}

/// The HS256 key of `secret` (at least [`MIN_SECRET_BYTES`]).
pub fn hs256(secret: &Secret) -> Result<VerificationKeys, KeyError> {
    if secret.expose().len() < MIN_SECRET_BYTES {
        return Err(KeyError::new(
            "auth.hs256_secret",
            format!("must be at least {MIN_SECRET_BYTES} bytes"),
        ));
    }
    let key = DecodingKey::from_secret(secret.expose().as_bytes())
        .map_err(|e| KeyError::new("auth.hs256_secret", e.to_string()))?;
    Ok(VerificationKeys::Single(Box::new(PinnedKey {
        key,
        algorithm: Algorithm::HS256,
    })))
}

/// Bytes of OS randomness in an ephemeral HS256 key (hex-encoded: a 64-character secret).
const EPHEMERAL_KEY_BYTES: usize = 32;

/// A fresh random HS256 secret from the OS random number generator, for `--ephemeral-key`.
pub fn ephemeral_secret() -> Result<Secret, getrandom::Error> {
    let mut key = [0u8; EPHEMERAL_KEY_BYTES];
    getrandom::fill(&mut key)?;
    Ok(Secret::new(hex::encode(key)))
}

fn read(key: &'static str, path: &str) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|e| KeyError::new(key, format!("cannot read {path}: {e}")))
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

fn jwks_keys(set: &JwkSet) -> Result<HashMap<String, PinnedKey>, String> {
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
        let algorithm = match jwk.common.key_algorithm {
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
        if keys.insert(kid, PinnedKey { key, algorithm }).is_some() {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn auth(f: impl FnOnce(&mut AuthConfig)) -> AuthConfig {
        let mut cfg = AuthConfig::default();
        f(&mut cfg);
        cfg
    }

    fn algorithm(keys: Option<VerificationKeys>) -> Algorithm {
        match keys {
            Some(VerificationKeys::Single(k)) => k.algorithm,
            other => panic!("expected one key, got {other:?}"),
        }
    }

    fn err(cfg: &AuthConfig) -> KeyError {
        load(cfg).map(|_| ()).unwrap_err()
    }

    #[test]
    fn no_key_configured_is_none() {
        assert!(load(&AuthConfig::default()).unwrap().is_none());
    }

    #[test]
    fn keys_show_their_algorithm_never_their_material() {
        let cfg = auth(|a| a.hs256_secret = Secret::new("k".repeat(32)));
        assert_eq!(
            format!("{:?}", load(&cfg).unwrap().unwrap()),
            "Single(HS256)"
        );
        let e = KeyError::missing();
        assert_eq!(e.key, "auth");
        assert!(e.to_string().contains("--ephemeral-key"));
    }

    #[test]
    fn hs256_secrets_need_32_bytes() {
        let short = auth(|a| a.hs256_secret = Secret::new("short"));
        assert_eq!(err(&short).key, "auth.hs256_secret");
        assert!(err(&short).why.contains("at least 32 bytes"));
        let ok = auth(|a| a.hs256_secret = Secret::new("k".repeat(32)));
        assert_eq!(algorithm(load(&ok).unwrap()), Algorithm::HS256);
    }

    #[test]
    fn pem_keys_pin_the_algorithm_of_their_type() {
        for (file, alg) in [
            ("rsa-public.pem", Algorithm::RS256),
            ("ec-public.pem", Algorithm::ES256),
            ("ed-public.pem", Algorithm::EdDSA),
        ] {
            let cfg = auth(|a| a.public_key_file = fixture(file));
            assert_eq!(algorithm(load(&cfg).unwrap()), alg, "{file}");
        }
        let private = auth(|a| a.public_key_file = fixture("rsa-private.pem"));
        assert!(err(&private).why.contains("private key"));
        let missing = auth(|a| a.public_key_file = "/nonexistent.pem".into());
        assert_eq!(err(&missing).key, "auth.public_key_file");
        assert!(
            err(&missing)
                .why
                .starts_with("cannot read /nonexistent.pem")
        );
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(
            &junk,
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        let cfg = auth(|a| a.public_key_file = junk.display().to_string());
        assert!(err(&cfg).why.starts_with("not an RSA, EC"));
        std::fs::write(&junk, [0xff, 0xfe]).unwrap();
        assert_eq!(err(&cfg).why, "not a PEM file");
    }

    #[test]
    fn exactly_one_key_source() {
        let both = auth(|a| {
            a.hs256_secret = Secret::new("k".repeat(32));
            a.jwks_file = "/x.json".into();
        });
        assert_eq!(err(&both).key, "auth");
    }

    fn jwks(doc: serde_json::Value) -> Result<Option<VerificationKeys>, KeyError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, doc.to_string()).unwrap();
        load(&auth(|a| a.jwks_file = path.display().to_string()))
    }

    const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    #[test]
    fn jwks_keys_are_checked_one_by_one() {
        let ed = |kid: Option<&str>, alg: Option<&str>| {
            let mut k = serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": ED_X});
            if let Some(kid) = kid {
                k["kid"] = kid.into();
            }
            if let Some(alg) = alg {
                k["alg"] = alg.into();
            }
            k
        };
        let set =
            jwks(serde_json::json!({"keys": [ed(Some("a"), None), ed(Some("b"), Some("EdDSA"))]}));
        match set.unwrap() {
            Some(VerificationKeys::Set(keys)) => {
                assert_eq!(keys.len(), 2);
                assert_eq!(keys["b"].algorithm, Algorithm::EdDSA);
            }
            other => panic!("{other:?}"),
        }
        for (doc, why) in [
            (
                serde_json::json!({"keys": []}),
                "holds no signature verification keys",
            ),
            (
                serde_json::json!({"keys": [ed(None, None), ed(Some("b"), None)]}),
                "every key needs a kid",
            ),
            (
                serde_json::json!({"keys": [ed(Some("a"), None), ed(Some("a"), None)]}),
                "key 1: duplicate kid",
            ),
            (
                serde_json::json!({"keys": [ed(Some("a"), Some("RS256"))]}),
                "key 0: alg does not match the key type",
            ),
            (
                serde_json::json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}),
                "symmetric (oct) keys are not accepted",
            ),
            (serde_json::json!({"not": "a jwks"}), "not a JWKS document"),
        ] {
            let e = jwks(doc).map(|_| ()).unwrap_err();
            assert_eq!(e.key, "auth.jwks_file");
            assert!(e.why.contains(why), "{why}: {}", e.why);
        }
        // Encryption keys are skipped, not used for verification.
        let enc = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": ED_X, "use": "enc"}]});
        assert!(
            jwks(enc)
                .map(|_| ())
                .unwrap_err()
                .why
                .contains("no signature")
        );
    }

    #[test]
    fn ephemeral_secrets_are_fresh_and_long_enough() {
        let (a, b) = (ephemeral_secret().unwrap(), ephemeral_secret().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 64);
        assert!(hs256(&a).is_ok());
    }
}
