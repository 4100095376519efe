use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    common::exit::report(run().await)
}

async fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.is_empty() {
        return platform::cli::run(&args);
    }
    let config = platform::PlatformConfig::from_env()?;
    let telemetry = common::telemetry::init(&config.telemetry)?;
    let result = async {
        let platform = platform::Platform::build(config).await?;
        if let Some(gateway) = platform.hosts().iter().find(|h| h.name() == "gateway") {
            tracing::info!(gateway = %format!("http://{}", gateway.http_addr()), "platform starting; the gateway is the public door");
        }
        platform
            .run_until_stopped(common::shutdown::token_on_signal())
            .await?;
        anyhow::Ok(())
    }
    .await;
    telemetry.shutdown().await;
    result
}
