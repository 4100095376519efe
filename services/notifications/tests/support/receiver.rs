//! A webhook receiver of the test's own: it records every request and
//! answers from a script (its last answer repeating), as a customer's
//! endpoint that fails, recovers or redirects would.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

/// What the receiver answers to one request.
#[derive(Clone, Debug)]
pub enum Answer {
    Status(u16),
    /// 302 to this URL.
    Redirect(String),
}

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Hit {
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Hit {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", String::as_str)
    }
}

#[derive(Default)]
struct State {
    script: Vec<Answer>,
    hits: Vec<Hit>,
}

pub struct Receiver {
    /// `127.0.0.1:<port>`, for `WEBHOOK_HTTP_ALLOWED`.
    pub authority: String,
    /// The URL to register.
    pub url: String,
    state: Arc<Mutex<State>>,
    handle: ServerHandle,
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Mutex<State>>,
) -> HttpResponse {
    let mut state = state.lock().unwrap();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    state.hits.push(Hit {
        headers,
        body: body.to_vec(),
    });
    let n = state.hits.len();
    let answer = state
        .script
        .get(n - 1)
        .or(state.script.last())
        .cloned()
        .unwrap_or(Answer::Status(204));
    match answer {
        Answer::Status(code) => {
            HttpResponse::build(actix_web::http::StatusCode::from_u16(code).unwrap()).finish()
        }
        Answer::Redirect(to) => HttpResponse::Found()
            .insert_header(("location", to))
            .finish(),
    }
}

impl Receiver {
    /// Listens on a random loopback port, answering `script` in order.
    pub fn start(script: Vec<Answer>) -> Self {
        let state = Arc::new(Mutex::new(State {
            script,
            hits: Vec::new(),
        }));
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(receive))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
        let authority = server.addrs()[0].to_string();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            url: format!("http://{authority}/hooks/notifications"),
            authority,
            state,
            handle,
        }
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.state.lock().unwrap().hits.clone()
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}
