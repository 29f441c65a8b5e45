//! One agent child process: spawn, line I/O with a size cap (stdout and
//! stderr both read to their end, lossily decoded: see [`crate::lines`]),
//! and a clean stop.
//!
//! The child gets its own process group (so a stop reaches the tools it runs
//! too) and, on Linux, a parent-death signal so it never outlives Iris.

use std::collections::VecDeque;
use std::io;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;

use crate::acp::AcpClient;

use crate::launch::LaunchSpec;
use crate::lines::{Line, Lines};

/// How many stderr lines are kept to explain a crash.
const STDERR_TAIL_LINES: usize = 20;

/// The longest stderr line kept (bytes); the rest of a longer one is read
/// and dropped.
const STDERR_LINE_BYTES: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("agent binary `{program}` was not found")]
    NotFound { program: String },
    #[error("working folder `{cwd}` does not exist")]
    MissingFolder { cwd: String },
    #[error("could not start `{program}`: {source}")]
    Spawn { program: String, source: io::Error },
    #[error("could not confine `{program}`: {reason}")]
    Confine { program: String, reason: String },
}

/// A line that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("agent wrote a line longer than {max} bytes")]
    TooLong { max: usize },
    #[error("reading agent output failed: {0}")]
    Io(String),
    /// The agent broke its protocol (ACP): its process is replaced.
    #[error("{0}")]
    Protocol(String),
}

/// A running agent child process.
pub struct AgentProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    pid: Option<u32>,
    max_line: usize,
    /// The process was seen to exit: its pipe is read for what is left,
    /// each read waiting [`EXIT_DRAIN`] at most, not until every process
    /// holding the pipe lets go of it.
    exited: bool,
    /// An ACP agent: the translator, and the lines it made for Iris not
    /// yet read. Its stdin is written by a task of its own (`writer`), so
    /// what reading a line makes the client answer is never lost to a
    /// cancelled read.
    acp: Option<AcpClient>,
    translated: VecDeque<String>,
    writer: Option<mpsc::Sender<String>>,
}

/// Lines to an ACP agent not yet written: an agent that sends requests but
/// never reads our answers is broken past this, not a memory sink.
const ACP_WRITE_QUEUE: usize = 1024;

/// How long one read of the output left in the pipe may wait after the
/// agent exited.
/// The pipe normally closes at once; tools the agent started may hold it
/// open, but they are killed with its process group.
const EXIT_DRAIN: Duration = Duration::from_millis(50);

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
            .env_clear()
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
        if let Some(c) = &spec.confine {
            let mut prepared =
                crate::sandbox::Prepared::new(c).map_err(|reason| ProcessError::Confine {
                    program: program.clone(),
                    reason,
                })?;
            // SAFETY: entering a ruleset built before the fork: two system
            // calls, no allocation (see `sandbox`).
            unsafe {
                cmd.pre_exec(move || prepared.enter());
            }
        }
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
            // Read to the end whatever the bytes, keeping a bounded tail.
            tokio::spawn(async move {
                let mut lines =
                    Lines::new(BufReader::new(stderr), STDERR_LINE_BYTES).carriage_returns();
                while let Some(Ok(line)) = lines.next().await {
                    let line = match line {
                        Line::Text(t) if t.is_empty() => continue,
                        Line::Text(t) => t,
                        Line::Cut(t) => format!("{t} [cut at {STDERR_LINE_BYTES} bytes]"),
                    };
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
        let mut acp = None;
        let mut writer = None;
        if let Some(start) = &spec.acp
            && let Some(mut s) = stdin.take()
        {
            let mut client = AcpClient::new(&spec.cwd, start.clone());
            let (tx, mut rx) = mpsc::channel::<String>(ACP_WRITE_QUEUE);
            for line in client.start() {
                let _ = tx.try_send(line);
            }
            tokio::spawn(async move {
                while let Some(line) = rx.recv().await {
                    if s.write_all(line.as_bytes()).await.is_err() || s.flush().await.is_err() {
                        break;
                    }
                }
            });
            acp = Some(client);
            writer = Some(tx);
        }
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
            lines: Lines::new(BufReader::new(stdout), max_line),
            stderr_tail,
            pid,
            max_line,
            exited: false,
            acp,
            translated: VecDeque::new(),
            writer,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// Write one line (already newline-terminated) to the agent's stdin:
    /// a stream-json line, translated first for an ACP agent.
    pub async fn send(&mut self, line: &str) -> io::Result<()> {
        if let Some(acp) = self.acp.as_mut() {
            let t = acp.outgoing(line);
            self.translated.extend(t.to_iris);
            return self.write_acp(t.to_agent);
        }
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "stdin is closed"))?;
        stdin.write_all(line.as_bytes()).await?;
        stdin.flush().await
    }

    /// The next stdout line, decoded lossily; `None` once stdout is closed
    /// (the agent exited). A line over the limit is [`LineError::TooLong`]
    /// once, and reading goes on after it. Cancel-safe, so it can sit in a
    /// `select!`.
    ///
    /// The end is the process's exit, not only the pipe's close: an agent
    /// killed mid-turn may leave children (tools, a helper process) that
    /// hold its stdout open; those are killed with its process group, and
    /// what is left in the pipe is read for [`EXIT_DRAIN`] at most.
    pub async fn next_line(&mut self) -> Option<Result<String, LineError>> {
        loop {
            if let Some(line) = self.translated.pop_front() {
                return Some(Ok(line));
            }
            let line = match self.next_raw().await? {
                Ok(line) => line,
                Err(e) => return Some(Err(e)),
            };
            let Some(acp) = self.acp.as_mut() else {
                return Some(Ok(line));
            };
            match acp.incoming(&line) {
                Ok(t) => {
                    self.translated.extend(t.to_iris);
                    if let Err(e) = self.write_acp(t.to_agent) {
                        // It may be waiting for that answer: say so now
                        // rather than at the silence timeout.
                        return Some(Err(LineError::Io(format!(
                            "answering the agent failed: {e}"
                        ))));
                    }
                }
                Err(e) => return Some(Err(LineError::Protocol(e.0))),
            }
        }
    }

    fn write_acp(&self, lines: Vec<String>) -> io::Result<()> {
        let Some(w) = &self.writer else {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "stdin is closed"));
        };
        for line in lines {
            w.try_send(line).map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "the agent does not read its input",
                ),
                mpsc::error::TrySendError::Closed(_) => {
                    io::Error::new(io::ErrorKind::BrokenPipe, "stdin is closed")
                }
            })?;
        }
        Ok(())
    }

    /// The next line the process wrote (see [`Self::next_line`]).
    async fn next_raw(&mut self) -> Option<Result<String, LineError>> {
        let read = loop {
            if self.exited {
                // Each read may wait this long: what the agent wrote before
                // it died is in the pipe already, however slowly we get to it.
                match tokio::time::timeout(EXIT_DRAIN, self.lines.next()).await {
                    Ok(read) => break read?,
                    Err(_) => return None,
                }
            }
            let read = tokio::select! {
                // Output first: everything written before the exit is read.
                biased;
                read = self.lines.next() => Some(read),
                _ = self.child.wait() => None,
            };
            match read {
                Some(read) => break read?,
                None => {
                    self.exited = true;
                    self.signal_group(libc::SIGKILL);
                }
            }
        };
        match read {
            Ok(Line::Text(line)) => Some(Ok(line)),
            Ok(Line::Cut(_)) => Some(Err(LineError::TooLong { max: self.max_line })),
            Err(e) => Some(Err(LineError::Io(e.to_string()))),
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
        self.writer.take();
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
