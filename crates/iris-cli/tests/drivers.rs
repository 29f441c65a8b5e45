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
