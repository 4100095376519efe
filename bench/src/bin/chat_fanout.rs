//! Load generator for the chat benchmark (bench/chat-vs-ws.sh). Speaks the
//! chat protocol's join/send/message frames, which the npm `ws` baseline
//! server (bench/chat-ws/server.js) speaks too.
//!
//! `chat-fanout fanout <ws-url> <subscribers> <messages> <window> [key]`:
//! subscribers join one room; one publisher sends `messages`, keeping at
//! most `window` of them not yet delivered to every subscriber. Prints
//! deliveries per second and the publish-to-receive latency percentiles.
//!
//! `chat-fanout idle <ws-url> <connections> <server-pid> [key]`: opens the
//! connections (each joined to one of 100 rooms), then prints the server's
//! RSS growth per connection.
//!
//! With `key`, each connection carries a token signed with it for a user
//! of its own (the chat service checks it; the baseline ignores it).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Notify, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

use platform_bench::{Error, access_token, rss_kib};

fn usage() -> ! {
    eprintln!(
        "usage: chat-fanout fanout <ws-url> <subscribers> <messages> <window> [key]\n       chat-fanout idle <ws-url> <connections> <server-pid> [key]"
    );
    std::process::exit(2)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| usage())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let mode: String = arg(&args, 1);
    let url: String = arg(&args, 2);
    match mode.as_str() {
        "fanout" => {
            let key = args.get(6).cloned();
            fanout(&url, arg(&args, 3), arg(&args, 4), arg(&args, 5), key).await
        }
        "idle" => {
            let key = args.get(5).cloned();
            idle(&url, arg(&args, 3), arg(&args, 4), key).await
        }
        _ => usage(),
    }
}

async fn connect(url: &str, key: Option<&str>, user: u64) -> Result<Socket, Error> {
    let mut request = url.into_client_request()?;
    if let Some(key) = key {
        let token = access_token(key, user)?;
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}"))?,
        );
    }
    let (socket, _) = tokio_tungstenite::connect_async(request).await?;
    Ok(socket)
}

/// Joins `room` and waits for the server's `joined`.
async fn join(socket: &mut Socket, room: &str) -> Result<(), Error> {
    let frame = format!(r#"{{"type":"join","room":"{room}"}}"#);
    socket.send(Message::text(frame)).await?;
    while let Some(frame) = socket.next().await {
        if let Message::Text(text) = frame?
            && text.contains(r#""type":"joined""#)
        {
            return Ok(());
        }
    }
    Err("closed before joining".into())
}

/// The `<seq> <micros>` content of a message frame.
fn stamp(text: &str) -> Option<(u64, u64)> {
    if !text.starts_with(r#"{"type":"message""#) {
        return None;
    }
    let start = text.find(r#""content":""#)? + 11;
    let rest = &text[start..];
    let end = rest.find('"')?;
    let (seq, micros) = rest[..end].split_once(' ')?;
    Some((seq.parse().ok()?, micros.parse().ok()?))
}

/// Opens `n` connections, at most 200 handshakes at a time, each joined
/// to `room(i)`.
async fn open_many(
    url: &str,
    n: usize,
    key: Option<&str>,
    room: impl Fn(usize) -> String,
) -> Result<Vec<Socket>, Error> {
    let gate = Arc::new(Semaphore::new(200));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let gate = gate.clone();
        let (url, key, room) = (url.to_owned(), key.map(str::to_owned), room(i));
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let mut socket = connect(&url, key.as_deref(), i as u64 + 1).await?;
            join(&mut socket, &room).await?;
            Ok::<_, Error>(socket)
        }));
    }
    let mut sockets = Vec::with_capacity(n);
    for task in tasks {
        sockets.push(task.await??);
    }
    Ok(sockets)
}

