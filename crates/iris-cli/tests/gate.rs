//! The gate holds by structure: every route of the router — read from the
//! router itself — and a tower service mounted for this test answer 401
//! without a credential, except the declared public list; WebSockets that
//! authenticate with their first message close a silent socket with 1008;
//! a foreign `Host` gets 4xx everywhere and a foreign `Origin` on the
//! WebSocket upgrades 403.

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use iris_core::auth::{NewKey, Origin, Principal};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// A tower service (not an axum handler) that tells whether the gate's
/// caller reached it.
fn mounted() -> axum::Router<iris_server::AppState> {
    let svc = tower::service_fn(|req: axum::extract::Request| async move {
        let who = req
            .extensions()
            .get::<iris_server::Caller>()
            .and_then(|c| c.principal.as_ref().map(|p| p.name.clone()))
            .unwrap_or_default();
        Ok::<_, std::convert::Infallible>(axum::response::Response::new(axum::body::Body::from(
            format!("svc:{who}"),
        )))
    });
    axum::Router::new()
        .route_service("/mounted", svc)
        .nest_service("/nested", svc)
}

struct Walk {
    h: Harness,
    server: iris_server::Running,
    base: String,
    http: reqwest::Client,
}

async fn walk() -> Walk {
    let h = start(
        "api:\n  port: 0\n  rateLimit:\n    perIp: 100000/min\n  websocket:\n    authTimeout: 300\nteams:\n  demo:\n    path: .\n    agent: echo\n",
    )
    .await;
    let server = iris_server::start_with(h.iris.clone(), None, mounted())
        .await
        .unwrap();
    Walk {
        base: format!("http://{}", server.addr),
        h,
        server,
        http: reqwest::Client::new(),
    }
}

impl Walk {
    /// A request of `method` to `path` on the server.
    fn request(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        self.http.request(m, format!("{}{path}", self.base))
    }
}

/// A concrete path for a template.
fn concrete(template: &str) -> String {
    template
        .replace("{team}", "demo")
        .replace("{id}", "x")
        .replace("{name}", "get_status")
}

fn access(template: &str) -> iris_server::Access {
    iris_server::Policies::new().of(Some(template)).access
}

#[tokio::test]
async fn every_route_and_mounted_service_needs_a_credential_but_the_public_list() {
    let w = walk().await;
    let mut templates = iris_server::route_templates(w.h.iris.clone()).unwrap();
    assert!(templates.len() > 60, "{templates:?}");
    assert!(templates.contains(&"/api/teams/{team}/stream".to_owned()));
    templates.extend(["/mounted", "/nested", "/nested/deeper", "/no/such/route"].map(String::from));
    let mut public = 0;
    for template in &templates {
        let path = concrete(template);
        for method in METHODS {
            let resp = w.request(method, &path).send().await.unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            match access(template) {
                iris_server::Access::Guarded => {
                    assert_eq!(status, 401, "{method} {path}: {body}");
                    assert_eq!(body["code"], "UNAUTHORIZED", "{method} {path}: {body}");
                    assert_eq!(body["statusCode"], 401);
                    assert!(body["requestId"].is_string(), "{body}");
                }
                _ => assert_ne!(status, 401, "{method} {path} is public: {body}"),
            }
        }
        public += usize::from(access(template) == iris_server::Access::Public);
    }
    // Three probes, seven routes under each of the two API prefixes, the
    // dashboard's page (two paths), script, style, old name and `/`, and
    // the endpoint of calls forwarded between nodes (signed instead).
    assert_eq!(public, 24, "the public list");
    // Every route the lists name exists.
    for (template, _) in iris_server::Policies::new().open_routes() {
        assert!(
            templates.iter().any(|t| t == template),
            "{template} is not a route"
        );
    }

    // With a key the mounted services run, and the gate's caller reached them.
    let key =
        w.h.iris
            .auth()
            .create_key(
                NewKey {
                    name: "walker".into(),
                    role: Some("viewer".into()),
                    ..Default::default()
                },
                &Principal::local(),
                &Origin::default(),
            )
            .await
            .unwrap()
            .0;
    for path in ["/mounted", "/nested/deeper"] {
        let resp = w
            .http
            .get(format!("{}{path}", w.base))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(resp.headers().contains_key("x-request-id"));
        assert_eq!(resp.headers()["x-frame-options"], "DENY");
        assert_eq!(resp.text().await.unwrap(), "svc:walker", "{path}");
    }

    // A CORS preflight needs no credential, and the CORS layer answers it:
    // it never reaches the mounted service.
    let pre = w
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/mounted", w.base))
        .header("Origin", "http://localhost:3100")
        .header("Access-Control-Request-Method", "GET")
        .send()
        .await
        .unwrap();
    assert!(pre.status().is_success(), "{}", pre.status());
    assert!(!pre.text().await.unwrap().starts_with("svc:"));
    // A foreign Host is refused on every route, with or without a key.
    for template in &templates {
        let path = concrete(template);
        for method in METHODS {
            let resp = w
                .request(method, &path)
                .header("Host", "evil.example")
                .bearer_auth(&key)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            assert!((400..500).contains(&status), "{method} {path}: {status}");
        }
    }
    w.server.stop().await;
    w.h.stop().await;
}

