//! Token verification (SPEC §4 Tokens): JWTs signed with HS256 (a configured secret) or
//! RS256/ES256 (configured public keys), with `exp` required and `nbf` checked, then the
//! claims' own rules (`Claims::validate`). Also where a token is found in an upgrade request.
//!
//! Each key is pinned to one algorithm, and a token is only ever checked against keys of the
//! algorithm its header names: `alg: none` names no key, an RS256 token finds no key when
//! only HS256 is configured, and an HS256 token is checked against the HMAC secret alone —
//! never against a public key's bytes (the classic algorithm-confusion attack). A `kid` in
//! the header chooses among several keys of one algorithm.
//!
//! IMPORTANT: jsonwebtoken leaves `nbf` validation off by default; it is turned on here.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use ringbearer_core::error::{ErrorCode, Refusal};
use ringbearer_core::Claims;

/// Longest token accepted (bytes), refused before decoding: room for about 500 short
/// wedding ids. At upgrade the request head limit (`io.max_handshake_bytes`, 8 KiB) bounds
/// it as well; raise both together.
pub const TOKEN_MAX_BYTES: usize = 8192;

/// Most public keys one server verifies with (a token without `kid` may be tried against
/// every key of its algorithm).
pub const PUBLIC_KEYS_MAX: usize = 16;

/// The asymmetric algorithms a public key can be pinned to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlg {
    Rs256,
    Es256,
}

impl KeyAlg {
    fn jwt(self) -> Algorithm {
        match self {
            KeyAlg::Rs256 => Algorithm::RS256,
            KeyAlg::Es256 => Algorithm::ES256,
        }
    }
}

#[derive(Clone)]
struct PublicKey {
    alg: Algorithm,
    kid: Option<String>,
    key: DecodingKey,
}

#[derive(Clone)]
pub struct TokenVerifier {
    hs256: Option<DecodingKey>,
    keys: Vec<PublicKey>,
    leeway_secs: u64,
}

fn validation(alg: Algorithm, leeway_secs: u64) -> Validation {
    let mut validation = Validation::new(alg);
    validation.algorithms = vec![alg];
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.leeway = leeway_secs;
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation
}

impl TokenVerifier {
    /// An HS256 verifier for `secret`, tolerating `leeway_secs` of clock skew.
    pub fn hs256(secret: &[u8], leeway_secs: u64) -> Self {
        TokenVerifier {
            hs256: Some(DecodingKey::from_secret(secret)),
            keys: Vec::new(),
            leeway_secs,
        }
    }

    /// A verifier with no key yet: add public keys with [`TokenVerifier::add_public_key`].
    pub fn public_keys_only(leeway_secs: u64) -> Self {
        TokenVerifier {
            hs256: None,
            keys: Vec::new(),
            leeway_secs,
        }
    }

    /// Adds a public key (PEM: `PUBLIC KEY`, or `RSA PUBLIC KEY` for RS256) pinned to `alg`,
    /// optionally named by `kid`. The error says what is wrong with the PEM.
    pub fn add_public_key(
        &mut self,
        alg: KeyAlg,
        kid: Option<String>,
        pem: &[u8],
    ) -> Result<(), String> {
        if self.keys.len() >= PUBLIC_KEYS_MAX {
            return Err(format!("at most {PUBLIC_KEYS_MAX} public keys"));
        }
        let key = match alg {
            KeyAlg::Rs256 => DecodingKey::from_rsa_pem(pem),
            KeyAlg::Es256 => DecodingKey::from_ec_pem(pem),
        }
        .map_err(|e| format!("not a {alg:?} public key in PEM: {e}"))?;
        if kid.is_some() && self.keys.iter().any(|k| k.kid == kid) {
            return Err(format!("kid {kid:?} is used twice"));
        }
        self.keys.push(PublicKey {
            alg: alg.jwt(),
            kid,
            key,
        });
        Ok(())
    }

