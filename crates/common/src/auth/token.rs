//! Issuing and verifying JWTs through the `jsonwebtoken` crate.
//!
//! One algorithm and one key id are configured ([`TokenKeys`]); a token
//! naming any other `alg` (`none`, HS for an RS key, ...) or `kid` is
//! refused before its signature is looked at, which closes the classic
//! algorithm-confusion holes. `iss`, `aud`, `exp`, `nbf`, `iat`, `jti` and
//! `sub` are required; `exp` and `nbf` are checked with a small leeway for
//! clock skew, and an `iat` in the future is refused too. An access token
//! and a refresh token cannot stand in for each other (`use`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// What a token is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenUse {
    /// Presented on every API call; short-lived.
    Access,
    /// Exchanged, once, for a new pair at `POST /api/v1/auth/refresh`.
    Refresh,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: String,
    /// The username at sign-in, for display (chat messages, mentions).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub iat: u64,
    pub nbf: u64,
    pub exp: u64,
    /// This token's id: what revocation names.
    pub jti: String,
    #[serde(rename = "use")]
    pub token_use: TokenUse,
    /// The refresh family a token belongs to (every token issued since
    /// one sign-in); revoking it ends them all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fam: Option<String>,
}

impl Claims {
    /// The user id, when `sub` is one.
    pub fn user_id(&self) -> Option<u64> {
        self.sub.parse().ok()
    }

    /// When the token stops being valid.
    pub fn expires_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.exp)
    }
}

/// Why a token was refused. Clients get one answer for all of them (a
/// 401 saying the token is invalid); the variants are for logs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's algorithm is not accepted")]
    Algorithm,
    #[error("the token's key id is unknown")]
    UnknownKey,
    #[error("the token's signature is invalid")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token was issued by someone else")]
    Issuer,
    #[error("the token is meant for someone else")]
    Audience,
    #[error("the token lacks a required claim")]
    MissingClaim,
    #[error("the token is not meant for this use")]
    WrongUse,
    #[error("the token has been revoked")]
    Revoked,
    #[error("the signing key cannot sign: {0}")]
    Key(String),
}

impl From<jsonwebtoken::errors::Error> for TokenError {
    fn from(error: jsonwebtoken::errors::Error) -> Self {
        match error.kind() {
            ErrorKind::InvalidSignature => Self::Signature,
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidIssuer => Self::Issuer,
            ErrorKind::InvalidAudience => Self::Audience,
            ErrorKind::MissingRequiredClaim(_) => Self::MissingClaim,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => Self::Algorithm,
            ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::RsaFailedSigning
            | ErrorKind::Signing(_)
            | ErrorKind::InvalidKeyFormat => Self::Key(error.to_string()),
            _ => Self::Malformed,
        }
    }
}

/// The one key tokens are signed with (a verifier holds only the public
/// half of an asymmetric one) and its id.
#[derive(Clone)]
pub struct TokenKeys {
    pub(crate) kid: String,
    pub(crate) algorithm: Algorithm,
    pub(crate) encoding: Option<EncodingKey>,
    pub(crate) decoding: DecodingKey,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("can_sign", &self.encoding.is_some())
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// HS256 with a shared secret: signs and verifies.
    pub fn hs256(kid: &str, secret: &[u8]) -> Result<Self, TokenError> {
        Ok(Self {
            kid: kid.to_owned(),
            algorithm: Algorithm::HS256,
            encoding: Some(EncodingKey::from_secret(secret)),
            decoding: DecodingKey::from_secret(secret),
        })
    }

