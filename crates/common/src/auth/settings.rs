//! The token settings every service that issues or verifies tokens reads
//! (`<SERVICE>_JWT_*`, or `PLATFORM_JWT_*` once for all).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use jsonwebtoken::Algorithm;

use super::service::{CallerKey, ServiceCredentials, ServiceSecret};
use super::token::{DEFAULT_KEY_ID, TokenKeys, TokenPolicy, TokenSigner};
use crate::config::{ConfigError, Env, Secret};

/// Shortest accepted HS256 key: a key shorter than the hash adds no
/// strength and is easy to brute-force offline from one token.
pub const MIN_SECRET_BYTES: usize = 32;

/// Whether this service signs tokens or only checks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRole {
    /// Needs the private key (the gateway).
    Issuer,
    /// Needs only the public key, or the shared secret (chat).
    Verifier,
}

/// What happens when no HS256 key is configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenUnset {
    /// Make a random one (development: tokens die with the process).
    Random,
    /// Refuse to start.
    Refuse,
}

/// The keys and the policy, read and checked at start.
#[derive(Clone, Debug)]
pub struct TokenSettings {
    signer: Arc<TokenSigner>,
}

impl TokenSettings {
    pub fn from_env(env: &Env, role: KeyRole, when_unset: WhenUnset) -> Result<Self, ConfigError> {
        let defaults = TokenPolicy::default();
        let policy = TokenPolicy {
            issuer: env.shared("JWT_ISSUER", defaults.issuer)?,
            audience: env.shared("JWT_AUDIENCE", defaults.audience)?,
            access_ttl: env.shared("JWT_TTL", defaults.access_ttl)?,
            refresh_ttl: env.shared("JWT_REFRESH_TTL", defaults.refresh_ttl)?,
            leeway: env.shared("JWT_LEEWAY", defaults.leeway)?,
        };
        if policy.leeway > Duration::from_secs(300) {
            return Err(invalid(env, "JWT_LEEWAY", "", "must be at most 5m"));
        }
        let kid: String = env.shared("JWT_KEY_ID", DEFAULT_KEY_ID.to_owned())?;
        let algorithm: String = env.shared("JWT_ALGORITHM", "HS256".to_owned())?;
        let keys = match algorithm.as_str() {
            "HS256" => hs256(env, &kid, when_unset)?,
            "EdDSA" | "RS256" => {
                let algorithm = if algorithm == "EdDSA" {
                    Algorithm::EdDSA
                } else {
                    Algorithm::RS256
                };
                let public = read_pem(env, "JWT_PUBLIC_KEY_FILE")?
                    .ok_or_else(|| invalid(env, "JWT_PUBLIC_KEY_FILE", "", "is required"))?;
                let private = match role {
                    KeyRole::Issuer => {
                        Some(read_pem(env, "JWT_PRIVATE_KEY_FILE")?.ok_or_else(|| {
                            invalid(env, "JWT_PRIVATE_KEY_FILE", "", "is required to sign")
                        })?)
                    }
                    KeyRole::Verifier => None,
                };
                TokenKeys::asymmetric(&kid, algorithm, private.as_deref(), &public)
                    .map_err(|e| invalid(env, "JWT_PUBLIC_KEY_FILE", "", &e.to_string()))?
            }
            _ => {
                return Err(invalid(
                    env,
                    "JWT_ALGORITHM",
                    &algorithm,
                    "expected HS256, EdDSA or RS256",
                ));
            }
        };
        // Signs and verifies once: a private and a public key that are not
        // a pair fail here, not on the first sign-in.
        let signer = TokenSigner::new(keys, policy).map_err(|e| {
            invalid(
                env,
                "JWT_PRIVATE_KEY_FILE",
                "",
                &format!("the keys do not work together: {e}"),
            )
        })?;
        Ok(Self {
            signer: Arc::new(signer),
        })
    }

    pub fn signer(&self) -> Arc<TokenSigner> {
        self.signer.clone()
    }

