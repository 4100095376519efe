//! Chat through the gateway: a real users service, gateway and chat
//! service on random ports; WebSocket clients upgrade at
//! `/api/v1/chat/ws` with the token the gateway's login issued.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // test clients of servers the test starts

use std::time::Duration;
use test_support::http::FetchJson;

use awc::ws::{self, CloseCode, Frame};
use e2e::in_process::{Platform, base64_url, problem};
use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};

type Socket = actix_codec::Framed<awc::BoxedSocket, ws::Codec>;

fn ws_url(platform: &Platform) -> String {
    format!("{}/api/v1/chat/ws", platform.base.replacen("http", "ws", 1))
}

async fn connect(platform: &Platform, token: &str) -> Socket {
    let (response, socket) = awc::Client::new()
        .ws(ws_url(platform))
        .bearer_auth(token)
        .connect()
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    socket
}

/// A ticket from `POST /api/v1/auth/ticket` for `token`.
async fn ticket(platform: &Platform, token: &str) -> String {
    let res = platform
        .client
        .post(format!("{}/api/v1/auth/ticket", platform.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    body["ticket"].as_str().unwrap().to_owned()
}

/// The status a WebSocket upgrade at `url` is answered with.
async fn upgrade_status(url: String) -> u16 {
    match awc::Client::new().ws(url).connect().await {
        Ok((response, _)) => response.status().as_u16(),
        Err(awc::error::WsClientError::InvalidResponseStatus(status)) => status.as_u16(),
        Err(other) => panic!("upgrade failed: {other}"),
    }
}

async fn send(socket: &mut Socket, frame: Value) {
    socket
        .send(ws::Message::Text(frame.to_string().into()))
        .await
        .unwrap();
}

/// The next JSON frame of `kind`, skipping presence chatter.
async fn next_of(socket: &mut Socket, kind: &str) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a frame within 5 s")
            .expect("the connection is open")
            .unwrap();
        match frame {
            Frame::Text(text) => {
                let value: Value = serde_json::from_slice(&text).unwrap();
                if value["type"] == kind {
                    return value;
                }
                assert_eq!(value["type"], "presence", "waiting for {kind}: {value}");
            }
            Frame::Ping(bytes) => socket.send(ws::Message::Pong(bytes)).await.unwrap(),
            other => panic!("waiting for {kind}, got {other:?}"),
        }
    }
}

async fn local<F: std::future::Future<Output = ()>>(test: F) {
    tokio::task::LocalSet::new().run_until(test).await;
}

