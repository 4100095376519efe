//! A closed-loop gRPC load generator for the users service.
//!
//! `grpc-load <get|create> <http://addr> <seconds> <concurrency> [connections] [id]`
//!
//! `get` calls GetUser for one id; `create` calls CreateUser with unique
//! usernames. Prints one line: `calls=… errors=… rps=… p50_us=… p99_us=…`.
//! Calls are signed as the gateway with `PLATFORM_SERVICE_SECRET`, the
//! secret the users service under test was started with.

use std::time::{Duration, Instant};

use common::auth::{ServiceCredentials, ServiceSecret};
use platform_proto::users::v1 as pb;
use platform_proto::users::v1::user_service_client::UserServiceClient;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_owned());
    let mode = arg(1, "get");
    let addr = arg(2, "http://127.0.0.1:50051");
    let seconds: u64 = arg(3, "10").parse()?;
    let concurrency: usize = arg(4, "64").parse()?;
    let connections: usize = arg(5, "4").parse()?;
    let id: u64 = arg(6, "1").parse()?;

    let secret = std::env::var("PLATFORM_SERVICE_SECRET").map_err(
        |_| "PLATFORM_SERVICE_SECRET: the users service's secret is needed to sign calls",
    )?;
    let credentials = std::sync::Arc::new(ServiceCredentials::new(
        &ServiceSecret::new(secret.as_bytes())?.key_for("gateway"),
    ));
    let mut channels = Vec::new();
    for _ in 0..connections.max(1) {
        let timeouts = common::clients::Timeouts {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(30),
        };
        channels.push(
            common::clients::grpc_endpoint(addr.clone(), timeouts)?
                .connect()
                .await?,
        );
    }
    let run_id = std::process::id();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let mut client = UserServiceClient::with_interceptor(
            channels[worker % channels.len()].clone(),
            credentials.interceptor("users"),
        );
        let mode = mode.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut n = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let ok = if mode == "create" {
                    n += 1;
                    let name = format!("b{run_id}w{worker}n{n}");
                    client
                        .create_user(pb::CreateUserRequest {
                            username: name.clone(),
                            email: format!("{name}@bench.example.com"),
                            password: "benchmark password".into(),
                        })
                        .await
                        .is_ok()
                } else {
                    client.get_user(pb::GetUserRequest { id }).await.is_ok()
                };
                if ok {
                    latencies.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latencies, e) = task.await?;
        all.extend(latencies);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "calls={} errors={} rps={:.0} p50_us={} p99_us={}",
        all.len(),
        errors,
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99)
    );
    Ok(())
}