    pub fn policy(&self) -> &TokenPolicy {
        self.signer.policy()
    }
}

fn hs256(env: &Env, kid: &str, when_unset: WhenUnset) -> Result<TokenKeys, ConfigError> {
    let secret = match env.shared_optional::<Secret>("JWT_SECRET")? {
        Some(secret) if secret.expose().is_empty() => None,
        other => other,
    };
    let secret = match secret {
        Some(secret) if secret.expose().len() >= MIN_SECRET_BYTES => secret,
        Some(_) => {
            return Err(invalid(
                env,
                "JWT_SECRET",
                "***",
                &format!("must be at least {MIN_SECRET_BYTES} bytes"),
            ));
        }
        None if when_unset == WhenUnset::Refuse => {
            return Err(invalid(
                env,
                "JWT_SECRET",
                "",
                "is required (or JWT_ALGORITHM with key files)",
            ));
        }
        None => Secret::new(format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        )),
    };
    TokenKeys::hs256(kid, secret.expose().as_bytes())
        .map_err(|e| invalid(env, "JWT_SECRET", "***", &e.to_string()))
}

fn read_pem(env: &Env, key: &str) -> Result<Option<Vec<u8>>, ConfigError> {
    let Some(path) = env.shared_optional::<std::path::PathBuf>(key)? else {
        return Ok(None);
    };
    std::fs::read(&path)
        .map(Some)
        .map_err(|e| invalid(env, key, &path.display().to_string(), &e.to_string()))
}

