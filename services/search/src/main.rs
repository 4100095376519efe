use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    common::exit::report(run().await)
}

async fn run() -> anyhow::Result<()> {
    let config = search::Config::from_env()?;
    let telemetry = config.service.telemetry.clone();
    common::server::serve(&telemetry, async {
        Ok(search::host(config).await?.build()?)
    })
    .await
}
