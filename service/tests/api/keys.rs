//! Public-key verification: RS256/ES256/EdDSA PEM keys accept their own algorithm only, and a
//! JWKS picks the key by `kid`.

use jsonwebtoken::{Algorithm, jwk::Jwk};
use serde_json::json;

use crate::helpers::{
    Backend, TestApp, assert_401, call, fixture,
    jwt::{alg_none_token, bearer, claims, hs, pem_key, sign},
    token,
};

/// Tokens signed with each asymmetric key type are verified with the configured public key,
/// and a token signed with any other key, or claiming another algorithm, is not.
#[tokio::test]
async fn public_key_configs_verify_their_algorithm_only() {
    for (alg, private, public) in [
        (Algorithm::RS256, "rsa-private.pem", "rsa-public.pem"),
        (Algorithm::ES256, "ec-private.pem", "ec-public.pem"),
        (Algorithm::EdDSA, "ed-private.pem", "ed-public.pem"),
    ] {
        let public_file = fixture(public);
        let app = TestApp::spawn_with(Backend::Sqlite, |c| {
            c.auth.enabled = true;
            c.auth.public_key_file = public_file.clone();
        })
        .await;
        let good = sign(
            alg,
            &pem_key(alg, private),
            None,
            &claims("svc", "items:read"),
        );
        let r = call(&app, "GET", "/v1/items", Some(&bearer(&good))).await;
        assert_eq!(r.status(), 200, "{alg:?}");

        let public_pem = std::fs::read_to_string(&public_file).unwrap();
        let wrong_key = if alg == Algorithm::RS256 {
            sign(
                alg,
                &pem_key(alg, "rsa2-private.pem"),
                None,
                &claims("svc", "items:read"),
            )
        } else {
            sign(
                Algorithm::RS256,
                &pem_key(Algorithm::RS256, "rsa-private.pem"),
                None,
                &claims("svc", "items:read"),
            )
        };
        for (what, t) in [
            (
                "HS256 keyed with the public key (confusion)",
                sign(
                    Algorithm::HS256,
                    &hs(&public_pem),
                    None,
                    &claims("svc", "items:read"),
                ),
            ),
            ("HS256 with the test secret", token("svc", &["items:read"])),
            ("wrong key", wrong_key),
            ("alg none", alg_none_token(&claims("svc", "items:read"))),
        ] {
            let r = call(&app, "GET", "/v1/items", Some(&bearer(&t))).await;
            assert_401(r, false, &format!("{alg:?}: {what}")).await;
        }
    }
}

#[tokio::test]
async fn jwks_selects_the_key_by_kid() {
    let dir = tempfile::tempdir().unwrap();
    let k1 = pem_key(Algorithm::RS256, "rsa-private.pem");
    let k2 = pem_key(Algorithm::RS256, "rsa2-private.pem");
    let k3 = pem_key(Algorithm::ES256, "ec-private.pem");
    let mut keys = Vec::new();
    for (kid, key, alg) in [
        ("k1", &k1, Algorithm::RS256),
        ("k2", &k2, Algorithm::RS256),
        ("k3", &k3, Algorithm::ES256),
    ] {
        let mut jwk = Jwk::from_encoding_key(key, alg).expect("jwk");
        jwk.common.key_id = Some(kid.into());
        keys.push(serde_json::to_value(&jwk).unwrap());
    }
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": keys}).to_string()).unwrap();
    let text = std::fs::read_to_string(&jwks).unwrap();
    assert!(!text.contains("\"d\""), "the JWKS holds public keys only");
    let path = jwks.display().to_string();
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.auth.enabled = true;
        c.auth.jwks_file = path;
    })
    .await;
    let c = claims("svc", "items:read");
    for (kid, key, alg) in [
        ("k1", &k1, Algorithm::RS256),
        ("k2", &k2, Algorithm::RS256),
        ("k3", &k3, Algorithm::ES256),
    ] {
        let r = call(
            &app,
            "GET",
            "/v1/items",
            Some(&bearer(&sign(alg, key, Some(kid), &c))),
        )
        .await;
        assert_eq!(r.status(), 200, "{kid}");
    }
    for (what, t) in [
        (
            "kid of another key",
            sign(Algorithm::RS256, &k2, Some("k1"), &c),
        ),
        ("unknown kid", sign(Algorithm::RS256, &k1, Some("k9"), &c)),
        (
            "no kid with several keys",
            sign(Algorithm::RS256, &k1, None, &c),
        ),
        (
            "EC kid with an RSA signature",
            sign(Algorithm::RS256, &k1, Some("k3"), &c),
        ),
        (
            "RSA kid, HS256 keyed with garbage",
            sign(Algorithm::HS256, &hs("k1"), Some("k1"), &c),
        ),
    ] {
        let r = call(&app, "GET", "/v1/items", Some(&bearer(&t))).await;
        assert_401(r, false, what).await;
    }
}
