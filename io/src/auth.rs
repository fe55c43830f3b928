//! Token verification (SPEC §4 Tokens): HS256 JWTs with `exp` required and `nbf` checked,
//! the algorithm pinned (so `alg: none` and algorithm confusion fail), then the claims'
//! own rules (`Claims::validate`). Also where a token is found in an upgrade request.
//!
//! IMPORTANT: jsonwebtoken leaves `nbf` validation off by default; it is turned on here.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use ringbearer_core::error::{ErrorCode, Refusal};
use ringbearer_core::Claims;

/// Longest token accepted (bytes), refused before decoding: room for about 500 short
/// wedding ids. At upgrade the request head limit (`io.max_handshake_bytes`, 8 KiB) bounds
/// it as well; raise both together.
pub const TOKEN_MAX_BYTES: usize = 8192;

#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl TokenVerifier {
    /// An HS256 verifier for `secret`, tolerating `leeway_secs` of clock skew.
    pub fn hs256(secret: &[u8], leeway_secs: u64) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = leeway_secs;
        validation.set_required_spec_claims(&["exp", "sub"]);
        TokenVerifier {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    pub fn verify(&self, token: &str) -> Result<Claims, Refusal> {
        let unauthorized = |m: String| Refusal::new(ErrorCode::Unauthorized, m);
        if token.is_empty() || token.len() > TOKEN_MAX_BYTES {
            return Err(unauthorized("missing or oversized token".into()));
        }
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
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
                unauthorized(why)
            })?;
        data.claims.validate()?;
        Ok(data.claims)
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