    /// The keys a token with this header may be checked against: the HMAC secret for
    /// HS256; for RS256/ES256 the keys of that algorithm whose `kid` equals the token's,
    /// or that have none.
    fn candidates<'a>(&'a self, alg: Algorithm, kid: Option<&str>) -> Vec<&'a DecodingKey> {
        match alg {
            Algorithm::HS256 => self.hs256.iter().collect(),
            Algorithm::RS256 | Algorithm::ES256 => {
                let of_alg = || self.keys.iter().filter(move |k| k.alg == alg);
                let named: Vec<_> = of_alg()
                    .filter(|k| kid.is_some() && k.kid.as_deref() == kid)
                    .map(|k| &k.key)
                    .collect();
                if !named.is_empty() {
                    return named;
                }
                of_alg()
                    .filter(|k| kid.is_none() || k.kid.is_none())
                    .map(|k| &k.key)
                    .collect()
            }
            _ => Vec::new(),
        }
    }

    pub fn verify(&self, token: &str) -> Result<Claims, Refusal> {
        let unauthorized = |m: String| Refusal::new(ErrorCode::Unauthorized, m);
        if token.is_empty() || token.len() > TOKEN_MAX_BYTES {
            return Err(unauthorized("missing or oversized token".into()));
        }
        // `alg: none` and unknown algorithms fail here: jsonwebtoken has no such variant.
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            unauthorized("malformed token, or an algorithm other than HS256/RS256/ES256".into())
        })?;
        let keys = self.candidates(header.alg, header.kid.as_deref());
        if keys.is_empty() {
            return Err(unauthorized(format!(
                "token algorithm {:?}{} not accepted: no key configured for it",
                header.alg,
                header
                    .kid
                    .as_deref()
                    .map(|k| format!(" (kid {:?})", k.escape_default().to_string()))
                    .unwrap_or_default()
            )));
        }
        let validation = validation(header.alg, self.leeway_secs);
        let mut last = None;
        for key in keys {
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => {
                    data.claims.validate()?;
                    return Ok(data.claims);
                }
                Err(e) => {
                    // Another key of the same algorithm may still verify the signature;
                    // anything else is the token's fault whichever key checks it.
                    let signature =
                        matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature);
                    last = Some(e);
                    if !signature {
                        break;
                    }
                }
            }
        }
        let e = last.expect("at least one key was tried");
        use jsonwebtoken::errors::ErrorKind as K;
        let why = match e.kind() {
            K::ExpiredSignature => "token expired".to_string(),
            K::ImmatureSignature => "token not yet valid (nbf)".to_string(),
            K::InvalidSignature => "token signature does not verify".to_string(),
            K::InvalidAlgorithm | K::InvalidAlgorithmName => {
                "token algorithm not accepted".to_string()
            }
            K::MissingRequiredClaim(c) => format!("token lacks the `{c}` claim"),
            _ => format!("invalid token: {e}"),
        };
        Err(unauthorized(why))
    }
}

/// Where the token of an upgrade request was found.
#[derive(Debug, PartialEq, Eq)]
pub struct FoundToken<'a> {
    pub token: &'a str,
    /// The subprotocol to echo back when the token came in `Sec-WebSocket-Protocol`.
    pub echo_protocol: Option<&'a str>,
}

