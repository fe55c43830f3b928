//! RS256 and ES256 tokens over a real socket (SPEC §4 Tokens): a server configured with
//! public keys accepts tokens signed by their private keys (one minted by the real
//! `ringbearer token --key`), and refuses at the upgrade, with 401 `WS_UNAUTHORIZED`,
//! algorithm confusion (HS256 keyed with the public key's PEM), `alg: none`, a token
//! signed by another key, an expired one and one without `exp`.

mod common;

use base64::Engine;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn keys_config() -> String {
    format!(
        "[[auth.public_keys]]\nalg = \"RS256\"\nkid = \"rs-1\"\nfile = {:?}\n\n[[auth.public_keys]]\nalg = \"ES256\"\nfile = {:?}\n",
        fixture("rs256.pub.pem"),
        fixture("es256.pub.pem")
    )
}

fn claims(sub: &str, role: &str, exp: u64) -> Value {
    json!({"sub": sub, "org": "org-k", "role": role, "tier": "professional",
           "weddings": ["w-k"], "exp": exp, "nbf": now_s() - 1})
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: EncodingKey) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(String::from);
    jsonwebtoken::encode(&h, claims, &key).unwrap()
}

fn pem(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

/// The upgrade is refused with `status` and the SPEC error body with `code`.
async fn refused(s: &TestServer, token: &str, status: u16, code: &str) {
    match Raw::connect(&s.url(), token).await {
        Err(tungstenite::Error::Http(r)) => {
            assert_eq!(r.status().as_u16(), status);
            let body: Value = serde_json::from_slice(r.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["success"], false);
            assert_eq!(body["error"]["code"], code, "{body}");
        }
        Err(e) => panic!("expected HTTP {status}, got {e}"),
        Ok(_) => panic!("token accepted: {token}"),
    }
}

#[tokio::test]
async fn rs256_and_es256_tokens_connect_and_talk() {
    let s = TestServer::start(&keys_config());
    // RS256, minted by the CLI with the private key and the key's kid.
    let rs = cli(&[
        "token",
        "--key",
        &fixture("rs256.key.pem"),
        "--alg",
        "RS256",
        "--kid",
        "rs-1",
        "--sub",
        "coord",
        "--org",
        "org-k",
        "--role",
        "coordinator",
        "--tier",
        "professional",
        "--weddings",
        "w-k",
    ]);
    let es = sign(
        Algorithm::ES256,
        None,
        &claims("photo", "photographer", now_s() + 600),
        EncodingKey::from_ec_pem(&pem("es256.key.pem")).unwrap(),
    );
    let mut a = s.connect(rs.trim()).await;
    let mut b = s.connect(&es).await;
    assert_eq!(
        a.create("wedding:main:w-k", Some("w-k")).await["op"],
        "created"
    );
    for c in [&mut a, &mut b] {
        let r = c.subscribe("wedding:main:w-k").await;
        assert_eq!(r["op"], "subscribed", "{r}");
    }
    let p = b.publish("wedding:main:w-k", json!({"n": 1})).await;
    assert_eq!(p["op"], "published", "{p}");
    let m = a.messages("wedding:main:w-k", 1).await;
    assert_eq!(m[0]["sender"]["user_id"], "photo", "{}", m[0]);
}

#[tokio::test]
async fn confused_unsigned_foreign_and_stale_tokens_are_refused() {
    let s = TestServer::start(&keys_config());
    let good = claims("u", "couple", now_s() + 600);
    // Algorithm confusion: HS256 with the RSA public key's PEM as the HMAC secret (no
    // HS256 secret is configured here, so nothing may verify it).
    let confused = sign(
        Algorithm::HS256,
        Some("rs-1"),
        &good,
        EncodingKey::from_secret(&pem("rs256.pub.pem")),
    );
    refused(&s, &confused, 401, "WS_UNAUTHORIZED").await;
    // alg: none.
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(good.to_string())
    );
    refused(&s, &none, 401, "WS_UNAUTHORIZED").await;
    // Signed by a key the server does not have, under the configured kid.
    let foreign = sign(
        Algorithm::RS256,
        Some("rs-1"),
        &good,
        EncodingKey::from_rsa_pem(&pem("rs256-other.key.pem")).unwrap(),
    );
    refused(&s, &foreign, 401, "WS_UNAUTHORIZED").await;
    // Expired (past the 5 s leeway) and without `exp`.
    let es = || EncodingKey::from_ec_pem(&pem("es256.key.pem")).unwrap();
    let expired = sign(
        Algorithm::ES256,
        None,
        &claims("u", "couple", now_s() - 60),
        es(),
    );
    refused(&s, &expired, 401, "WS_UNAUTHORIZED").await;
    let mut no_exp = good.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    refused(
        &s,
        &sign(Algorithm::ES256, None, &no_exp, es()),
        401,
        "WS_UNAUTHORIZED",
    )
    .await;
    // nbf in the future, past the leeway.
    let mut early = good.clone();
    early["nbf"] = json!(now_s() + 120);
    refused(
        &s,
        &sign(Algorithm::ES256, None, &early, es()),
        401,
        "WS_UNAUTHORIZED",
    )
    .await;
    // The same key and claims do connect: the refusals above are the tokens' own.
    let ok = sign(Algorithm::ES256, None, &good, es());
    let mut c = s.connect(&ok).await;
    assert_eq!(c.request(json!({"op": "ping"})).await["op"], "pong");
}
