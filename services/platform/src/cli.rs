//! Operators' commands beside `platform` (which runs everything):
//! credentials for the internal gRPC APIs, derived from
//! `PLATFORM_SERVICE_SECRET`.
//!
//! - `platform service-key <caller>` prints the key a service that only
//!   calls (the gateway) is given as `<SERVICE>_SERVICE_KEY`, so it never
//!   holds the platform secret.
//! - `platform service-token <caller> <service> [seconds]` prints a token
//!   for one call by hand, e.g. `grpcurl -H "authorization: Bearer $(platform
//!   service-token admin users)" ...`; at most five minutes.

use std::time::Duration;

use anyhow::{Context, bail};
use common::auth::{ServiceCredentials, ServiceSecret, service::SERVICE_TOKEN_TTL};

const USAGE: &str =
    "usage: platform [service-key <caller> | service-token <caller> <service> [seconds]]";

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let secret = || -> anyhow::Result<ServiceSecret> {
        let raw = std::env::var("PLATFORM_SERVICE_SECRET")
            .context("PLATFORM_SERVICE_SECRET: the platform's service secret is needed")?;
        ServiceSecret::new(raw.as_bytes()).context("PLATFORM_SERVICE_SECRET")
    };
    match args {
        [cmd, caller] if cmd == "service-key" => {
            println!("{}", secret()?.key_for(caller).encode());
        }
        [cmd, caller, service, rest @ ..] if cmd == "service-token" && rest.len() <= 1 => {
            let ttl = match rest.first() {
                Some(seconds) => Duration::from_secs(seconds.parse().context("seconds")?),
                None => SERVICE_TOKEN_TTL,
            };
            if ttl > SERVICE_TOKEN_TTL {
                bail!(
                    "a service token lives at most {}s",
                    SERVICE_TOKEN_TTL.as_secs()
                );
            }
            let token = ServiceCredentials::new(&secret()?.key_for(caller)).mint(service, ttl)?;
            println!("{token}");
        }
        _ => bail!(USAGE),
    }
    Ok(())
}
