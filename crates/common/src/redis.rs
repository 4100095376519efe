//! Connecting to Redis, for the services' Redis backends that both send
//! commands and follow pub/sub (the cache's invalidations, chat's rooms).

use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;

#[derive(Debug, thiserror::Error)]
#[error("cannot connect to Redis at {url}")]
pub struct RedisConnectError {
    url: String,
    #[source]
    source: fred::error::Error,
}

/// A command client and a subscriber on the Redis at `url`, both
/// connected (reconnecting with backoff if the connection drops later);
/// fails if Redis does not answer within a few seconds. `pubsub_buffer`
/// sets how many published messages may wait between the connection and
/// their reader (fred's default when `None`).
pub async fn connect(
    url: &str,
    pubsub_buffer: Option<usize>,
) -> Result<(Client, SubscriberClient), RedisConnectError> {
    let err = |source| RedisConnectError {
        url: url.to_owned(),
        source,
    };
    let config = Config::from_url(url).map_err(err)?;
    let mut builder = Builder::from_config(config);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(3);
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2));
    if let Some(buffer) = pubsub_buffer {
        builder.with_performance_config(|p| p.broadcast_channel_capacity = buffer);
    }
    let client = builder.build().map_err(err)?;
    let subscriber = builder.build_subscriber_client().map_err(err)?;
    client.init().await.map_err(err)?;
    subscriber.init().await.map_err(err)?;
    Ok((client, subscriber))
}
