//! The chat service through real WebSocket connections on a random port.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // test clients of servers the test starts

use std::time::Duration;
use test_support::http::FetchJson;

use actix_web::web::Bytes;
use awc::ws::{self, CloseCode, Frame};
use chat::test_util::token;
use common::service::Shared;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use test_support::http::problem;

type Server = chat::test_util::TestApp;

async fn server(vars: &[(&str, &str)]) -> Server {
    chat::test_util::spawn_app(vars, &Shared::default()).await
}

type Socket = actix_codec::Framed<awc::BoxedSocket, ws::Codec>;

struct Client {
    socket: Socket,
}

impl Client {
    async fn connect(server: &Server, id: u64, name: &str) -> Self {
        Self::connect_with(server, &token(id, name)).await
    }

    async fn connect_with(server: &Server, token: &str) -> Self {
        let (response, socket) = awc::Client::new()
            .ws(&server.ws)
            .bearer_auth(token)
            .max_frame_size(1 << 20)
            .connect()
            .await
            .unwrap();
        assert_eq!(response.status(), 101);
        Self { socket }
    }

    async fn send(&mut self, frame: Value) {
        self.socket
            .send(ws::Message::Text(frame.to_string().into()))
            .await
            .unwrap();
    }

    /// The next JSON frame, answering pings on the way.
    async fn next(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), self.socket.next())
                .await
                .expect("a frame within 5 s")
                .expect("the connection is open")
                .unwrap();
            match frame {
                Frame::Text(text) => return serde_json::from_slice(&text).unwrap(),
                Frame::Ping(bytes) => self.socket.send(ws::Message::Pong(bytes)).await.unwrap(),
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// The next frame of `kind`, skipping presence and typing chatter.
    async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let frame = self.next().await;
            if frame["type"] == kind {
                return frame;
            }
            assert!(
                ["presence", "typing", "message"].contains(&frame["type"].as_str().unwrap()),
                "waiting for {kind}, got {frame}"
            );
        }
    }

    /// The next presence change of user `id`.
    async fn presence_of(&mut self, id: u64) -> Value {
        loop {
            let frame = self.next_of("presence").await;
            if frame["user"]["id"] == id {
                return frame;
            }
        }
    }

    async fn join(&mut self, room: &str) -> Value {
        self.send(json!({"type": "join", "room": room})).await;
        self.next_of("joined").await
    }

    /// Reads until the server closes; returns the close code.
    async fn closed(&mut self) -> Option<CloseCode> {
        self.close_reason().await.map(|(code, _)| code)
    }

    /// The close frame's code and reason text.
    async fn close_reason(&mut self) -> Option<(CloseCode, String)> {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(10), self.socket.next())
                .await
                .expect("closed within 10 s");
            match frame {
                Some(Ok(Frame::Close(reason))) => {
                    return reason.map(|r| (r.code, r.description.unwrap_or_default()));
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return None,
            }
        }
    }
}

async fn run<F: std::future::Future<Output = ()>>(test: F) {
    tokio::task::LocalSet::new().run_until(test).await;
}

#[tokio::test]
async fn messages_reach_every_member_as_the_authenticated_user_with_offsets() {
    run(async {
        let server = server(&[]).await;
        let mut alice = Client::connect(&server, 1, "alice").await;
        let mut bob = Client::connect(&server, 2, "bob").await;
        let joined = alice.join("general").await;
        assert_eq!(joined["position"]["offset"], 0);
        assert_eq!(joined["recovered"], true);
        bob.join("general").await;
        let presence = alice.presence_of(2).await;
        assert_eq!(presence["user"], json!({"id": 2, "name": "bob"}));
        assert_eq!(presence["action"], "join");

        alice
            .send(
                json!({"type": "send", "room": "general", "content": "hi @bob", "client_id": "c1"}),
            )
            .await;
        let ack = alice.next_of("ack").await;
        assert_eq!(ack["client_id"], "c1");
        assert_eq!(ack["offset"], 1);
        for client in [&mut alice, &mut bob] {
            let message = client.next_of("message").await;
            assert_eq!(message["content"], "hi @bob");
            assert_eq!(message["user"], json!({"id": 1, "name": "alice"}));
            assert_eq!(message["offset"], 1);
            assert_eq!(message["epoch"], joined["position"]["epoch"]);
            assert_eq!(message["id"], ack["id"]);
        }

        // A client cannot claim to be someone else: unknown fields are refused.
        alice
            .send(json!({"type": "send", "room": "general", "content": "x", "user": "bob"}))
            .await;
        assert_eq!(alice.next_of("error").await["code"], "bad_frame");

        // The mention became events for the notifications service.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let events = server.bus.published("chat.events");
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        assert_eq!(types, ["MessagePosted", "UserMentioned"]);
        let mention: Value = serde_json::from_slice(&events[1].data).unwrap();
        assert_eq!(mention["mentioned_username"], "bob");
        assert_eq!(mention["by_username"], "alice");
        assert_eq!(events[1].subject, "general");
    })
    .await;
}

