//! What the load generators in `src/bin` share.

use std::time::Duration;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// An hour's access token for `user`, signed with `key` as the gateway
/// signs them.
pub fn access_token(key: &str, user: u64) -> Result<String, Error> {
    let policy = common::auth::TokenPolicy {
        access_ttl: Duration::from_secs(3600),
        ..Default::default()
    };
    Ok(common::auth::TokenSigner::hs256(key.as_bytes(), policy)
        .and_then(|s| {
            s.issue(
                user,
                &format!("user{user}"),
                common::auth::TokenUse::Access,
                None,
            )
        })
        .map_err(|e| Error::from(e.to_string()))?
        .token)
}

/// Process `pid`'s resident set, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64, Error> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS".into())
}
