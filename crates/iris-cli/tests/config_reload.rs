//! Configuration reload on a live `iris serve`: a valid edit of the file is
//! applied without a restart (a team added, settings changed, a changed
//! team's process finishing its turn and then restarting with the new
//! options); an invalid one is refused whole, logged with its key path and
//! published on the bus, and the old configuration keeps working; SIGHUP
//! reloads too.

mod common;

use std::time::{Duration, Instant};

use common::*;

use reqwest::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn config(env: &str, max_processes: u32, extra_team: bool) -> String {
    let mut c = format!(
        "api:\n  port: 0\nsettings:\n  maxProcesses: {max_processes}\n  shutdownGrace: 500\nteams:\n  demo:\n    path: .\n    agent: echo\n    env:\n      STAGE: {env}\n"
    );
    if extra_team {
        c += "  extra:\n    path: .\n    agent: echo\n";
    }
    c
}

struct Live {
    home: tempfile::TempDir,
    base: String,
    key: String,
    http: reqwest::Client,
    _server: Reap,
}

impl Live {
    async fn call(&self, method: Method, path: &str, body: Value) -> (u16, Value) {
        http(
            &self.http,
            method,
            format!("{}/api/v1{path}", self.base),
            Some(&self.key),
            body,
        )
        .await
    }

    async fn tell(&self, team: &str, message: &str) -> String {
        let (s, v) = self
            .call(
                Method::POST,
                "/teams/tell",
                json!({"toTeam": team, "message": message, "timeout": 0}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v["response"].as_str().unwrap().to_owned()
    }

    fn write(&self, text: &str) {
        // As editors do: a new file renamed over the old one.
        let tmp = self.home.path().join("config.yaml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.home.path().join("config.yaml")).unwrap();
    }

    async fn until(&self, what: &str, mut f: impl AsyncFnMut(&Live) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !f(self).await {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.home.path().join("serve.err")).unwrap_or_default()
    }
}

/// The data of the next `system` event of `kind` on the JSON-RPC socket
/// (others skipped), within 10 s each.
async fn event(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(10), recv(ws))
            .await
            .expect("an event");
        if m["params"]["event"]["kind"] == kind {
            return m["params"]["event"]["data"].clone();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_apply_live_and_bad_ones_are_refused() {
    let home = tempfile::tempdir().unwrap();
    let (server, base) = serve_in(home.path(), &config("one", 10, false));
    let key = std::fs::read_to_string(home.path().join("credentials"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("IRIS_API_KEY=").map(str::to_owned))
        .unwrap();
    let live = Live {
        home,
        base,
        key,
        http: reqwest::Client::new(),
        _server: server,
    };
    // Events of `system`, over the JSON-RPC WebSocket.
    let mut req = format!("{}/ws", live.base.replace("http", "ws"))
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", live.key).parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 1, "method": "subscribe", "params": {"events": ["system"]}}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["id"], 1);

    assert_eq!(live.tell("demo", "[[env=STAGE]]").await, "one");
    // A turn running while the team's options change finishes first.
    let slow = {
        let (client, base, key) = (live.http.clone(), live.base.clone(), live.key.clone());
        tokio::spawn(async move {
            http(
                &client,
                Method::POST,
                format!("{base}/api/v1/teams/tell"),
                Some(&key),
                json!({"toTeam": "demo", "message": "[[delay=150]] a b c d e f g", "timeout": 0}),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    live.write(&config("two", 7, true));
    let (s, v) = slow.await.unwrap();
    assert_eq!(
        (s, v["response"].as_str()),
        (200, Some("a b c d e f g")),
        "{v}"
    );
    live.until("the team added by the file appears", async |l| {
        l.call(Method::GET, "/teams", Value::Null).await.1["teams"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["name"] == "extra"))
    })
    .await;
    live.until("settings.maxProcesses is 7", async |l| {
        l.call(Method::GET, "/status", Value::Null).await.1["processes"]["maxProcesses"] == 7
    })
    .await;
    assert_eq!(
        live.tell("demo", "[[env=STAGE]]").await,
        "two",
        "the process restarted with the new env"
    );
    assert_eq!(live.tell("extra", "hello extra").await, "hello extra");
    let reloaded = event(&mut ws, "config_reloaded").await;
    assert_eq!(
        reloaded["changes"]["teamsAdded"],
        json!(["extra"]),
        "{reloaded}"
    );
    assert_eq!(reloaded["changes"]["teamsChanged"], json!(["demo"]));
    assert_eq!(reloaded["changes"]["settings"], true);

    // A file that does not validate: nothing of it applies.
    live.write("settings:\n  maxProcesses: many\nteams:\n  demo:\n    path: .\n    agent: echo\n");
    let rejected = event(&mut ws, "config_rejected").await;
    assert_eq!(rejected["keyPath"], "settings.maxProcesses", "{rejected}");
    assert!(rejected["file"].as_str().unwrap().ends_with("config.yaml"));
    assert!(live.log().contains("was not applied"), "logged");
    assert_eq!(
        live.tell("extra", "still here").await,
        "still here",
        "the old configuration works"
    );
    assert_eq!(
        live.call(Method::GET, "/status", Value::Null).await.1["processes"]["maxProcesses"],
        7
    );
    // A team whose folder does not exist: refused as well.
    live.write(&format!(
        "{}  ghost:\n    path: /no/such/folder\n",
        config("three", 7, true)
    ));
    let rejected = event(&mut ws, "config_rejected").await;
    assert_eq!(rejected["keyPath"], "teams.ghost.path", "{rejected}");
    assert_eq!(
        live.tell("demo", "[[env=STAGE]]").await,
        "two",
        "all or nothing"
    );

    // The listen address cannot change live: named in the log. SIGHUP reloads too.
    let text = config("four", 7, false).replace(
        "port: 0",
        "port: 0\n  host: 127.0.0.1\n  requestTimeout: 1234",
    );
    std::fs::write(live.home.path().join("config.yaml"), text).unwrap();
    // SAFETY: signalling the child process this test started.
    unsafe { libc::kill(live._server.0.id() as i32, libc::SIGHUP) };
    live.until("the removed team is gone", async |l| {
        l.call(Method::GET, "/teams", Value::Null).await.1["teams"]
            .as_array()
            .is_some_and(|t| t.iter().all(|t| t["name"] != "extra"))
    })
    .await;
    live.until("the restart-only change is logged", async |l| {
        l.log().contains("applied at the next start only")
    })
    .await;
    assert_eq!(live.tell("demo", "[[env=STAGE]]").await, "four");
}