#[tokio::test]
async fn upgrades_without_a_valid_token_are_refused() {
    run(async {
        let server = server(&[]).await;
        let client = awc::Client::new();
        let cases = [
            None,
            Some("garbage".to_owned()),
            Some(chat::test_util::signed_with(
                "another key entirely, 32 bytes!!",
                1,
                "x",
                Duration::from_secs(60),
            )),
        ];
        for token in cases {
            let mut request = client.ws(&server.ws);
            if let Some(token) = &token {
                request = request.bearer_auth(token);
            }
            match request.connect().await {
                Err(awc::error::WsClientError::InvalidResponseStatus(status)) => {
                    assert_eq!(status, 401, "{token:?}");
                }
                other => panic!(
                    "{token:?}: expected 401, got {:?}",
                    other.map(|(r, _)| r.status())
                ),
            }
        }
        // A valid token in the URL is refused too: URLs are logged.
        let url = format!("{}?access_token={}", server.ws, token(5, "eve"));
        match client.ws(url).connect().await {
            Err(awc::error::WsClientError::InvalidResponseStatus(status)) => {
                assert_eq!(status, 401);
            }
            other => panic!("a token in the URL: {:?}", other.map(|(r, _)| r.status())),
        }
    })
    .await;
}

#[tokio::test]
async fn presence_is_served_over_rest_and_follows_leaves() {
    run(async {
        let server = server(&[]).await;
        let mut alice = Client::connect(&server, 1, "alice").await;
        let mut bob = Client::connect(&server, 2, "bob").await;
        alice.join("team").await;
        bob.join("team").await;
        let http = reqwest::Client::new();
        let presence = |http: reqwest::Client, base: String| async move {
            http.get(format!("{base}/rooms/team/presence"))
                .bearer_auth(token(1, "alice"))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        };
        let both = presence(http.clone(), server.base.clone()).await;
        assert_eq!(
            both["members"],
            json!([{"id": 1, "name": "alice"}, {"id": 2, "name": "bob"}])
        );

        bob.send(json!({"type": "leave", "room": "team"})).await;
        assert_eq!(bob.next_of("left").await["room"], "team");
        assert_eq!(alice.presence_of(2).await["action"], "join");
        assert_eq!(alice.presence_of(2).await["action"], "leave");
        let one = presence(http.clone(), server.base.clone()).await;
        assert_eq!(one["members"], json!([{"id": 1, "name": "alice"}]));

        let anonymous = http
            .get(format!("{}/rooms/team/presence", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), 401);
        let bad_room = http
            .get(format!("{}/rooms/no%20spaces/presence", server.base))
            .bearer_auth(token(1, "alice"))
            .send()
            .await
            .unwrap();
        assert_eq!(bad_room.status(), 400);
    })
    .await;
}