/// Finds the token: `Authorization: Bearer`, then `?token=`, then `Sec-WebSocket-Protocol`
/// (either the only entry, or after `ringbearer.v1`/`bearer`).
pub fn find_token<'a>(
    authorization: Option<&'a str>,
    query: Option<&'a str>,
    protocols: Option<&'a str>,
) -> Option<FoundToken<'a>> {
    if let Some(a) = authorization {
        let a = a.trim();
        if a.len() > 7 && a[..7].eq_ignore_ascii_case("bearer ") {
            return Some(FoundToken {
                token: a[7..].trim(),
                echo_protocol: None,
            });
        }
    }
    if let Some(q) = query {
        for pair in q.split('&') {
            if let Some(v) = pair.strip_prefix("token=") {
                if !v.is_empty() {
                    return Some(FoundToken {
                        token: v,
                        echo_protocol: None,
                    });
                }
            }
        }
    }
    if let Some(p) = protocols {
        let items: Vec<&str> = p
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let marker = items
            .iter()
            .copied()
            .find(|s| *s == "ringbearer.v1" || *s == "bearer");
        let token = items
            .iter()
            .copied()
            .find(|s| *s != "ringbearer.v1" && *s != "bearer");
        if let Some(t) = token {
            return Some(FoundToken {
                token: t,
                echo_protocol: marker,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use ringbearer_core::{Role, Tier};

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn claims(exp: u64, nbf: Option<u64>) -> Claims {
        Claims {
            sub: "u1".into(),
            org: "o1".into(),
            role: Role::Couple,
            tier: Tier::Free,
            weddings: vec!["w-1".into()],
            exp,
            nbf,
        }
    }

    fn mint(c: &Claims, secret: &[u8]) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            c,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[test]
    fn accepts_good_and_refuses_bad_tokens() {
        let v = TokenVerifier::hs256(b"secret", 5);
        let good = claims(now() + 3600, None);
        assert_eq!(v.verify(&mint(&good, b"secret")).unwrap(), good);
        let cases = [
            mint(&claims(now() - 3600, None), b"secret"),
            mint(&claims(now() + 3600, Some(now() + 3600)), b"secret"),
            mint(&good, b"other"),
            "not.a.jwt".to_string(),
            String::new(),
        ];
        for t in cases {
            assert_eq!(
                v.verify(&t).unwrap_err().code,
                ErrorCode::Unauthorized,
                "{t}"
            );
        }
        // alg: none, unsigned.
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let none = format!(
            "{}.{}.",
            b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
            b64.encode(serde_json::to_vec(&good).unwrap())
        );
        assert!(v.verify(&none).is_err());
        // HS384 with the right secret: algorithm pinned, refused.
        let hs384 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &good,
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert!(v.verify(&hs384).is_err());
        // A token without exp.
        let no_exp =
            serde_json::json!({"sub":"u","org":"o","role":"couple","tier":"free","weddings":[]});
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &no_exp,
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert!(v.verify(&t).is_err());
        // `*` for a couple.
        let mut star = good.clone();
        star.weddings = vec!["*".into()];
        assert!(v.verify(&mint(&star, b"secret")).is_err());
    }

    const RS_KEY: &str = include_str!("../../server/tests/fixtures/rs256.key.pem");
    const RS_PUB: &str = include_str!("../../server/tests/fixtures/rs256.pub.pem");
    const RS2_KEY: &str = include_str!("../../server/tests/fixtures/rs256-other.key.pem");
    const RS2_PUB: &str = include_str!("../../server/tests/fixtures/rs256-other.pub.pem");
    const ES_KEY: &str = include_str!("../../server/tests/fixtures/es256.key.pem");
    const ES_PUB: &str = include_str!("../../server/tests/fixtures/es256.pub.pem");

    fn sign(
        alg: Algorithm,
        kid: Option<&str>,
        claims: &impl serde::Serialize,
        key: &str,
    ) -> String {
        let mut h = Header::new(alg);
        h.kid = kid.map(String::from);
        let k = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(key.as_bytes()).unwrap(),
            Algorithm::ES256 => EncodingKey::from_ec_pem(key.as_bytes()).unwrap(),
            _ => EncodingKey::from_secret(key.as_bytes()),
        };
        jsonwebtoken::encode(&h, claims, &k).unwrap()
    }

    fn asymmetric() -> TokenVerifier {
        let mut v = TokenVerifier::public_keys_only(30);
        v.add_public_key(KeyAlg::Rs256, Some("a".into()), RS_PUB.as_bytes())
            .unwrap();
        v.add_public_key(KeyAlg::Rs256, Some("b".into()), RS2_PUB.as_bytes())
            .unwrap();
        v.add_public_key(KeyAlg::Es256, None, ES_PUB.as_bytes())
            .unwrap();
        v
    }

    #[test]
    fn rs256_and_es256_verify_with_their_pinned_keys() {
        let v = asymmetric();
        let good = claims(now() + 3600, Some(now()));
        for t in [
            sign(Algorithm::RS256, Some("a"), &good, RS_KEY),
            sign(Algorithm::RS256, Some("b"), &good, RS2_KEY),
            // No kid: every RS256 key is tried.
            sign(Algorithm::RS256, None, &good, RS2_KEY),
            sign(Algorithm::ES256, None, &good, ES_KEY),
            // A kid no key names falls back to the keys without one.
            sign(Algorithm::ES256, Some("rotated"), &good, ES_KEY),
            // Within the leeway.
            sign(Algorithm::ES256, None, &claims(now() - 10, None), ES_KEY),
        ] {
            let c = v.verify(&t).unwrap();
            assert_eq!((c.sub.as_str(), c.org.as_str()), ("u1", "o1"));
        }
    }

    #[test]
    fn confusion_none_and_bad_times_are_refused() {
        let v = asymmetric();
        let good = claims(now() + 3600, None);
        let refused = |v: &TokenVerifier, t: &str| {
            assert_eq!(
                v.verify(t).unwrap_err().code,
                ErrorCode::Unauthorized,
                "{t}"
            )
        };
        // The kid chooses the key: "a"'s token signed with "b"'s private key fails.
        refused(&v, &sign(Algorithm::RS256, Some("a"), &good, RS2_KEY));
        // Algorithm confusion: HS256 keyed with the public key's PEM, with no HS256
        // secret configured, and with one configured.
        let confused = sign(Algorithm::HS256, None, &good, RS_PUB);
        refused(&v, &confused);
        refused(&TokenVerifier::hs256(b"secret", 5), &confused);
        let mut both = TokenVerifier::hs256(b"secret", 5);
        both.add_public_key(KeyAlg::Rs256, None, RS_PUB.as_bytes())
            .unwrap();
        refused(&both, &confused);
        refused(&both, &sign(Algorithm::HS256, None, &good, ES_PUB));
        // RS256 against an HS256-only server.
        refused(
            &TokenVerifier::hs256(b"secret", 5),
            &sign(Algorithm::RS256, None, &good, RS_KEY),
        );
        // RS384 with a configured RSA key: the algorithm is pinned.
        let rs384 = {
            let k = EncodingKey::from_rsa_pem(RS_KEY.as_bytes()).unwrap();
            jsonwebtoken::encode(&Header::new(Algorithm::RS384), &good, &k).unwrap()
        };
        refused(&v, &rs384);
        // alg: none, unsigned.
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        for alg in ["none", "None", "NONE"] {
            let none = format!(
                "{}.{}.",
                b64.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#)),
                b64.encode(serde_json::to_vec(&good).unwrap())
            );
            refused(&v, &none);
        }
        // Times: expired past the leeway, nbf in the future past it, no exp at all.
        refused(
            &v,
            &sign(Algorithm::ES256, None, &claims(now() - 60, None), ES_KEY),
        );
        refused(
            &v,
            &sign(
                Algorithm::RS256,
                Some("a"),
                &claims(now() + 3600, Some(now() + 60)),
                RS_KEY,
            ),
        );
        let no_exp =
            serde_json::json!({"sub":"u","org":"o","role":"couple","tier":"free","weddings":[]});
        refused(&v, &sign(Algorithm::RS256, Some("a"), &no_exp, RS_KEY));
    }

    #[test]
    fn public_keys_are_checked_against_their_algorithm() {
        let mut v = TokenVerifier::public_keys_only(5);
        assert!(v
            .add_public_key(KeyAlg::Es256, None, RS_PUB.as_bytes())
            .is_err());
        assert!(v
            .add_public_key(KeyAlg::Rs256, None, ES_PUB.as_bytes())
            .is_err());
        assert!(v.add_public_key(KeyAlg::Rs256, None, b"garbage").is_err());
        v.add_public_key(KeyAlg::Rs256, Some("k".into()), RS_PUB.as_bytes())
            .unwrap();
        assert!(v
            .add_public_key(KeyAlg::Es256, Some("k".into()), ES_PUB.as_bytes())
            .unwrap_err()
            .contains("twice"));
    }

    #[test]
    fn finds_tokens_in_each_place() {
        assert_eq!(
            find_token(Some("Bearer abc"), None, None).unwrap().token,
            "abc"
        );
        assert_eq!(
            find_token(None, Some("x=1&token=t.k.n"), None)
                .unwrap()
                .token,
            "t.k.n"
        );
        let f = find_token(None, None, Some("ringbearer.v1, t.k.n")).unwrap();
        assert_eq!((f.token, f.echo_protocol), ("t.k.n", Some("ringbearer.v1")));
        assert_eq!(
            find_token(None, None, Some("t.k.n")).unwrap().echo_protocol,
            None
        );
        assert!(find_token(Some("Basic xyz"), Some("a=b"), None).is_none());
    }
}
