// Rule test for the rust-jwt-* rules (semgrep --test).
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};

fn bad(token: &str, key: &DecodingKey) -> Result<Claims, AuthError> {
    let mut v = Validation::new(Algorithm::HS256);
    // ruleid: rust-jwt-insecure-decode
    v.insecure_disable_signature_validation();
    // ruleid: rust-jwt-insecure-decode
    let data = jsonwebtoken::dangerous::insecure_decode::<Claims>(token)?;
    // ruleid: rust-jwt-insecure-decode
    let claims: Claims = jsonwebtoken::dangerous::insecure_decode_claims(token)?;
    // ruleid: rust-jwt-validation-weakened
    v.validate_exp = false;
    // ruleid: rust-jwt-validation-weakened
    v.validate_aud = false;
    // ruleid: rust-jwt-validation-weakened
    v.required_spec_claims.clear();
    let header = decode_header(token)?;
    // ruleid: rust-jwt-algorithm-from-token
    let v2 = Validation::new(header.alg);
    Ok(decode::<Claims>(token, key, &v2)?.claims)
}

fn good(token: &str, keys: &Keys, cfg: &AuthConfig) -> Result<Claims, AuthError> {
    // ok: rust-jwt-insecure-decode
    let header = decode_header(token)?;
    let key = keys.by_kid(header.kid.as_deref())?;
    // ok: rust-jwt-algorithm-from-token
    let mut v = Validation::new(key.algorithm);
    if header.alg != key.algorithm {
        return Err(AuthError::InvalidToken);
    }
    // ok: rust-jwt-validation-weakened
    v.validate_exp = true;
    // ok: rust-jwt-validation-weakened
    v.leeway = 30;
    v.set_audience(&cfg.audience);
    v.set_issuer(&cfg.issuer);
    Ok(decode::<Claims>(token, &key.decoding, &v)?.claims)
}