#[tokio::test]
async fn every_refusal_is_a_problem_body_in_the_platforms_one_shape() {
    run(async {
        let server = server(&[("CHAT_MAX_CONNECTIONS_PER_USER", "1")]).await;
        let http = reqwest::Client::new();
        let anonymous = http
            .get(format!("{}/rooms", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
        problem(anonymous, 401, "unauthorized").await;

        let plain_get = http
            .get(format!("{}/ws", server.base))
            .bearer_auth(token(1, "alice"))
            .send()
            .await
            .unwrap();
        problem(plain_get, 400, "websocket_upgrade_required").await;

        let bad_room = http
            .get(format!("{}/rooms/no%20spaces/history", server.base))
            .bearer_auth(token(1, "alice"))
            .send()
            .await
            .unwrap();
        problem(bad_room, 400, "bad_room").await;

        let _first = Client::connect(&server, 1, "alice").await;
        let second = awc::Client::new()
            .ws(&server.ws)
            .bearer_auth(token(1, "alice"))
            .connect()
            .await;
        match second {
            Err(awc::error::WsClientError::InvalidResponseStatus(status)) => {
                assert_eq!(status, 429)
            }
            other => panic!("expected 429, got {:?}", other.map(|(r, _)| r.status())),
        }
        let refused = http
            .get(format!("{}/ws", server.base))
            .bearer_auth(token(1, "alice"))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.headers()["retry-after"], "5");
        problem(refused, 429, "too_many_connections").await;
    })
    .await;
}

#[tokio::test]
async fn a_reconnecting_client_recovers_what_it_missed_or_is_told_it_cannot() {
    run(async {
        let server = server(&[("CHAT_HISTORY_SIZE", "3")]).await;
        let mut alice = Client::connect(&server, 1, "alice").await;
        let epoch = alice.join("r").await["position"]["epoch"].clone();
        for i in 1..=4 {
            alice
                .send(json!({"type": "send", "room": "r", "content": format!("m{i}")}))
                .await;
            alice.next_of("ack").await;
        }
        let rejoin = |offset: u64, epoch: Value| json!({"type": "join", "room": "r", "since": {"offset": offset, "epoch": epoch}});

        let mut bob = Client::connect(&server, 2, "bob").await;
        bob.send(rejoin(2, epoch.clone())).await;
        let joined = bob.next_of("joined").await;
        assert_eq!(joined["recovered"], true);
        let offsets: Vec<u64> = joined["missed"].as_array().unwrap().iter().map(|m| m["offset"].as_u64().unwrap()).collect();
        assert_eq!(offsets, [3, 4]);
        assert_eq!(joined["position"]["offset"], 4);

        // Trimmed: only the last three are kept, so offset 1 is gone.
        let mut carol = Client::connect(&server, 3, "carol").await;
        carol.send(rejoin(0, epoch.clone())).await;
        let trimmed = carol.next_of("joined").await;
        assert_eq!(trimmed["recovered"], false);
        assert_eq!(trimmed["missed"], json!([]));

        // Another epoch (a restarted or expired room): reload.
        let mut dave = Client::connect(&server, 4, "dave").await;
        dave.send(rejoin(3, json!("not-this-one"))).await;
        assert_eq!(dave.next_of("joined").await["recovered"], false);

        let history: Value = reqwest::Client::new()
            .get(format!("{}/rooms/r/history?limit=2", server.base))
            .bearer_auth(token(1, "alice"))
            .fetch_json().await;
        let contents: Vec<&str> = history["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
        assert_eq!(contents, ["m3", "m4"]);
        // The bounds the API document states are enforced, not clamped.
        for limit in ["0", "1001"] {
            let res = reqwest::Client::new()
                .get(format!("{}/rooms/r/history?limit={limit}", server.base))
                .bearer_auth(token(1, "alice"))
                .send()
                .await
                .unwrap();
            problem(res, 400, "bad_query").await;
        }
    })
    .await;
}

#[tokio::test]
async fn bad_frames_get_errors_and_the_connection_stays_open() {
    run(async {
        let server = server(&[("CHAT_MAX_MESSAGE_CHARS", "10")]).await;
        let mut alice = Client::connect(&server, 1, "alice").await;
        alice
            .socket
            .send(ws::Message::Text("{not json".into()))
            .await
            .unwrap();
        assert_eq!(alice.next().await["code"], "bad_frame");
        alice
            .send(json!({"type": "join", "room": "no spaces"}))
            .await;
        assert_eq!(alice.next().await["code"], "bad_room");
        alice
            .send(json!({"type": "send", "room": "elsewhere", "content": "x"}))
            .await;
        assert_eq!(alice.next().await["code"], "not_joined");
        alice.join("r").await;
        alice
            .send(json!({"type": "send", "room": "r", "content": "far too long for ten"}))
            .await;
        assert_eq!(alice.next_of("error").await["code"], "bad_message");
        alice
            .send(json!({"type": "send", "room": "r", "content": "   "}))
            .await;
        assert_eq!(alice.next_of("error").await["code"], "bad_message");
        alice
            .socket
            .send(ws::Message::Binary(Bytes::from_static(b"\x00")))
            .await
            .unwrap();
        assert_eq!(alice.next_of("error").await["code"], "unsupported");
        alice
            .send(json!({"type": "send", "room": "r", "content": "still ok"}))
            .await;
        assert_eq!(alice.next_of("ack").await["offset"], 1);
    })
    .await;
}

#[tokio::test]
async fn a_flooding_client_is_rate_limited() {
    run(async {
        let server = server(&[
            ("CHAT_MESSAGES_PER_SECOND", "1"),
            ("CHAT_MESSAGE_BURST", "3"),
        ])
        .await;
        let mut alice = Client::connect(&server, 1, "alice").await;
        alice.join("r").await; // takes one token
        for _ in 0..4 {
            alice
                .send(json!({"type": "send", "room": "r", "content": "spam"}))
                .await;
        }
        let mut acks = 0;
        let mut limited = 0;
        while acks + limited < 4 {
            let frame = alice.next().await;
            match frame["type"].as_str() {
                Some("ack") => acks += 1,
                Some("error") if frame["code"] == "rate_limited" => limited += 1,
                _ => {}
            }
        }
        assert_eq!((acks, limited), (2, 2));

        // Ignoring rate_limited for a whole burst more ends the connection
        // with 1008; the room carries on for everyone else.
        let mut bob = Client::connect(&server, 2, "bob").await;
        bob.join("r").await;
        for _ in 0..10 {
            alice
                .send(json!({"type": "send", "room": "r", "content": "spam"}))
                .await;
        }
        assert_eq!(alice.closed().await, Some(CloseCode::Policy));
        tokio::time::sleep(Duration::from_millis(1100)).await;
        bob.send(json!({"type": "send", "room": "r", "content": "still here"}))
            .await;
        assert_eq!(bob.next_of("ack").await["room"], "r");
    })
    .await;
}

#[tokio::test]
async fn oversized_frames_close_the_connection_with_1009() {
    run(async {
        let server = server(&[("CHAT_MAX_FRAME_BYTES", "1024")]).await;
        let mut alice = Client::connect(&server, 1, "alice").await;
        alice.join("r").await;
        let big = "x".repeat(4096);
        alice
            .send(json!({"type": "send", "room": "r", "content": big}))
            .await;
        assert_eq!(alice.closed().await, Some(CloseCode::Size));
    })
    .await;
}

#[tokio::test]
async fn connections_per_user_are_capped() {
    run(async {
        let server = server(&[("CHAT_MAX_CONNECTIONS_PER_USER", "2")]).await;
        let _one = Client::connect(&server, 1, "alice").await;
        let two = Client::connect(&server, 1, "alice").await;
        let third = awc::Client::new()
            .ws(&server.ws)
            .bearer_auth(token(1, "alice"))
            .connect()
            .await;
        assert!(
            matches!(third, Err(awc::error::WsClientError::InvalidResponseStatus(s)) if s == 429)
        );
        drop(two);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _again = Client::connect(&server, 1, "alice").await;
    })
    .await;
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_idle_timeout() {
    run(async {
        let server = server(&[("CHAT_HEARTBEAT", "100ms"), ("CHAT_IDLE_TIMEOUT", "300ms")]).await;
        let mut alice = Client::connect(&server, 1, "alice").await;
        // Never answers the server's pings.
        assert_eq!(
            alice.closed().await,
            Some(CloseCode::Other(chat::session::IDLE))
        );
    })
    .await;
}

#[tokio::test]
async fn a_socket_closes_with_4001_when_its_token_expires() {
    run(async {
        let server = server(&[]).await;
        // Lives 2 s: expiry is counted in whole seconds.
        let short = chat::test_util::token_for(1, "alice", Duration::from_secs(2));
        let mut alice = Client::connect_with(&server, &short).await;
        alice.join("general").await;
        let (code, reason) = alice.close_reason().await.expect("a close frame");
        assert_eq!(code, CloseCode::Other(chat::session::TOKEN_EXPIRED));
        // The reason tells the client what to do.
        assert!(
            reason.contains("expired") && reason.contains("reconnect"),
            "{reason}"
        );
        // A fresh token gets a fresh socket.
        let mut again = Client::connect(&server, 1, "alice").await;
        again.join("general").await;
    })
    .await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_without_slowing_the_room() {
    run(async {
        let server = server(&[
            ("CHAT_QUEUE_SIZE", "16"),
            ("CHAT_MESSAGES_PER_SECOND", "100000"),
            ("CHAT_MESSAGE_BURST", "100000"),
            ("CHAT_MAX_MESSAGE_CHARS", "20000"),
            ("CHAT_MAX_FRAME_BYTES", "65536"),
        ])
        .await;
        let mut sender = Client::connect(&server, 1, "alice").await;
        let mut reader = Client::connect(&server, 2, "bob").await;
        let mut stalled = Client::connect(&server, 3, "carol").await;
        sender.join("r").await;
        reader.join("r").await;
        stalled.join("r").await;
        // Enough to overflow the stalled client's socket buffers and then
        // its queue: 1500 × 16 KiB.
        let content = "y".repeat(16 * 1024);
        let total = 1500;
        let reading = async {
            let mut seen = 0;
            while seen < total {
                if reader.next().await["type"] == "message" {
                    seen += 1;
                }
            }
            seen
        };
        let sending = async {
            for _ in 0..total {
                sender
                    .send(json!({"type": "send", "room": "r", "content": content}))
                    .await;
                sender.next_of("ack").await;
            }
        };
        let (seen, ()) = tokio::join!(reading, sending);
        assert_eq!(seen, total, "the reading member got everything");
        assert_eq!(
            stalled.closed().await,
            Some(CloseCode::Other(chat::hub::SLOW_CONSUMER))
        );
    })
    .await;
}

#[tokio::test]
async fn a_client_that_stops_reading_its_own_replies_is_closed_within_the_send_timeout() {
    run(async {
        let server = server(&[("CHAT_SEND_TIMEOUT", "500ms")]).await;
        let mut greedy = Client::connect(&server, 7, "greedy").await;
        // Pings, never reading the pongs, until the socket takes no more:
        // chat's pongs pile up in front of a client that does not read.
        let payload = vec![b'p'; 125];
        let _ = tokio::time::timeout(Duration::from_secs(4), async {
            loop {
                let ping = ws::Message::Ping(payload.clone().into());
                if greedy.socket.send(ping).await.is_err() {
                    break;
                }
            }
        })
        .await;
        // Chat gave up on it: reading now finds the end of the stream (a
        // close frame if one still fit) instead of a session that waits on
        // the client for ever.
        let code = greedy.closed().await;
        assert!(
            matches!(
                code,
                None | Some(CloseCode::Other(chat::hub::SLOW_CONSUMER))
            ),
            "{code:?}"
        );
        let text = reqwest::get(format!("{}/metrics", server.host.admin_url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            text.contains("chat_send_timeouts_total"),
            "the timeout is counted"
        );
        // The service is unaffected: another client is served at once.
        let mut other = Client::connect(&server, 8, "other").await;
        other.join("after").await;
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn two_replicas_on_one_redis_share_rooms_presence_and_history() {
    replicas_share_rooms(test_support::backends::redis_url()).await;
}

#[tokio::test]
async fn two_replicas_on_a_redis_cluster_share_rooms_presence_and_history() {
    replicas_share_rooms(test_support::backends::redis_cluster_url()).await;
}

async fn replicas_share_rooms(redis: String) {
    run(async {
        let prefix = format!("chat-ws-test:{}:", uuid::Uuid::new_v4().simple());
        let vars = [
            ("CHAT_REDIS_URL", redis.as_str()),
            ("CHAT_REDIS_PREFIX", prefix.as_str()),
            ("CHAT_MESSAGES_PER_SECOND", "1000"),
            ("CHAT_MESSAGE_BURST", "1000"),
        ];
        let a = server(&vars).await;
        let b = server(&vars).await;
        let mut alice = Client::connect(&a, 1, "alice").await;
        let mut bob = Client::connect(&b, 2, "bob").await;
        alice.join("lobby").await;
        let joined = bob.join("lobby").await;
        assert_eq!(
            joined["presence"],
            json!([{"id": 1, "name": "alice"}, {"id": 2, "name": "bob"}]),
            "B sees who is in the room on A"
        );
        assert_eq!(alice.presence_of(2).await["action"], "join");

        alice
            .send(json!({"type": "send", "room": "lobby", "content": "from A"}))
            .await;
        alice.next_of("ack").await;
        let on_b = bob.next_of("message").await;
        assert_eq!(on_b["content"], "from A");
        assert_eq!(on_b["user"], json!({"id": 1, "name": "alice"}));
        let last = json!({"offset": on_b["offset"], "epoch": on_b["epoch"]});

        // Bob goes away; alice's room sees him leave.
        drop(bob);
        assert_eq!(alice.presence_of(2).await["action"], "leave");

        // Bob misses 50 messages and comes back through the other replica.
        for i in 0..50 {
            alice
                .send(json!({"type": "send", "room": "lobby", "content": format!("missed {i}")}))
                .await;
            alice.next_of("ack").await;
        }
        let mut bob = Client::connect(&a, 2, "bob").await;
        bob.send(json!({"type": "join", "room": "lobby", "since": last}))
            .await;
        let joined = bob.next_of("joined").await;
        assert_eq!(joined["recovered"], true);
        let missed: Vec<&str> = joined["missed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["content"].as_str().unwrap())
            .collect();
        let expected: Vec<String> = (0..50).map(|i| format!("missed {i}")).collect();
        assert_eq!(missed, expected, "exactly the 50 missed, in order");

        // One history, whichever replica is asked.
        let history = |base: String| async move {
            reqwest::Client::new()
                .get(format!("{base}/rooms/lobby/history?limit=100"))
                .bearer_auth(token(1, "alice"))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        };
        let (from_a, from_b) = (history(a.base.clone()).await, history(b.base.clone()).await);
        assert_eq!(from_a, from_b);
        assert_eq!(from_a["messages"].as_array().unwrap().len(), 51);
    })
    .await;
}

#[tokio::test]
async fn large_rooms_do_not_announce_every_join_or_send_the_member_list() {
    run(async {
        let server = server(&[("CHAT_LARGE_ROOM", "2")]).await;
        let mut alice = Client::connect(&server, 1, "alice").await;
        let mut bob = Client::connect(&server, 2, "bob").await;
        let mut carol = Client::connect(&server, 3, "carol").await;
        alice.join("big").await;
        let joined = bob.join("big").await;
        assert_eq!(joined["members"], 2);
        assert_eq!(joined["presence"].as_array().unwrap().len(), 2);
        assert_eq!(alice.presence_of(2).await["action"], "join");

        let joined = carol.join("big").await;
        assert_eq!(joined["members"], 3, "the count is always there");
        assert_eq!(joined["presence"], json!([]), "the list is not");
        alice
            .send(json!({"type": "send", "room": "big", "content": "hi"}))
            .await;
        let next = alice.next().await;
        assert_ne!(next["type"], "presence", "carol's join was not announced");
        assert_eq!(carol.next_of("message").await["content"], "hi");
    })
    .await;
}

#[tokio::test]
async fn a_rooms_messages_arrive_in_order_and_stay_in_that_room() {
    run(async {
        let server = server(&[("CHAT_MESSAGE_BURST", "100")]).await;
        let mut alice = Client::connect(&server, 1, "alice").await;
        let mut bob = Client::connect(&server, 2, "bob").await;
        let mut carol = Client::connect(&server, 3, "carol").await;
        alice.join("one").await;
        bob.join("one").await;
        carol.join("two").await;
        for i in 0..30 {
            alice
                .send(json!({"type": "send", "room": "one", "content": format!("m{i}")}))
                .await;
        }
        carol
            .send(json!({"type": "send", "room": "two", "content": "elsewhere"}))
            .await;
        for i in 0..30 {
            let message = bob.next_of("message").await;
            assert_eq!(message["content"], format!("m{i}"));
            assert_eq!(message["offset"], i + 1);
        }
        // Carol hears only her own room: the ack and her own message.
        let mut kinds = Vec::new();
        while kinds.len() < 2 {
            let frame = carol.next().await;
            assert_eq!(frame["room"], "two", "{frame}");
            if frame["type"] != "presence" {
                kinds.push(frame["type"].as_str().unwrap().to_owned());
            }
        }
        kinds.sort();
        assert_eq!(kinds, ["ack", "message"]);
        carol.send(json!({"type": "typing", "room": "two"})).await;
        assert_eq!(
            carol.next_of("typing").await["room"],
            "two",
            "nothing from room one came first"
        );
    })
    .await;
}

#[tokio::test]
async fn shutting_down_closes_every_session_with_1001() {
    run(async {
        let server = server(&[]).await;
        let mut alice = Client::connect(&server, 1, "alice").await;
        alice.join("r").await;
        let (code, ()) = tokio::join!(alice.closed(), server.stop());
        assert_eq!(code, Some(CloseCode::Away));
    })
    .await;
}

async fn create_room(server: &Server, token: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/rooms", server.base))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_non_member_can_neither_join_nor_read_a_private_room() {
    run(async {
        let server = server(&[]).await;
        let created = create_room(
            &server,
            &token(1, "alice"),
            json!({"name": "secret", "private": true, "members": [2]}),
        )
        .await;
        assert_eq!(created.status(), 201);
        assert_eq!(created.headers()["location"], "/rooms/secret");
        let body: Value = created.json().await.unwrap();
        assert_eq!(
            body,
            json!({"room": "secret", "private": true, "owner": 1, "members": [1, 2]})
        );

        let mut alice = Client::connect(&server, 1, "alice").await;
        let mut bob = Client::connect(&server, 2, "bob").await;
        let mut eve = Client::connect(&server, 3, "eve").await;
        alice.join("secret").await;
        bob.join("secret").await;
        alice
            .send(json!({"type": "send", "room": "secret", "content": "for bob only"}))
            .await;
        alice.next_of("ack").await;

        eve.send(json!({"type": "join", "room": "secret"})).await;
        let refused = eve.next_of("error").await;
        assert_eq!(refused["code"], "forbidden");
        assert_eq!(refused["room"], "secret");
        eve.send(json!({"type": "send", "room": "secret", "content": "hi"}))
            .await;
        assert_eq!(eve.next_of("error").await["code"], "not_joined");

        let http = reqwest::Client::new();
        for what in ["history", "presence"] {
            let res = http
                .get(format!("{}/rooms/secret/{what}", server.base))
                .bearer_auth(token(3, "eve"))
                .send()
                .await
                .unwrap();
            problem(res, 403, "forbidden").await;
            let res = http
                .get(format!("{}/rooms/secret/{what}", server.base))
                .bearer_auth(token(2, "bob"))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "{what} for a member");
        }
        let info = http
            .get(format!("{}/rooms/secret", server.base))
            .bearer_auth(token(3, "eve"))
            .send()
            .await
            .unwrap();
        problem(info, 403, "forbidden").await;
        // Its name is not listed to outsiders either.
        let listed: Value = http
            .get(format!("{}/rooms", server.base))
            .bearer_auth(token(3, "eve"))
            .fetch_json()
            .await;
        assert_eq!(listed["rooms"], json!([]));
        let listed: Value = http
            .get(format!("{}/rooms", server.base))
            .bearer_auth(token(2, "bob"))
            .fetch_json()
            .await;
        assert_eq!(listed["rooms"], json!(["secret"]));

        // Public rooms stay open to everyone.
        eve.join("lobby").await;
    })
    .await;
}

#[tokio::test]
async fn a_room_in_use_or_claimed_cannot_be_taken_and_bad_bodies_are_refused() {
    run(async {
        let server = server(&[]).await;
        let mut alice = Client::connect(&server, 1, "alice").await;
        alice.join("lobby").await;
        let taken = create_room(
            &server,
            &token(3, "eve"),
            json!({"name": "lobby", "private": true}),
        )
        .await;
        problem(taken, 409, "room_exists").await;

        let first = create_room(
            &server,
            &token(1, "alice"),
            json!({"name": "team", "private": true}),
        )
        .await;
        assert_eq!(first.status(), 201);
        let again = create_room(&server, &token(3, "eve"), json!({"name": "team"})).await;
        problem(again, 409, "room_exists").await;

        for (body, status, code) in [
            (json!({"name": "a b"}), 400, "bad_room"),
            (
                json!({"name": "open", "members": [2]}),
                400,
                "invalid_field",
            ),
            (
                json!({"name": "x", "private": true, "members": [0]}),
                400,
                "invalid_field",
            ),
            (json!({"name": "x", "owner": 2}), 400, "invalid_json"),
        ] {
            let res = create_room(&server, &token(1, "alice"), body.clone()).await;
            problem(res, status, code).await;
        }
        let anonymous = reqwest::Client::new()
            .post(format!("{}/rooms", server.base))
            .json(&json!({"name": "x"}))
            .send()
            .await
            .unwrap();
        problem(anonymous, 401, "unauthorized").await;
    })
    .await;
}

#[tokio::test]
async fn a_room_creation_retried_with_its_idempotency_key_gets_the_same_answer_on_every_backend() {
    run(async {
        let redis = test_support::backends::redis_url();
        let prefix = format!("chat-idem-{}:", uuid::Uuid::new_v4().simple());
        let memory = server(&[]).await;
        let shared = server(&[
            ("CHAT_REDIS_URL", redis.as_str()),
            ("CHAT_REDIS_PREFIX", prefix.as_str()),
        ])
        .await;
        for (backend, server) in [("memory", &memory), ("redis", &shared)] {
            let post = |key: &str, body: Value| {
                reqwest::Client::new()
                    .post(format!("{}/rooms", server.base))
                    .bearer_auth(token(1, "alice"))
                    .header("Idempotency-Key", key)
                    .json(&body)
                    .send()
            };
            let body = json!({"name": "ops", "private": true, "members": [2]});
            let first = post("k-1", body.clone()).await.unwrap();
            assert_eq!(first.status(), 201, "{backend}");
            let first: Value = first.json().await.unwrap();
            // Someone joins meanwhile: the room is in use, yet the retry is
            // recognised as the creation it repeats.
            let mut alice = Client::connect(server, 1, "alice").await;
            alice.join("ops").await;
            let again = post("k-1", body.clone()).await.unwrap();
            assert_eq!(
                again.status(),
                201,
                "{backend}: a retry is answered as the first was"
            );
            assert_eq!(again.json::<Value>().await.unwrap(), first, "{backend}");
            problem(
                post("k-1", json!({"name": "ops2"})).await.unwrap(),
                422,
                "idempotency_key_reused",
            )
            .await;
            // Another caller's same key is another key.
            let eve = reqwest::Client::new()
                .post(format!("{}/rooms", server.base))
                .bearer_auth(token(3, "eve"))
                .header("Idempotency-Key", "k-1")
                .json(&body)
                .send()
                .await
                .unwrap();
            problem(eve, 409, "room_exists").await;
            // Without a key a repeat is a conflict, as before.
            let plain = create_room(server, &token(1, "alice"), body.clone()).await;
            problem(plain, 409, "room_exists").await;
            problem(
                post("", body.clone()).await.unwrap(),
                400,
                "invalid_idempotency_key",
            )
            .await;
        }
        memory.stop().await;
        shared.stop().await;
    })
    .await;
}
