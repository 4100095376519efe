//! An open-loop HTTP/1 load at a fixed rate, for comparing tails at equal
//! offered load (wrk is closed-loop: a faster phase is also a busier one).
//! Each request is due at its slot on the schedule; its latency counts
//! from that slot, so time spent waiting behind a slow answer is counted
//! (no coordinated omission).
//!
//! `http-rate <host:port> <path> <requests/s> <seconds> <connections>`
//! prints `sent=<n> errors=<n> p50=<ms> p99=<ms> max=<ms>`.

use std::time::Duration;

use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, path, rate, seconds, connections] = args.as_slice() else {
        eprintln!("usage: http-rate <host:port> <path> <requests/s> <seconds> <connections>");
        std::process::exit(2);
    };
    let (rate, seconds, connections): (f64, u64, usize) =
        (rate.parse()?, seconds.parse()?, connections.parse()?);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(
            addr.clone(),
            path.clone(),
            rate,
            seconds,
            connections.max(1),
        ))
}

async fn run(
    addr: String,
    path: String,
    rate: f64,
    seconds: u64,
    connections: usize,
) -> Result<(), Error> {
    let start = Instant::now() + Duration::from_millis(200);
    let per_connection = Duration::from_secs_f64(connections as f64 / rate);
    let total = (rate * seconds as f64 / connections as f64) as u64;
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (addr, path) = (addr.clone(), path.clone());
        let offset = per_connection.mul_f64(c as f64 / connections as f64);
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(&addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut latencies = Vec::with_capacity(total as usize);
            let mut errors = 0u64;
            for i in 0..total {
                let due = start + offset + per_connection.mul_f64(i as f64);
                tokio::time::sleep_until(due).await;
                let request = Request::get(path.as_str())
                    .header("host", addr.as_str())
                    .body(http_body_util::Empty::<Bytes>::new())?;
                match sender.send_request(request).await {
                    Ok(response) => {
                        let ok = response.status().is_success();
                        let _ = http_body_util::BodyExt::collect(response.into_body()).await;
                        if !ok {
                            errors += 1;
                        }
                    }
                    Err(_) => errors += 1,
                }
                latencies.push(due.elapsed().as_micros() as u64);
            }
            Ok::<_, Error>((latencies, errors))
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (latencies, failed) = task.await??;
        all.extend(latencies);
        errors += failed;
    }
    all.sort_unstable();
    let at = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    println!(
        "sent={} errors={errors} p50={:.2}ms p99={:.2}ms max={:.2}ms",
        all.len(),
        at(0.5),
        at(0.99),
        all.last().copied().unwrap_or(0) as f64 / 1000.0
    );
    Ok(())
}