    /// EdDSA (Ed25519) or RS256 from PEM: a private key to sign (issuers
    /// only) and the public key to verify.
    pub fn asymmetric(
        kid: &str,
        algorithm: Algorithm,
        private_pem: Option<&[u8]>,
        public_pem: &[u8],
    ) -> Result<Self, TokenError> {
        let (encoding, decoding) = match algorithm {
            Algorithm::EdDSA => (
                private_pem.map(EncodingKey::from_ed_pem).transpose()?,
                DecodingKey::from_ed_pem(public_pem)?,
            ),
            Algorithm::RS256 => (
                private_pem.map(EncodingKey::from_rsa_pem).transpose()?,
                DecodingKey::from_rsa_pem(public_pem)?,
            ),
            other => return Err(TokenError::Key(format!("{other:?} is not offered"))),
        };
        Ok(Self {
            kid: kid.to_owned(),
            algorithm,
            encoding,
            decoding,
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }
}

/// Who issues tokens, for whom, for how long, and how much clock skew is
/// forgiven.
#[derive(Clone, Debug)]
pub struct TokenPolicy {
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub leeway: Duration,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        Self {
            issuer: "platform".into(),
            audience: "platform-api".into(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(14 * 24 * 3600),
            leeway: Duration::from_secs(10),
        }
    }
}

/// A token just made, with its claims.
#[derive(Clone, Debug)]
pub struct Issued {
    pub token: String,
    pub claims: Claims,
}

/// Signs (when it holds a signing key) and verifies tokens.
#[derive(Debug)]
pub struct TokenSigner {
    keys: TokenKeys,
    policy: TokenPolicy,
    validation: Validation,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The key id when none is configured (`JWT_KEY_ID`).
pub const DEFAULT_KEY_ID: &str = "primary";

impl TokenSigner {
    /// HS256 with `secret` under [`DEFAULT_KEY_ID`]: what a service gets
    /// from the default settings with `JWT_SECRET` set.
    pub fn hs256(secret: &[u8], policy: TokenPolicy) -> Result<Self, TokenError> {
        Self::new(TokenKeys::hs256(DEFAULT_KEY_ID, secret)?, policy)
    }

    /// Fails when the keys cannot sign what they are meant to (a public
    /// key of the wrong kind), so a bad key stops the start.
    pub fn new(keys: TokenKeys, policy: TokenPolicy) -> Result<Self, TokenError> {
        let mut validation = Validation::new(keys.algorithm);
        validation.set_issuer(&[&policy.issuer]);
        validation.set_audience(&[&policy.audience]);
        validation.set_required_spec_claims(&["iss", "aud", "sub", "exp", "nbf", "iat", "jti"]);
        validation.validate_nbf = true;
        validation.leeway = policy.leeway.as_secs();
        let signer = Self {
            keys,
            policy,
            validation,
        };
        if signer.keys.encoding.is_some() {
            let probe = signer.issue(0, "", TokenUse::Access, None)?;
            signer.verify_as(&probe.token, TokenUse::Access)?;
        }
        Ok(signer)
    }

    pub fn keys(&self) -> &TokenKeys {
        &self.keys
    }

    pub fn policy(&self) -> &TokenPolicy {
        &self.policy
    }

    /// The access token lifetime.
    pub fn ttl(&self) -> Duration {
        self.policy.access_ttl
    }

    /// A token of `token_use` for `user_id` (called `name`), valid from now
    /// for that use's lifetime.
    pub fn issue(
        &self,
        user_id: u64,
        name: &str,
        token_use: TokenUse,
        family: Option<&str>,
    ) -> Result<Issued, TokenError> {
        self.issue_at(user_id, name, token_use, family, now_secs())
    }

    pub fn issue_at(
        &self,
        user_id: u64,
        name: &str,
        token_use: TokenUse,
        family: Option<&str>,
        issued_at: u64,
    ) -> Result<Issued, TokenError> {
        let key = self
            .keys
            .encoding
            .as_ref()
            .ok_or_else(|| TokenError::Key("this service only verifies tokens".into()))?;
        let ttl = match token_use {
            TokenUse::Access => self.policy.access_ttl,
            TokenUse::Refresh => self.policy.refresh_ttl,
        };
        let claims = Claims {
            iss: self.policy.issuer.clone(),
            aud: self.policy.audience.clone(),
            sub: user_id.to_string(),
            name: name.to_owned(),
            iat: issued_at,
            nbf: issued_at,
            exp: issued_at + ttl.as_secs(),
            jti: uuid::Uuid::new_v4().simple().to_string(),
            token_use,
            fam: family.map(str::to_owned),
        };
        let mut header = Header::new(self.keys.algorithm);
        header.kid = Some(self.keys.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, key)?;
        Ok(Issued { token, claims })
    }

    /// The claims of a valid access token.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        self.verify_as(token, TokenUse::Access)
    }

    /// The claims of a valid token of `token_use`.
    pub fn verify_as(&self, token: &str, token_use: TokenUse) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != self.keys.algorithm {
            return Err(TokenError::Algorithm);
        }
        if header.kid.as_deref() != Some(self.keys.kid.as_str()) {
            return Err(TokenError::UnknownKey);
        }
        let claims =
            jsonwebtoken::decode::<Claims>(token, &self.keys.decoding, &self.validation)?.claims;
        if claims.iat > now_secs() + self.policy.leeway.as_secs() {
            return Err(TokenError::NotYetValid);
        }
        if claims.token_use != token_use {
            return Err(TokenError::WrongUse);
        }
        Ok(claims)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::tests_keys::{ED_PRIVATE, ED_PUBLIC, RSA_PRIVATE, RSA_PUBLIC};
    use super::*;

    const KEY: &[u8] = b"a test key of reasonable length!";

    fn signer() -> TokenSigner {
        TokenSigner::new(TokenKeys::hs256("k1", KEY).unwrap(), TokenPolicy::default()).unwrap()
    }

    fn access(signer: &TokenSigner) -> String {
        signer
            .issue(42, "alice", TokenUse::Access, None)
            .unwrap()
            .token
    }

    /// A token with `header` and `claims` as JSON, signed with `KEY`.
    fn forge(header: &str, claims: &serde_json::Value) -> String {
        use hmac::{Hmac, Mac};
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(KEY).unwrap();
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }

    fn claims_json(overrides: serde_json::Value) -> serde_json::Value {
        let now = now_secs();
        let mut claims = serde_json::json!({
            "iss": "platform", "aud": "platform-api", "sub": "42",
            "iat": now, "nbf": now, "exp": now + 600, "jti": "j", "use": "access",
        });
        for (k, v) in overrides.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        claims
    }

    const HS_K1: &str = r#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#;

    #[test]
    fn issued_tokens_verify_with_every_claim() {
        let issued = signer().issue(42, "alice", TokenUse::Access, None).unwrap();
        let claims = signer().verify(&issued.token).unwrap();
        assert_eq!(claims, issued.claims);
        assert_eq!(claims.user_id(), Some(42));
        assert_eq!(claims.exp - claims.iat, 900);
        assert_eq!(
            (claims.iss.as_str(), claims.aud.as_str()),
            ("platform", "platform-api")
        );
        assert_eq!(claims.jti.len(), 32);
        let header = jsonwebtoken::decode_header(&issued.token).unwrap();
        assert_eq!(header.kid.as_deref(), Some("k1"));
        let again = signer().issue(42, "alice", TokenUse::Access, None).unwrap();
        assert_ne!(again.claims.jti, claims.jti, "every token has its own id");
    }

    #[test]
    fn a_forged_token_with_our_claims_verifies_so_the_forgeries_below_test_one_thing() {
        assert!(
            signer()
                .verify(&forge(HS_K1, &claims_json(serde_json::json!({}))))
                .is_ok()
        );
    }

    #[test]
    fn wrong_issuer_audience_or_use_is_refused() {
        let cases = [
            (
                serde_json::json!({"iss": "someone-else"}),
                TokenError::Issuer,
            ),
            (
                serde_json::json!({"aud": "another-api"}),
                TokenError::Audience,
            ),
            (serde_json::json!({"use": "refresh"}), TokenError::WrongUse),
            // Claims that cannot be read without every required field.
            (serde_json::json!({"jti": null}), TokenError::Malformed),
            (serde_json::json!({"aud": null}), TokenError::Malformed),
            (serde_json::json!({"nbf": null}), TokenError::Malformed),
            (serde_json::json!({"exp": null}), TokenError::Malformed),
        ];
        for (overrides, expected) in cases {
            let token = forge(HS_K1, &claims_json(overrides.clone()));
            assert_eq!(signer().verify(&token), Err(expected), "{overrides}");
        }
    }

    #[test]
    fn time_claims_are_checked_with_a_small_leeway() {
        let now = now_secs();
        let future_nbf = forge(HS_K1, &claims_json(serde_json::json!({"nbf": now + 120})));
        assert_eq!(signer().verify(&future_nbf), Err(TokenError::NotYetValid));
        let future_iat = forge(HS_K1, &claims_json(serde_json::json!({"iat": now + 120})));
        assert_eq!(signer().verify(&future_iat), Err(TokenError::NotYetValid));
        let skewed = forge(
            HS_K1,
            &claims_json(serde_json::json!({"nbf": now + 3, "iat": now + 3})),
        );
        assert!(
            signer().verify(&skewed).is_ok(),
            "a few seconds of skew are forgiven"
        );
        let expired = signer()
            .issue_at(42, "alice", TokenUse::Access, None, now - 1000)
            .unwrap();
        assert_eq!(signer().verify(&expired.token), Err(TokenError::Expired));
    }

    #[test]
    fn alg_none_other_algorithms_and_unknown_kids_are_refused() {
        let claims = claims_json(serde_json::json!({}));
        for alg in ["none", "None", "HS512", "RS256", "EdDSA"] {
            let header = format!(r#"{{"alg":"{alg}","typ":"JWT","kid":"k1"}}"#);
            let token = forge(&header, &claims);
            let unsigned = format!("{}.", token.rsplit_once('.').unwrap().0);
            for token in [token, unsigned] {
                let refused = signer().verify(&token).unwrap_err();
                assert!(
                    matches!(refused, TokenError::Algorithm | TokenError::Malformed),
                    "{alg}: {refused:?}"
                );
            }
        }
        for header in [
            r#"{"alg":"HS256","typ":"JWT","kid":"k2"}"#,
            r#"{"alg":"HS256","typ":"JWT"}"#,
        ] {
            assert_eq!(
                signer().verify(&forge(header, &claims)),
                Err(TokenError::UnknownKey)
            );
        }
    }

    #[test]
    fn another_key_or_a_tampered_payload_fails_the_signature() {
        let other = TokenSigner::new(
            TokenKeys::hs256("k1", b"some other key, also 32 bytes!!!").unwrap(),
            TokenPolicy::default(),
        )
        .unwrap();
        assert_eq!(signer().verify(&access(&other)), Err(TokenError::Signature));
        let token = access(&signer());
        let (header, rest) = token.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let forged =
            URL_SAFE_NO_PAD.encode(claims_json(serde_json::json!({"sub": "1"})).to_string());
        assert_eq!(
            signer().verify(&format!("{header}.{forged}.{signature}")),
            Err(TokenError::Signature)
        );
    }

    #[test]
    fn refresh_and_access_tokens_do_not_stand_in_for_each_other() {
        let refresh = signer()
            .issue(42, "alice", TokenUse::Refresh, Some("fam"))
            .unwrap();
        assert_eq!(refresh.claims.exp - refresh.claims.iat, 14 * 24 * 3600);
        assert_eq!(signer().verify(&refresh.token), Err(TokenError::WrongUse));
        let claims = signer()
            .verify_as(&refresh.token, TokenUse::Refresh)
            .unwrap();
        assert_eq!(claims.fam.as_deref(), Some("fam"));
        assert_eq!(
            signer().verify_as(&access(&signer()), TokenUse::Refresh),
            Err(TokenError::WrongUse)
        );
    }

    #[test]
    fn garbage_is_malformed() {
        for token in ["", "abc", "a.b", "a.b.c.d", "!!.!!.!!"] {
            assert!(signer().verify(token).is_err(), "{token}");
        }
    }

    #[test]
    fn eddsa_issuers_sign_and_verifiers_with_the_public_key_only_verify() {
        let issuer = TokenSigner::new(
            TokenKeys::asymmetric(
                "ed1",
                Algorithm::EdDSA,
                Some(ED_PRIVATE.as_bytes()),
                ED_PUBLIC.as_bytes(),
            )
            .unwrap(),
            TokenPolicy::default(),
        )
        .unwrap();
        let verifier = TokenSigner::new(
            TokenKeys::asymmetric("ed1", Algorithm::EdDSA, None, ED_PUBLIC.as_bytes()).unwrap(),
            TokenPolicy::default(),
        )
        .unwrap();
        let token = access(&issuer);
        assert_eq!(verifier.verify(&token).unwrap().sub, "42");
        assert!(matches!(
            verifier.issue(1, "x", TokenUse::Access, None),
            Err(TokenError::Key(_))
        ));
        // HS256 "signed" with the public key's bytes: the classic confusion.
        let confused = {
            use hmac::{Hmac, Mac};
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT","kid":"ed1"}"#),
                URL_SAFE_NO_PAD.encode(claims_json(serde_json::json!({})).to_string())
            );
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(ED_PUBLIC.as_bytes()).unwrap();
            mac.update(input.as_bytes());
            format!(
                "{input}.{}",
                URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
            )
        };
        assert_eq!(verifier.verify(&confused), Err(TokenError::Algorithm));
        // An HS256 token is refused by an EdDSA verifier, whatever its key.
        assert_eq!(
            verifier.verify(&access(&signer())),
            Err(TokenError::Algorithm)
        );
    }

    #[test]
    fn rs256_issuers_sign_and_verifiers_with_the_public_key_only_verify() {
        let keys = |private: Option<&str>| {
            TokenKeys::asymmetric(
                "rsa1",
                Algorithm::RS256,
                private.map(str::as_bytes),
                RSA_PUBLIC.as_bytes(),
            )
            .unwrap()
        };
        let issuer = TokenSigner::new(keys(Some(RSA_PRIVATE)), TokenPolicy::default()).unwrap();
        let verifier = TokenSigner::new(keys(None), TokenPolicy::default()).unwrap();
        let token = access(&issuer);
        let header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            (header["alg"].as_str(), header["kid"].as_str()),
            (Some("RS256"), Some("rsa1"))
        );
        assert_eq!(verifier.verify(&token).unwrap().sub, "42");
        assert!(matches!(
            verifier.issue(1, "x", TokenUse::Access, None),
            Err(TokenError::Key(_))
        ));
        // Neither HS256 nor EdDSA passes an RS256 verifier.
        assert_eq!(
            verifier.verify(&access(&signer())),
            Err(TokenError::Algorithm)
        );
    }
}

#[cfg(test)]
pub(crate) mod tests_keys {
    /// A throwaway key pair made for this test with `openssl genpkey -algorithm ed25519`.
    pub const ED_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJVPR5DxArIWytCBevOO23PB239C+wPAciAtHsEiQInh\n-----END PRIVATE KEY-----\n";
    /// A throwaway RSA key pair made for this test with `openssl genpkey
    /// -algorithm RSA -pkeyopt rsa_keygen_bits:2048`.
    pub const RSA_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDDveW6ufGEzTZT\n2/qDqqsvDSdklMuGAhhl5hqRHKpKLpqnjP0VEUjzGaWfFgSJyGi79uRoI0kQbg3e\nJSMut1zgpOugvZV0bg5hH8JQJbuB8Yz34NYUxXUsXmNfyBBDvEYsWm0gyuU11gEZ\nEudqlZiqt27FmXE/1wih/fQdTEwV0z2Q2MFRrwbykqao6VCg+2EY+MmS8pemk8O9\nFUrVOKJn6YhN3kMYVSEXxDyn4p73SDk+5wuDirawQuqJvcglsuh8Mva0mrTxgdEH\n48aTM5sQR011BzQpWwS/r537mZjbBubOCyAd+dlklRlpEGwhmb49uRHXAc1RRweM\nU5nqVCipAgMBAAECggEAG/fCH0/6JlN787d2r+Fu3CYw/roT6m3aNpUOLrW9zyOh\njVcjwiLaHYIInBZ1R4qPDGxWblq8UdCnwpnj0QT6DE8EK89qz1v6Sf5TsUfy5row\nviot7IHaICDMah8X09XO4P96oDjdTzfoqEB/OEdvrNTQywMFn22GGj9C5fzE0klA\nczmM0ymBc1uNsddiI4fSuw1m7d57K5IvQk3uKTJ2LMeIl98CF8Tb00bVqLFyf8GD\nslC+lx4OM0KmcIe9JVJ4znohXokfalzdDuv0GcADx14K3oP3+3CSBCjYbaEHerKK\nh8bEdnDe5Kh5MmrzSXzkUBrtzQgoN2V9RwI5Xg6AkQKBgQDq+322+VfppjKpO1Fq\nX/LYSz4jgu21FwLTAFkuwtksYhBDUdhFgaZ/QsN2wjt98+n5D1vS5cpXFp7V3HoE\nLvKyKJa0yyzyaesgs0aWLKJhix2Yla852gqZh5hCi2EJxEM3aQRF/+frIqHw6HHw\nULuAMfa0FAqCmlWe1Dut+K6IdwKBgQDVP+ULh0yZgIKEcYArgWPIspr9rQOnV/oP\n/9ijeiI9SdIftfAQ3laczEqP4318nqbgnTb+OXSN7kIpXgg7Bb4vhUle32jJGuHU\n3Ge9wAQ5bX4RQxtvqfRNWGHP1XGcqAq7eDzd6W8QjaQLOcDGRk98Id6jF/2Zrl3e\n6xEFono/3wKBgHirc5CeFUZYYdXEL3gYE8Z9RUjJOLbxPTMMD8BSsWH4be+UPSLc\nhJr/tw7qidCRjIqpF3eDJ9h3NlQO5930Gg/hhhsL52YJfISLa+k8vJqo7SbpX1Wv\nIhhbqJYrq0ZvsjDnThmAZCG85Dqps7E8VD1t6wno7MjK5sMsrAUYGtDbAoGBAMys\n9PPpupWiiKMCJVicad+ZvbU5OEaH5FUy5QWTFgXpMqqI/4/RNyRr2Cze1fSkedsg\nSkYbc0k+o3X88L1lt7L4pQFQQMy05ohdu5yeDe/orZV36X91iiwqZkcKwG7xwstI\njnMXuCgVKpwzpFkp5uRnxb6YKio095gb2kykM93VAoGBANPEASiEVuiwPPsEC9LF\nKaqucdZEoa33wlWGF3s/pb/jhG1oBl7U3F/VKvYN38pSxZhFvbe6yBcJqplYLeDh\n3S0hV+pBSh0L/e4RIlSTDUQ+Z8M1gUmSHrFkdQq7E/lBC4hIQiAvXW32fnwXM3N0\nj2vSdaTM8dpyNGOjSx0OrtGb\n-----END PRIVATE KEY-----\n";
    pub const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAw73lurnxhM02U9v6g6qr\nLw0nZJTLhgIYZeYakRyqSi6ap4z9FRFI8xmlnxYEichou/bkaCNJEG4N3iUjLrdc\n4KTroL2VdG4OYR/CUCW7gfGM9+DWFMV1LF5jX8gQQ7xGLFptIMrlNdYBGRLnapWY\nqrduxZlxP9cIof30HUxMFdM9kNjBUa8G8pKmqOlQoPthGPjJkvKXppPDvRVK1Tii\nZ+mITd5DGFUhF8Q8p+Ke90g5PucLg4q2sELqib3IJbLofDL2tJq08YHRB+PGkzOb\nEEdNdQc0KVsEv6+d+5mY2wbmzgsgHfnZZJUZaRBsIZm+PbkR1wHNUUcHjFOZ6lQo\nqQIDAQAB\n-----END PUBLIC KEY-----\n";
    pub const ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAIR7SiT7V1/1eDGz1aXbcFKc3jCn43Mmz3XI/fHgg1yk=\n-----END PUBLIC KEY-----\n";
}
