//! The floor for an HTTP/1 reverse proxy written in Rust, for
//! bench/gateway-vs-nginx.sh: hyper on one thread, each client connection
//! paired with its own upstream connection (no pool, no routing, no
//! limits). Not part of the platform; it tells how much of the gateway's
//! gap to nginx any Rust proxy on this stack would have.
//!
//! `bare-proxy <listen-addr> <upstream-addr>`

use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: bare-proxy <listen-addr> <upstream-addr>");
        std::process::exit(2);
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(listen, upstream))
}

async fn serve(listen: String, upstream: String) -> Result<(), Error> {
    let listener = TcpListener::bind(&listen).await?;
    loop {
        let (client, _) = listener.accept().await?;
        let upstream = upstream.clone();
        // A connection's end (wrk closes them mid-response at the end of a
        // run) is not worth a line.
        tokio::spawn(async move { relay(client, &upstream).await });
    }
}

async fn relay(client: TcpStream, upstream: &str) -> Result<(), Error> {
    client.set_nodelay(true)?;
    let up = TcpStream::connect(upstream).await?;
    up.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(up))
        .await?;
    tokio::spawn(connection);
    // HTTP/1 serves one request at a time per connection, so the lock is
    // never contended.
    let sender = Arc::new(tokio::sync::Mutex::new(sender));
    let service = service_fn(move |req| {
        let sender = sender.clone();
        async move { sender.lock().await.send_request(req).await }
    });
    http1::Builder::new()
        .writev(false)
        .serve_connection(TokioIo::new(client), service)
        .await?;
    Ok(())
}
