//! One agent child process: spawn, line I/O with a size cap, and a clean stop.
//!
//! The child gets its own process group (so a stop reaches the tools it runs
//! too) and, on Linux, a parent-death signal so it never outlives Iris.

use std::collections::VecDeque;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

use crate::launch::LaunchSpec;

/// How many stderr lines are kept to explain a crash.
const STDERR_TAIL_LINES: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("agent binary `{program}` was not found")]
    NotFound { program: String },
    #[error("working folder `{cwd}` does not exist")]
    MissingFolder { cwd: String },
    #[error("could not start `{program}`: {source}")]
    Spawn { program: String, source: io::Error },
}

/// A line that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("agent wrote a line longer than {max} bytes")]
    TooLong { max: usize },
    #[error("reading agent output failed: {0}")]
    Io(String),
}

/// A running agent child process.
pub struct AgentProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: FramedRead<ChildStdout, LinesCodec>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    pid: Option<u32>,
    max_line: usize,
}

impl AgentProcess {
    /// Start the process described by `spec`; stdout lines longer than
    /// `max_line` bytes are refused instead of buffered.
    pub fn spawn(spec: &LaunchSpec, max_line: usize) -> Result<Self, ProcessError> {
        if !spec.cwd.is_dir() {
            return Err(ProcessError::MissingFolder {
                cwd: spec.cwd.display().to_string(),
            });
        }
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&spec.cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        #[cfg(target_os = "linux")]
        // SAFETY: prctl is async-signal-safe and touches only the child's own state.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let program = spec.program.display().to_string();
        let mut child = cmd.spawn().map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                ProcessError::NotFound {
                    program: program.clone(),
                }
            } else {
                ProcessError::Spawn {
                    program: program.clone(),
                    source,
                }
            }
        })?;
        let pid = child.id();
        let stdout = child.stdout.take().ok_or_else(|| ProcessError::Spawn {
            program: program.clone(),
            source: io::Error::other("stdout was not captured"),
        })?;
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stderr) = child.stderr.take() {
            let tail = stderr_tail.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    tracing::debug!(target: "iris::agent::stderr", pid, "{line}");
                    if let Ok(mut t) = tail.lock() {
                        if t.len() == STDERR_TAIL_LINES {
                            t.pop_front();
                        }
                        t.push_back(line);
                    }
                }
            });
        }
        let mut stdin = child.stdin.take();
        if let Some(text) = spec.stdin.clone() {
            // Command agents read their prompt from stdin, then see EOF.
            if let Some(mut s) = stdin.take() {
                tokio::spawn(async move {
                    let _ = s.write_all(text.as_bytes()).await;
                    let _ = s.shutdown().await;
                });
            }
        }
        Ok(AgentProcess {
            child,
            stdin,
            lines: FramedRead::new(stdout, LinesCodec::new_with_max_length(max_line)),
            stderr_tail,
            pid,
            max_line,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Write one line (already newline-terminated) to the agent's stdin.
    pub async fn send(&mut self, line: &str) -> io::Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "stdin is closed"))?;
        stdin.write_all(line.as_bytes()).await?;
        stdin.flush().await
    }

    /// The next stdout line; `None` once stdout is closed (the agent exited).
    /// Cancel-safe, so it can sit in a `select!`.
    pub async fn next_line(&mut self) -> Option<Result<String, LineError>> {
        match self.lines.next().await? {
            Ok(line) => Some(Ok(line)),
            Err(LinesCodecError::MaxLineLengthExceeded) => {
                Some(Err(LineError::TooLong { max: self.max_line }))
            }
            Err(LinesCodecError::Io(e)) => Some(Err(LineError::Io(e.to_string()))),
        }
    }

    /// The last lines the agent wrote to stderr, to explain a failure.
    pub fn stderr_tail(&self) -> String {
        self.stderr_tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    /// Wait for the process to exit, at most `limit`.
    pub async fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()?
            .ok()
    }

    /// Send a signal to the whole process group.
    fn signal_group(&self, sig: libc::c_int) {
        if let Some(pid) = self.pid {
            let Ok(pgid) = libc::pid_t::try_from(pid) else {
                return;
            };
            // SAFETY: plain syscall on a process group we created.
            unsafe {
                libc::kill(-pgid, sig);
            }
        }
    }

    /// Stop the agent: close stdin (the polite signal for stream-json agents),
    /// then SIGTERM, then SIGKILL, each after `grace`. Always reaps the child.
    pub async fn shutdown(mut self, grace: Duration) -> Option<ExitStatus> {
        self.stdin.take();
        if let Some(status) = self.wait_for(grace).await {
            self.signal_group(libc::SIGKILL); // leftovers of the group, if any
            return Some(status);
        }
        self.signal_group(libc::SIGTERM);
        if let Some(status) = self.wait_for(grace).await {
            self.signal_group(libc::SIGKILL);
            return Some(status);
        }
        self.kill_now().await
    }

    /// SIGKILL the group and reap.
    pub async fn kill_now(&mut self) -> Option<ExitStatus> {
        self.signal_group(libc::SIGKILL);
        let _ = self.child.start_kill();
        self.child.wait().await.ok()
    }
}
