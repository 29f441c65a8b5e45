//! Agent drivers other than the happy echo path: command agents, missing
//! binaries and folders, oversized and non-JSON output, team env and args.

mod common;

use common::*;
use iris_core::ErrorKind;

#[tokio::test]
async fn a_command_agent_runs_per_turn_with_the_prompt_as_argument_or_stdin() {
    let h = start(
        "teams:\n  sh:\n    path: .\n    agent: command\n    command: sh\n    args: ['-c', 'echo \"got: $0\"; echo second', '{prompt}']\n  cat:\n    path: .\n    agent: command\n    command: cat\n    promptVia: stdin\n  bad:\n    path: .\n    agent: command\n    command: sh\n    args: ['-c', 'echo partial; exit 7']\n",
    )
    .await;
    let r = h.tell("sh", "hello world").await.unwrap();
    assert_eq!(r["response"], "got: hello world\nsecond\n");
    let r = h.tell("cat", "via stdin").await.unwrap();
    assert_eq!(r["response"], "via stdin\n");
    let e = h.tell("bad", "x").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Process);
    assert!(e.message.contains("status 7"), "{e:?}");
    assert_eq!(e.details.unwrap()["partialResponse"], "partial\n");
    h.stop().await;
}

#[tokio::test]
async fn a_missing_agent_binary_names_the_team_and_the_binary_but_no_path() {
    let h = start("teams:\n  ghost:\n    path: .\n    agent: claude\n    claudePath: /nowhere/bin/claude-missing\n").await;
    let e = h.tell("ghost", "hi").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Process);
    assert!(
        e.message.contains("ghost") && e.message.contains("claude-missing"),
        "{e:?}"
    );
    assert!(
        !e.message.contains("/nowhere"),
        "no server paths in messages: {e:?}"
    );
    let e = h
        .call("team_wake", serde_json::json!({"team": "ghost"}))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Process);
    h.stop().await;
}

#[tokio::test]
async fn a_missing_team_folder_is_reported_at_wake() {
    let h = start("teams:\n  lost:\n    path: ./not-there\n    agent: echo\n").await;
    let e = h
        .call("team_wake", serde_json::json!({"team": "lost"}))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Process);
    assert!(e.message.contains("folder does not exist"), "{e:?}");
    assert!(!e.message.contains("not-there"));
    h.stop().await;
}

#[tokio::test]
async fn an_oversized_line_fails_the_turn_cleanly() {
    let h = start(&echo_config("  maxLineBytes: 1048576")).await;
    let e = h.tell("demo", "[[big=10000000]] hi").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Process);
    assert!(e.message.contains("longer than 1048576 bytes"), "{e:?}");
    assert_eq!(
        h.tell("demo", "still works").await.unwrap()["response"],
        "still works"
    );
    h.stop().await;
}

#[tokio::test]
async fn lines_that_are_not_json_are_skipped() {
    let h = start(&echo_config("  maxProcesses: 2")).await;
    let r = h.tell("demo", "[[garbage]] fine").await.unwrap();
    assert_eq!(r["response"], "fine");
    h.stop().await;
}

#[tokio::test]
async fn team_env_args_and_folder_reach_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("work")).unwrap();
    let h = start_in(
        dir,
        "teams:\n  demo:\n    path: ./work\n    agent: echo\n    args: ['--model', 'x']\n    env:\n      IRIS_TEST_VALUE: forty-two\n",
    )
    .await;
    assert_eq!(
        h.tell("demo", "[[env=IRIS_TEST_VALUE]]").await.unwrap()["response"],
        "forty-two"
    );
    let cwd = h.tell("demo", "[[cwd]]").await.unwrap();
    assert!(cwd["response"].as_str().unwrap().ends_with("/work"));
    let argv = h.tell("demo", "[[argv]]").await.unwrap();
    let argv = argv["response"].as_str().unwrap();
    assert!(
        argv.contains("\"--input-format\",\"stream-json\""),
        "{argv}"
    );
    assert!(argv.ends_with("\"--model\",\"x\"]"), "{argv}");
    h.stop().await;
}

#[tokio::test]
async fn a_slow_start_beyond_the_spawn_timeout_fails_the_first_turn() {
    let h = start(
        "settings:\n  spawnTimeout: 300\nteams:\n  slow:\n    path: .\n    agent: echo\n    env:\n      IRIS_ECHO_START_DELAY_MS: '3000'\n",
    )
    .await;
    let e = h.tell("slow", "hi").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Process);
    assert!(e.message.contains("did not start within 300 ms"), "{e:?}");
    h.stop().await;
}

/// This process's resident memory, in MB (Linux).
fn rss_mb() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: f64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096.0 / 1e6
}

/// Agent output whatever its bytes: decoded lossily (invalid UTF-8 becomes
/// U+FFFD), stderr drained to its end (a reader that stopped at a bad byte
/// left the agent to die of SIGPIPE), and no line held whole past its
/// bound — stderr floods and `\r`-redrawn progress cost no memory.
#[tokio::test]
async fn agent_output_is_decoded_lossily_drained_and_bounded() {
    let h = start(
        r#"teams:
  latin:
    path: .
    agent: command
    command: /bin/sh
    args: ['-c', 'printf "caf\351\n"']
  noisy:
    path: .
    agent: command
    command: /bin/sh
    args: ['-c', 'printf "x\377\n" >&2; sleep 0.2; echo more >&2; echo ok']
  flood:
    path: .
    agent: command
    command: /bin/sh
    args: ['-c', 'head -c 150000000 /dev/zero | tr "\0" a >&2; echo ok']
  progress:
    path: .
    agent: command
    command: /bin/sh
    args: ['-c', 'head -c 10000000 /dev/zero | tr "\0" "\r" >&2; echo ok']
"#,
    )
    .await;
    let r = h.tell("latin", "any").await.unwrap();
    assert_eq!(r["status"], "completed");
    assert_eq!(r["response"], "caf\u{FFFD}\n");
    let r = h.tell("noisy", "any").await.unwrap();
    assert_eq!(r["response"], "ok\n");
    let before = rss_mb();
    for team in ["flood", "progress"] {
        let r = h.tell(team, "any").await.unwrap();
        assert_eq!(r["response"], "ok\n", "{team}");
    }
    let grown = rss_mb() - before;
    assert!(
        grown < 30.0,
        "memory grew by {grown:.1} MB reading 160 MB of stderr"
    );
    h.stop().await;
}

/// An agent that dies while a process it started still holds its stdout
/// ends its turn when it dies — not when that process lets go of the pipe
/// (here a minute later): the leftover is killed with the agent's process
/// group.
#[tokio::test]
async fn an_agent_that_dies_ends_its_turn_though_a_child_holds_its_output() {
    let h = start(
        "teams:\n  orphan:\n    path: .\n    agent: command\n    command: /bin/sh\n    args: ['-c', 'sleep 60 & echo started; kill -9 $$']\n",
    )
    .await;
    let started = std::time::Instant::now();
    let e = h.tell("orphan", "x").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Process, "{e:?}");
    assert_eq!(e.details.unwrap()["partialResponse"], "started\n");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "the turn waited for the pipe: {:?}",
        started.elapsed()
    );
    h.stop().await;
}