#[tokio::test]
async fn an_upgrade_with_the_gateways_token_reaches_chat_and_frames_flow_both_ways() {
    local(async {
        let platform = Platform::start().await;
        let _chat = platform
            .start_chat(&[("CHAT_MAX_FRAME_BYTES", "1024")])
            .await;
        platform.sign_up("alice").await;
        platform.sign_up("bobby").await;
        let alice_token = platform.login("alice").await;
        let bob_token = platform.login("bobby").await;

        let mut alice = connect(&platform, &alice_token).await;
        // Browsers exchange the token for a single-use ticket.
        let ticket = ticket(&platform, &bob_token).await;
        let (_, mut bob) = awc::Client::new()
            .ws(format!("{}?ticket={ticket}", ws_url(&platform)))
            .connect()
            .await
            .unwrap();
        send(&mut alice, json!({"type": "join", "room": "lobby"})).await;
        next_of(&mut alice, "joined").await;
        send(&mut bob, json!({"type": "join", "room": "lobby"})).await;
        let joined = next_of(&mut bob, "joined").await;
        let names: Vec<&str> = joined["presence"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["alice", "bobby"], "names come from the login token");

        send(
            &mut alice,
            json!({"type": "send", "room": "lobby", "content": "hello @bobby"}),
        )
        .await;
        assert_eq!(next_of(&mut alice, "ack").await["offset"], 1);
        let message = next_of(&mut bob, "message").await;
        assert_eq!(message["content"], "hello @bobby");
        assert_eq!(message["user"]["name"], "alice");

        // Pings cross the gateway and chat's pong comes back.
        alice
            .send(ws::Message::Ping("are you there".into()))
            .await
            .unwrap();
        let pong = loop {
            match tokio::time::timeout(Duration::from_secs(5), alice.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
            {
                Frame::Text(_) => {} // her own message
                other => break other,
            }
        };
        assert_eq!(pong, Frame::Pong("are you there".into()));

        // REST for rooms goes to chat too.
        let presence: Value = platform
            .client
            .get(format!(
                "{}/api/v1/chat/rooms/lobby/presence",
                platform.base
            ))
            .bearer_auth(&alice_token)
            .fetch_json()
            .await;
        assert_eq!(presence["members"].as_array().unwrap().len(), 2);
        let history = platform
            .client
            .get(format!(
                "{}/api/v1/chat/rooms/lobby/history?limit=10",
                platform.base
            ))
            .bearer_auth(&alice_token)
            .send()
            .await
            .unwrap();
        assert_eq!(history.status(), StatusCode::OK);
        assert!(history.headers().contains_key("x-ratelimit-limit"));
        let history: Value = history.json().await.unwrap();
        assert_eq!(history["messages"][0]["content"], "hello @bobby");

        // Chat's own limits reach the client unchanged: an oversized frame
        // is closed by chat with 1009, relayed through the gateway.
        alice
            .send(ws::Message::Text("x".repeat(4096).into()))
            .await
            .unwrap();
        let code = loop {
            match tokio::time::timeout(Duration::from_secs(5), alice.next())
                .await
                .unwrap()
            {
                Some(Ok(Frame::Close(reason))) => break reason.map(|r| r.code),
                Some(Ok(_)) => {}
                other => panic!("expected a close, got {other:?}"),
            }
        };
        assert_eq!(code, Some(CloseCode::Size));

        // Bob is unaffected and sees alice leave.
        let left = next_of(&mut bob, "presence").await;
        assert_eq!(left["action"], "leave");
    })
    .await;
}

#[tokio::test]
async fn upgrades_without_a_valid_token_are_refused_before_chat_is_asked() {
    local(async {
        let platform = Platform::start().await;
        let _chat = platform
            .start_chat(&[("CHAT_MAX_FRAME_BYTES", "1024")])
            .await;
        let forged = format!(
            "{}.{}.",
            base64_url(r#"{"alg":"none","typ":"JWT"}"#),
            base64_url(r#"{"sub":"1","name":"x","exp":9999999999,"iat":0}"#)
        );
        for token in [None, Some("garbage"), Some(forged.as_str())] {
            let mut request = platform
                .client
                .get(ws_url(&platform).replacen("ws", "http", 1));
            request = request
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-version", "13")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            problem(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
        }
        let plain = platform
            .client
            .get(format!("{}/api/v1/chat/rooms", platform.base))
            .send()
            .await
            .unwrap();
        problem(plain, StatusCode::UNAUTHORIZED, "unauthorized").await;
    })
    .await;
}

#[tokio::test]
async fn a_plain_get_on_the_websocket_route_is_a_bad_request() {
    local(async {
        let platform = Platform::start().await;
        platform.sign_up("carol").await;
        let token = platform.login("carol").await;
        let response = platform
            .client
            .get(ws_url(&platform).replacen("ws", "http", 1))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        problem(
            response,
            StatusCode::BAD_REQUEST,
            "websocket_upgrade_required",
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn without_a_chat_replica_the_upgrade_is_a_503_problem() {
    local(async {
        let platform = Platform::start().await;
        platform.sign_up("dave1").await;
        let token = platform.login("dave1").await;
        match awc::Client::new()
            .ws(ws_url(&platform))
            .bearer_auth(&token)
            .connect()
            .await
        {
            Err(awc::error::WsClientError::InvalidResponseStatus(status)) => {
                assert_eq!(status, 503);
            }
            other => panic!("expected 503, got {:?}", other.map(|(r, _)| r.status())),
        }
    })
    .await;
}

#[tokio::test]
async fn when_chat_shuts_down_its_1001_reaches_the_client_through_the_gateway() {
    local(async {
        let platform = Platform::start().await;
        let chat = platform
            .start_chat(&[("CHAT_MAX_FRAME_BYTES", "1024")])
            .await;
        platform.sign_up("frank").await;
        let token = platform.login("frank").await;
        let mut socket = connect(&platform, &token).await;
        send(&mut socket, json!({"type": "join", "room": "r"})).await;
        next_of(&mut socket, "joined").await;

        chat.stop().await;
        let code = loop {
            match tokio::time::timeout(Duration::from_secs(10), socket.next())
                .await
                .expect("the gateway closes the client within 10 s")
            {
                Some(Ok(Frame::Close(reason))) => break reason.map(|r| r.code),
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        };
        assert_eq!(code, Some(CloseCode::Away), "chat's 1001, relayed");
    })
    .await;
}

#[tokio::test]
async fn a_draining_gateway_closes_relayed_websockets_with_1001() {
    local(async {
        let platform = Platform::start().await;
        let _chat = platform
            .start_chat(&[("CHAT_MAX_FRAME_BYTES", "1024")])
            .await;
        platform.sign_up("grace").await;
        let token = platform.login("grace").await;
        let mut socket = connect(&platform, &token).await;
        send(&mut socket, json!({"type": "join", "room": "r"})).await;
        next_of(&mut socket, "joined").await;

        let Platform { gateway, .. } = platform;
        let stopping = tokio::spawn(gateway.stop());
        let code = loop {
            match tokio::time::timeout(Duration::from_secs(10), socket.next())
                .await
                .expect("closed within 10 s")
            {
                Some(Ok(Frame::Close(reason))) => break reason.map(|r| r.code),
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        };
        assert_eq!(code, Some(CloseCode::Away));
        stopping.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_ticket_opens_one_socket_once_and_a_token_in_the_url_opens_none() {
    local(async {
        let platform = Platform::start_with(&[("GATEWAY_TICKET_TTL", "1s")]).await;
        let _chat = platform.start_chat(&[]).await;
        platform.sign_up("alice").await;
        let token = platform.login("alice").await;

        let first = ticket(&platform, &token).await;
        let url = format!("{}?ticket={first}", ws_url(&platform));
        assert_eq!(upgrade_status(url.clone()).await, 101);
        assert_eq!(upgrade_status(url).await, 401, "a ticket is single-use");

        // Unredeemed, it expires with GATEWAY_TICKET_TTL.
        let stale = ticket(&platform, &token).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let url = format!("{}?ticket={stale}", ws_url(&platform));
        assert_eq!(upgrade_status(url).await, 401, "an expired ticket");

        let url = format!("{}?access_token={token}", ws_url(&platform));
        assert_eq!(upgrade_status(url).await, 401, "a token in the URL");
        let url = format!("{}?ticket=made-up", ws_url(&platform));
        assert_eq!(upgrade_status(url).await, 401, "a forged ticket");

        // Only a signed-in caller gets one.
        let anonymous = platform
            .client
            .post(format!("{}/api/v1/auth/ticket", platform.base))
            .send()
            .await
            .unwrap();
        problem(anonymous, StatusCode::UNAUTHORIZED, "unauthorized").await;

        // A signed-out session's ticket opens nothing.
        let orphan = ticket(&platform, &token).await;
        let out = platform
            .client
            .post(format!("{}/api/v1/auth/logout", platform.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(out.status(), StatusCode::NO_CONTENT);
        let url = format!("{}?ticket={orphan}", ws_url(&platform));
        assert_eq!(upgrade_status(url).await, 401, "the session ended");
        // Nor does the token reach chat's REST API: chat checks only the
        // signature, so the gateway checks the revocation first.
        for path in [
            "rooms",
            "rooms/lobby",
            "rooms/lobby/history",
            "rooms/lobby/presence",
        ] {
            let res = platform
                .client
                .get(format!("{}/api/v1/chat/{path}", platform.base))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            problem(res, StatusCode::UNAUTHORIZED, "unauthorized").await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_private_room_made_through_the_gateway_is_closed_to_non_members() {
    local(async {
        let platform = Platform::start().await;
        let _chat = platform.start_chat(&[]).await;
        let alice = platform.sign_up("alice").await;
        platform.sign_up("bobby").await;
        let alice_token = platform.login("alice").await;
        let bob_token = platform.login("bobby").await;
        let alice_id = alice["id"].as_u64().unwrap();

        let created = platform
            .client
            .post(format!("{}/api/v1/chat/rooms", platform.base))
            .bearer_auth(&alice_token)
            .json(&json!({"name": "plans", "private": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED);
        let body: Value = created.json().await.unwrap();
        assert_eq!(body["members"], json!([alice_id]));

        let history = platform
            .client
            .get(format!("{}/api/v1/chat/rooms/plans/history", platform.base))
            .bearer_auth(&bob_token)
            .send()
            .await
            .unwrap();
        problem(history, StatusCode::FORBIDDEN, "forbidden").await;
        let mut bob = connect(&platform, &bob_token).await;
        send(&mut bob, json!({"type": "join", "room": "plans"})).await;
        let refused = next_of(&mut bob, "error").await;
        assert_eq!(refused["code"], "forbidden");

        let mut owner = connect(&platform, &alice_token).await;
        send(&mut owner, json!({"type": "join", "room": "plans"})).await;
        next_of(&mut owner, "joined").await;
    })
    .await;
}

/// `gateway_websockets_open` from the gateway's admin listener.
async fn open_sockets(platform: &Platform) -> f64 {
    let text = platform.metrics().await;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("gateway_websockets_open ")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_and_nobody_else_waits_for_it() {
    local(async {
        let platform =
            Platform::start_with(&[("GATEWAY_WS_QUEUE", "8"), ("GATEWAY_WS_SEND_TIMEOUT", "2s")])
                .await;
        let _chat = platform
            .start_chat(&[
                ("CHAT_MAX_FRAME_BYTES", "65536"),
                ("CHAT_MAX_MESSAGE_CHARS", "16000"),
                ("CHAT_MESSAGES_PER_SECOND", "100000"),
                ("CHAT_MESSAGE_BURST", "100000"),
                ("CHAT_QUEUE_SIZE", "100000"),
            ])
            .await;
        platform.sign_up("carol").await;
        platform.sign_up("dave1").await;
        let mut slow = connect(&platform, &platform.login("carol").await).await;
        send(&mut slow, json!({"type": "join", "room": "flood"})).await;
        next_of(&mut slow, "joined").await;
        // From here on carol reads nothing.

        let fast = connect(&platform, &platform.login("dave1").await).await;
        let (mut sink, mut stream) = fast.split();
        sink.send(ws::Message::Text(
            json!({"type": "join", "room": "flood"}).to_string().into(),
        ))
        .await
        .unwrap();
        const MESSAGES: usize = 1000;
        let reader = tokio::task::spawn_local(async move {
            let mut acks = 0;
            while acks < MESSAGES {
                let frame = tokio::time::timeout(Duration::from_secs(10), stream.next())
                    .await
                    .unwrap_or_else(|_| panic!("dave's frames keep flowing ({acks} acks)"))
                    .expect("dave's socket stays open")
                    .unwrap();
                if let Frame::Close(reason) = &frame {
                    panic!("dave closed after {acks} acks: {reason:?}");
                }
                if let Frame::Text(text) = frame {
                    let value: Value = serde_json::from_slice(&text).unwrap();
                    if value["type"] == "ack" {
                        acks += 1;
                    }
                }
            }
            acks
        });
        // 16 MB: more than loopback's socket buffers hold for a client
        // that does not read.
        let content = "x".repeat(16_000);
        for _ in 0..MESSAGES {
            sink.send(ws::Message::Text(
                json!({"type": "send", "room": "flood", "content": content})
                    .to_string()
                    .into(),
            ))
            .await
            .unwrap();
        }
        assert_eq!(
            reader.await.unwrap(),
            MESSAGES,
            "the reading client is served in full"
        );
        test_support::eventually(
            Duration::from_secs(10),
            "the gateway to close the client that stopped reading",
            || async { open_sockets(&platform).await == 1.0 },
        )
        .await;
        let text = platform.metrics().await;
        assert!(
            text.lines()
                .any(|l| l.starts_with("gateway_websockets_closed_slow_total ")),
            "closed by the gateway's send timeout, not by chat"
        );
        drop(slow);
        let Platform { gateway, .. } = platform;
        tokio::time::timeout(Duration::from_secs(15), gateway.stop())
            .await
            .expect("the gateway drains with a stuck client behind it");
    })
    .await;
}