#[tokio::test]
async fn websockets_close_a_silent_socket_with_1008_and_refuse_foreign_origins() {
    let w = walk().await;
    let ws_routes: Vec<String> = iris_server::route_templates(w.h.iris.clone())
        .unwrap()
        .into_iter()
        .filter(|t| access(t) == iris_server::Access::FirstMessage)
        // Socket.IO checks its handshake's `auth` and answers connect_error
        // (tests/socketio.rs), not a 1008 close.
        .filter(|t| !t.starts_with("/socket.io"))
        .collect();
    assert_eq!(ws_routes.len(), 3, "{ws_routes:?}");
    for path in &ws_routes {
        let url = format!("ws://{}{path}", w.server.addr);
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap();
        let mut closed = None;
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            match m {
                Ok(Message::Close(frame)) => {
                    closed = frame;
                    break;
                }
                Ok(_) => continue,
                Err(e) => panic!("{path}: {e}"),
            }
        }
        let frame = closed.unwrap_or_else(|| panic!("{path}: no close frame"));
        assert_eq!(u16::from(frame.code), 1008, "{path}");
        assert!(
            frame.reason.contains("credential"),
            "{path}: {}",
            frame.reason
        );

        for origin in ["https://evil.example", "null"] {
            let mut req = url.as_str().into_client_request().unwrap();
            req.headers_mut().insert("origin", origin.parse().unwrap());
            match tokio_tungstenite::connect_async(req).await {
                Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                    assert_eq!(resp.status(), 403, "{path} from {origin}");
                }
                other => panic!("{path} from {origin}: {other:?}"),
            }
        }
    }
    w.server.stop().await;
    w.h.stop().await;
}

/// An `Origin` header that is not visible ASCII is refused like a foreign
/// one, not taken for a request without an origin.
#[tokio::test]
async fn an_unreadable_origin_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = walk().await;
    let mut tcp = tokio::net::TcpStream::connect(w.server.addr).await.unwrap();
    let mut request = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nOrigin: http://\xe9vil.example\r\nConnection: close\r\n\r\n".to_vec();
    tcp.write_all(&request).await.unwrap();
    request.clear();
    let _ = tcp.read_to_end(&mut request).await;
    let answer = String::from_utf8_lossy(&request);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    w.server.stop().await;
    w.h.stop().await;
}

/// Two `Host` headers: 400 (RFC 9112 section 3.2), whichever comes first,
/// on every kind of route, with the error body.
#[tokio::test]
async fn a_request_with_two_host_headers_is_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = walk().await;
    for (first, second) in [("localhost", "evil.example"), ("evil.example", "localhost")] {
        for path in ["/healthz", "/api/v1/status", "/mounted"] {
            let mut tcp = tokio::net::TcpStream::connect(w.server.addr).await.unwrap();
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {first}\r\nHost: {second}\r\nConnection: close\r\n\r\n"
            );
            tcp.write_all(request.as_bytes()).await.unwrap();
            let mut answer = Vec::new();
            let _ = tcp.read_to_end(&mut answer).await;
            let answer = String::from_utf8_lossy(&answer);
            assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
            assert!(answer.contains("\"VALIDATION_ERROR\""), "{path}: {answer}");
        }
    }
    w.server.stop().await;
    w.h.stop().await;
}

/// Credentials tried as a WebSocket's first message count against the
/// address like those at the gate: a socket is no way around the limit.
#[tokio::test]
async fn first_message_credentials_count_against_the_address() {
    let h = start("api:\n  port: 0\n  rateLimit:\n    perIp: 4/min\nteams:\n  demo:\n    path: .\n    agent: echo\n").await;
    let server = iris_server::start(h.iris.clone(), None).await.unwrap();
    let url = format!("ws://{}/ws", server.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let mut codes = Vec::new();
    for i in 0..6 {
        let bad = serde_json::json!({"jsonrpc": "2.0", "id": i, "method": "auth", "params": {"token": "iris_sk_live_nope"}});
        send(&mut ws, bad).await;
        codes.push(recv(&mut ws).await["error"]["code"].clone());
    }
    assert_eq!(codes.first(), Some(&serde_json::json!(-32001)), "{codes:?}");
    assert_eq!(codes.last(), Some(&serde_json::json!(-32029)), "{codes:?}");
    server.stop().await;
    h.stop().await;
}