async fn fanout(
    url: &str,
    subscribers: usize,
    messages: u64,
    window: u64,
    key: Option<String>,
) -> Result<(), Error> {
    let epoch = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Notify::new());
    let ready = Arc::new(Semaphore::new(0));
    let gate = Arc::new(Semaphore::new(200));
    let n = subscribers as u64;
    let mut readers = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        let (delivered, progress) = (delivered.clone(), progress.clone());
        let (ready, gate) = (ready.clone(), gate.clone());
        let (url, key) = (url.to_owned(), key.clone());
        readers.push(tokio::spawn(async move {
            let result = async {
                let mut socket = {
                    let _permit = gate.acquire_owned().await?;
                    let mut socket = connect(&url, key.as_deref(), i as u64 + 1).await?;
                    join(&mut socket, "bench").await?;
                    socket
                };
                ready.add_permits(1);
                // Reads from the start: presence changes of the others
                // joining arrive before the first message.
                let mut latencies = Vec::with_capacity(messages as usize);
                let mut last = epoch;
                while latencies.len() < messages as usize {
                    let Some(frame) = socket.next().await else {
                        return Err::<_, Error>("a subscriber was disconnected".into());
                    };
                    let text = match frame? {
                        Message::Text(text) => text,
                        Message::Close(reason) => {
                            return Err(format!("a subscriber was closed: {reason:?}").into());
                        }
                        _ => continue,
                    };
                    let Some((_, sent)) = stamp(&text) else {
                        continue;
                    };
                    let now = epoch.elapsed().as_micros() as u64;
                    latencies.push(now.saturating_sub(sent) as u32);
                    last = Instant::now();
                    if delivered.fetch_add(1, Ordering::Relaxed) % n == n - 1 {
                        progress.notify_one();
                    }
                }
                Ok((latencies, last))
            }
            .await;
            if let Err(e) = &result {
                // The publisher would wait for it forever.
                eprintln!("subscriber {i}: {e}");
                std::process::exit(1);
            }
            result
        }));
    }
    let _all_joined = ready.acquire_many(subscribers as u32).await?;
    // Let the presence announcements of the last joins drain.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut publisher = connect(url, key.as_deref(), 0).await?;
    join(&mut publisher, "bench").await?;
    let (mut tx, mut rx) = publisher.split();
    // Acks and the publisher's own copies are read and dropped.
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
    let started = Instant::now();
    for seq in 0..messages {
        let need = seq.saturating_sub(window) * n;
        while delivered.load(Ordering::Relaxed) < need {
            progress.notified().await;
        }
        let micros = epoch.elapsed().as_micros();
        let frame = format!(r#"{{"type":"send","room":"bench","content":"{seq} {micros}"}}"#);
        tx.send(Message::text(frame)).await?;
    }
    let mut all: Vec<u32> = Vec::with_capacity((n * messages) as usize);
    let mut finished = started;
    for reader in readers {
        let (latencies, last) = reader.await??;
        all.extend(latencies);
        finished = finished.max(last);
    }
    drain.abort();
    let seconds = finished.duration_since(started).as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)] as f64 / 1000.0;
    println!(
        "deliveries={} seconds={seconds:.3} deliveries_per_sec={:.0} p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
        all.len(),
        all.len() as f64 / seconds,
        pct(0.50),
        pct(0.99),
        pct(1.0),
    );
    Ok(())
}

async fn idle(url: &str, connections: usize, pid: u32, key: Option<String>) -> Result<(), Error> {
    // Members per room: each connection's join is announced to the room.
    let per_room: usize = std::env::var("MEMBERS_PER_ROOM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let rooms = connections.div_ceil(per_room.max(1));
    // One connection first, so one-time allocations are not counted.
    let warm = open_many(url, 1, key.as_deref(), |_| "warm".into()).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(pid)?;
    let sockets = open_many(url, connections, key.as_deref(), |i| {
        format!("idle-{}", i % rooms)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid)?;
    let per = (after.saturating_sub(before)) as f64 / connections as f64;
    println!(
        "connections={connections} rss_before_kib={before} rss_after_kib={after} kib_per_connection={per:.2}"
    );
    drop(sockets);
    drop(warm);
    Ok(())
}