fn invalid(env: &Env, key: &str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        var: env.var_name(key),
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

/// How this service proves who it is to other services, and checks who
/// calls it (`SERVICE_SECRET`, `SERVICE_KEY`; see [`super::service`]).
#[derive(Clone, Debug)]
pub struct ServiceAuthConfig {
    /// The platform secret; only a service holding it can check callers.
    pub secret: Option<ServiceSecret>,
    /// The key this service signs its calls with.
    pub key: CallerKey,
}

/// One random secret per process: every service of an all-in-one process
/// or a test process agrees on it without configuration, and nothing
/// outside the process can sign for them.
fn process_secret() -> ServiceSecret {
    static SECRET: OnceLock<ServiceSecret> = OnceLock::new();
    SECRET.get_or_init(ServiceSecret::random).clone()
}

impl ServiceAuthConfig {
    /// The process's random secret (development without a configured
    /// secret, tests, embedders).
    pub fn process_default(name: &str) -> Self {
        let secret = process_secret();
        Self {
            key: secret.key_for(name),
            secret: Some(secret),
        }
    }

    /// Reads `<SERVICE>_SERVICE_SECRET` / `PLATFORM_SERVICE_SECRET`, or
    /// `<SERVICE>_SERVICE_KEY` (this caller's derived key only). In
    /// production one of them is required; in development an unset secret
    /// is the process's random one, which only services in this process
    /// share.
    pub fn from_env(env: &Env, name: &str, serves_grpc: bool) -> Result<Self, ConfigError> {
        let production = env.shared("ENVIRONMENT", String::new())? == "production";
        let secret = env
            .shared_optional::<Secret>("SERVICE_SECRET")?
            .filter(|s| !s.expose().is_empty());
        let key = env
            .optional::<Secret>("SERVICE_KEY")?
            .filter(|s| !s.expose().is_empty());
        match (secret, key) {
            (Some(secret), _) => {
                let secret = ServiceSecret::new(secret.expose().as_bytes())
                    .map_err(|e| invalid(env, "SERVICE_SECRET", "***", &e.to_string()))?;
                Ok(Self {
                    key: secret.key_for(name),
                    secret: Some(secret),
                })
            }
            (None, Some(_)) if serves_grpc => Err(invalid(
                env,
                "SERVICE_KEY",
                "***",
                "this service serves gRPC: it needs SERVICE_SECRET to check its callers",
            )),
            (None, Some(key)) => Ok(Self {
                key: CallerKey::decode(name, key.expose())
                    .map_err(|e| invalid(env, "SERVICE_KEY", "***", &e.to_string()))?,
                secret: None,
            }),
            (None, None) if production => Err(invalid(
                env,
                "SERVICE_SECRET",
                "",
                "is required in production (or SERVICE_KEY for a service that only calls)",
            )),
            (None, None) => Ok(Self::process_default(name)),
        }
    }

    pub fn credentials(&self) -> Arc<ServiceCredentials> {
        Arc::new(ServiceCredentials::new(&self.key))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::auth::TokenUse;

    fn settings(
        vars: &[(&str, &str)],
        role: KeyRole,
        unset: WhenUnset,
    ) -> Result<TokenSettings, ConfigError> {
        TokenSettings::from_env(&Env::from_map("CHAT", vars.iter().copied()), role, unset)
    }

    #[test]
    fn a_short_or_missing_key_is_refused_and_never_echoed() {
        let err = settings(
            &[("CHAT_JWT_SECRET", "short")],
            KeyRole::Verifier,
            WhenUnset::Refuse,
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("CHAT_JWT_SECRET:"), "{err}");
        assert!(err.to_string().contains("at least 32 bytes"), "{err}");
        assert!(!err.to_string().contains("short"));
        let err = settings(&[], KeyRole::Verifier, WhenUnset::Refuse).unwrap_err();
        assert!(err.to_string().contains("is required"), "{err}");
        let random = settings(&[], KeyRole::Issuer, WhenUnset::Random).unwrap();
        assert_eq!(random.signer().keys().algorithm(), Algorithm::HS256);
    }

    #[test]
    fn the_platform_wide_settings_apply_and_the_services_own_win() {
        let key = "k".repeat(32);
        let s = settings(
            &[
                ("PLATFORM_JWT_SECRET", &key),
                ("PLATFORM_JWT_ISSUER", "us"),
                ("CHAT_JWT_ISSUER", "chat-us"),
                ("PLATFORM_JWT_KEY_ID", "2026-12"),
                ("PLATFORM_JWT_LEEWAY", "3s"),
            ],
            KeyRole::Verifier,
            WhenUnset::Refuse,
        )
        .unwrap();
        assert_eq!(s.policy().issuer, "chat-us");
        assert_eq!(s.signer().keys().kid(), "2026-12");
        assert_eq!(s.policy().leeway, Duration::from_secs(3));
        assert!(
            settings(
                &[("PLATFORM_JWT_SECRET", &key), ("CHAT_JWT_LEEWAY", "1h")],
                KeyRole::Verifier,
                WhenUnset::Refuse
            )
            .is_err()
        );
        assert!(
            settings(
                &[
                    ("PLATFORM_JWT_SECRET", &key),
                    ("CHAT_JWT_ALGORITHM", "HS512")
                ],
                KeyRole::Verifier,
                WhenUnset::Refuse
            )
            .is_err()
        );
    }

    #[test]
    fn eddsa_keys_come_from_pem_files_and_verifiers_need_only_the_public_one() {
        let dir = std::env::temp_dir().join(format!("jwt-keys-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let private = dir.join("private.pem");
        let public = dir.join("public.pem");
        std::fs::write(&private, super::super::token::tests_keys::ED_PRIVATE).unwrap();
        std::fs::write(&public, super::super::token::tests_keys::ED_PUBLIC).unwrap();
        let (private, public) = (private.to_str().unwrap(), public.to_str().unwrap());
        let issuer = settings(
            &[
                ("PLATFORM_JWT_ALGORITHM", "EdDSA"),
                ("PLATFORM_JWT_PRIVATE_KEY_FILE", private),
                ("PLATFORM_JWT_PUBLIC_KEY_FILE", public),
            ],
            KeyRole::Issuer,
            WhenUnset::Refuse,
        )
        .unwrap();
        let verifier = settings(
            &[
                ("PLATFORM_JWT_ALGORITHM", "EdDSA"),
                ("PLATFORM_JWT_PUBLIC_KEY_FILE", public),
            ],
            KeyRole::Verifier,
            WhenUnset::Refuse,
        )
        .unwrap();
        let token = issuer
            .signer()
            .issue(7, "g", TokenUse::Access, None)
            .unwrap()
            .token;
        assert_eq!(verifier.signer().verify(&token).unwrap().sub, "7");
        let err = settings(
            &[
                ("PLATFORM_JWT_ALGORITHM", "EdDSA"),
                ("PLATFORM_JWT_PUBLIC_KEY_FILE", public),
            ],
            KeyRole::Issuer,
            WhenUnset::Refuse,
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("CHAT_JWT_PRIVATE_KEY_FILE:"),
            "{err}"
        );
        let err = settings(
            &[
                ("PLATFORM_JWT_ALGORITHM", "EdDSA"),
                ("PLATFORM_JWT_PUBLIC_KEY_FILE", "/nonexistent.pem"),
            ],
            KeyRole::Verifier,
            WhenUnset::Refuse,
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("CHAT_JWT_PUBLIC_KEY_FILE:"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod service_auth_tests {
    use super::*;

    fn config(vars: &[(&str, &str)], serves_grpc: bool) -> Result<ServiceAuthConfig, ConfigError> {
        ServiceAuthConfig::from_env(
            &Env::from_map("GATEWAY", vars.iter().copied()),
            "gateway",
            serves_grpc,
        )
    }

    #[test]
    fn production_needs_a_service_secret_or_key_and_a_short_one_is_refused() {
        let err = config(&[("PLATFORM_ENVIRONMENT", "production")], false).unwrap_err();
        assert!(err.to_string().contains("GATEWAY_SERVICE_SECRET"), "{err}");
        let err = config(&[("PLATFORM_SERVICE_SECRET", "short")], false).unwrap_err();
        assert!(!err.to_string().contains("short"), "{err}");
        let ok = config(&[("PLATFORM_SERVICE_SECRET", &"s".repeat(32))], true).unwrap();
        assert!(ok.secret.is_some());
        // Development without one: the process's own, shared in process.
        let dev = config(&[], true).unwrap();
        assert_eq!(
            dev.key.encode(),
            ServiceAuthConfig::process_default("gateway").key.encode()
        );
    }

    #[test]
    fn a_caller_key_alone_signs_but_cannot_check_callers() {
        let key = ServiceSecret::new(&[7; 32])
            .unwrap()
            .key_for("gateway")
            .encode();
        let only_calls = config(&[("GATEWAY_SERVICE_KEY", &key)], false).unwrap();
        assert!(only_calls.secret.is_none());
        assert_eq!(only_calls.key.encode(), key);
        let err = config(&[("GATEWAY_SERVICE_KEY", &key)], true).unwrap_err();
        assert!(err.to_string().contains("SERVICE_SECRET"), "{err}");
        assert!(config(&[("GATEWAY_SERVICE_KEY", "not base64!")], false).is_err());
    }
}

/// `<SERVICE>_ADMIN_TOKEN`, guarding a service's operator routes: at
/// least [`MIN_SECRET_BYTES`], like a signing key, since it guards the
/// same kind of power; unset or empty, none.
pub fn admin_token(env: &Env) -> Result<Option<Secret>, ConfigError> {
    match env.optional::<Secret>("ADMIN_TOKEN")? {
        Some(token) if token.expose().is_empty() => Ok(None),
        Some(token) if token.expose().len() < MIN_SECRET_BYTES => Err(ConfigError::Invalid {
            var: env.var_name("ADMIN_TOKEN"),
            value: "***".into(),
            reason: format!("must be at least {MIN_SECRET_BYTES} bytes"),
        }),
        token => Ok(token),
    }
}
