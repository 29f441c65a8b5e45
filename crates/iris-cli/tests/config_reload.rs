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
    let url = format!("{}/ws", live.base.replace("http", "ws"));
    let mut ws = ws_connect(&url, Some(&live.key)).await;
    send(
        &mut ws,
        json!({"jsonrpc": "2.0", "id": 1, "method": "subscribe", "params": {"events": ["system"]}}),
    )
    .await;
    assert_eq!(recv(&mut ws).await["id"], 1);

    assert_eq!(live.tell("demo", "[[env=STAGE]]").await, "one");
    // A turn running while the team's options change finishes first.
    let slow = slow_tell(&live, "demo", "[[delay=150]] a b c d e f g");
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

fn serving(dir: tempfile::TempDir, server: Reap, base: String) -> Live {
    let key = key_in(dir.path());
    Live {
        home: dir,
        base,
        key,
        http: reqwest::Client::new(),
        _server: server,
    }
}

/// A turn of 12 words 150 ms apart.
const LONG: &str = "[[delay=150]] a b c d e f g h i j k l";

/// A slow turn, sent in the background: its status and answer.
fn slow_tell(live: &Live, team: &str, message: &str) -> tokio::task::JoinHandle<(u16, Value)> {
    let (client, base, key, team, message) = (
        live.http.clone(),
        live.base.clone(),
        live.key.clone(),
        team.to_owned(),
        message.to_owned(),
    );
    tokio::spawn(async move {
        http(
            &client,
            Method::POST,
            format!("{base}/api/v1/teams/tell"),
            Some(&key),
            json!({"toTeam": team, "message": message, "timeout": 0}),
        )
        .await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_caught_half_written_changes_nothing_and_costs_no_turn() {
    let home = tempfile::tempdir().unwrap();
    let text = config("one", 7, true);
    let (server, base) = serve_in(home.path(), &text);
    let live = serving(home, server, base);
    let running = slow_tell(&live, "demo", LONG);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // An editor that truncates the file, then writes it a second later.
    let file = live.home.path().join("config.yaml");
    std::fs::write(&file, "").unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    std::fs::write(&file, &text).unwrap();
    let (status, told) = running.await.unwrap();
    assert_eq!(status, 200, "{told}");
    assert_eq!(told["response"], "a b c d e f g h i j k l", "{told}");
    let (_, teams) = live.call(Method::GET, "/teams", Value::Null).await;
    assert_eq!(teams["totalTeams"], 2, "{teams}");
    let (_, status) = live.call(Method::GET, "/status", Value::Null).await;
    assert_eq!(
        status["processes"]["maxProcesses"], 7,
        "settings kept: {status}"
    );
    live.until("the empty file is refused in the log", async |l| {
        l.log().contains("the file is empty")
    })
    .await;
    // A reload that removes a team lets its running turn finish first.
    let running = slow_tell(&live, "extra", LONG);
    tokio::time::sleep(Duration::from_millis(300)).await;
    live.write(&config("one", 7, false));
    let (status, told) = running.await.unwrap();
    assert_eq!(
        (status, told["response"].as_str()),
        (200, Some("a b c d e f g h i j k l")),
        "{told}"
    );
    live.until("the removed team is gone", async |l| {
        l.call(Method::GET, "/teams/extra", Value::Null).await.0 == 404
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlinked_config_is_reloaded_as_kubernetes_and_links_update_it() {
    // Kubernetes' ConfigMap layout: config.yaml -> ..data/config.yaml,
    // ..data -> ..<version>, updated by swapping ..data.
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().to_path_buf();
    let version = |name: &str, text: &str| {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        std::fs::write(dir.join(name).join("config.yaml"), text).unwrap();
    };
    version("..2026_12_07_one", &config("one", 10, false));
    std::os::unix::fs::symlink("..2026_12_07_one", dir.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/config.yaml", dir.join("config.yaml")).unwrap();
    let (server, base) = serve_with(&dir, &[]);
    let live = serving(home, server, base);
    assert_eq!(live.tell("demo", "[[env=STAGE]]").await, "one");
    version("..2026_12_07_two", &config("two", 10, true));
    let tmp = live.home.path().join("..data_tmp");
    std::os::unix::fs::symlink("..2026_12_07_two", &tmp).unwrap();
    std::fs::rename(&tmp, live.home.path().join("..data")).unwrap();
    live.until("the ConfigMap's new version applies", async |l| {
        l.call(Method::GET, "/teams/extra", Value::Null).await.0 == 200
    })
    .await;

    // A config linked to a file in another folder: edits there apply.
    let home = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let target = elsewhere.path().join("iris.yaml");
    std::fs::write(&target, config("one", 10, false)).unwrap();
    std::os::unix::fs::symlink(&target, home.path().join("config.yaml")).unwrap();
    let (server, base) = serve_with(home.path(), &[]);
    let live = serving(home, server, base);
    std::fs::write(&target, config("three", 10, true)).unwrap();
    live.until("the linked file's edit applies", async |l| {
        l.call(Method::GET, "/teams/extra", Value::Null).await.0 == 200
    })
    .await;
    assert_eq!(live.tell("demo", "[[env=STAGE]]").await, "three");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_gives_what_a_restart_gives() {
    let home = tempfile::tempdir().unwrap();
    // Teams of the API work outside Iris's home (which is `home` here).
    let roots = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(roots.path().join("web")).unwrap();
    let with = |file_web: bool| {
        let mut c = format!(
            "teamRoots: [{}]\n{}",
            roots.path().display(),
            config("one", 10, false)
        );
        if file_web {
            c += "  web:\n    path: .\n    agent: echo\n    description: from the file\n";
        }
        c
    };
    let (server, base) = serve_in(home.path(), &with(false));
    let live = serving(home, server, base);
    let (status, made) = live
        .call(
            Method::POST,
            "/teams",
            json!({"name": "web", "path": roots.path().join("web"), "profile": "echo", "description": "from the API"}),
        )
        .await;
    assert_eq!(status, 200, "{made}");
    // The file declares `web` too: the file's wins, as at start…
    live.write(&with(true));
    live.until("the file's team shadows the API's", async |l| {
        l.call(Method::GET, "/teams/web", Value::Null).await.1["source"] == "config"
    })
    .await;
    // …and when the file stops declaring it, the API's is back, as after a restart.
    live.write(&with(false));
    live.until("the API's team is back", async |l| {
        l.call(Method::GET, "/teams/web", Value::Null).await.1["source"] == "api"
    })
    .await;
    let (_, web) = live.call(Method::GET, "/teams/web", Value::Null).await;
    assert_eq!(web["config"]["description"], "from the API", "{web}");
}

/// `iris serve --host/--port/--dashboard-port` hold over the file's
/// settings, and a reload of the file keeps them: the listen address is
/// not a change waiting for a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_lines_listen_address_survives_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    // Ports nothing could listen on as given: the flags must win.
    let file = |teams: &str| {
        format!("api:\n  host: 192.0.2.1\n  port: 1\ndashboard:\n  http: 2\nteams:\n{teams}")
    };
    std::fs::write(
        dir.path().join("config.yaml"),
        file("  demo:\n    path: .\n    agent: echo\n"),
    )
    .unwrap();
    let (server, base) = serve_with(
        dir.path(),
        &[
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--dashboard-port",
            "0",
        ],
    );
    let live = serving(dir, server, base);
    assert_eq!(live.tell("demo", "up").await, "up");
    live.until("the dashboard's address is logged", async |l| {
        l.log().contains("dashboard listening")
    })
    .await;
    let log = live.log();
    let line = log
        .lines()
        .find(|l| l.contains("dashboard listening"))
        .unwrap();
    assert!(
        line.contains("127.0.0.1:") && !line.ends_with(":2"),
        "{line}"
    );
    live.write(&file(
        "  demo:\n    path: .\n    agent: echo\n  more:\n    path: .\n    agent: echo\n",
    ));
    live.until("the added team answers", async |l| {
        l.call(Method::GET, "/teams", Value::Null).await.1["teams"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["name"] == "more"))
    })
    .await;
    assert_eq!(live.tell("more", "hi").await, "hi");
    let log = live.log();
    assert!(log.contains("configuration reloaded"), "{log}");
    assert!(
        !log.contains("applied at the next start only"),
        "the flags made the file's listen address no change: {log}"
    );
}
