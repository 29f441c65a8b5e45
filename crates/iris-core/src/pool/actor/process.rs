//! The actor's process: how it is started (and refused), restarted
//! after a crash, resumed or begun afresh, and stopped.

use super::*;

impl Actor {
    pub(super) fn spawn_mode(&self) -> SessionMode {
        let id = self.session.id.clone();
        if self.session.afresh {
            return SessionMode::New(id);
        }
        match (&self.session.fork_of, self.session.started) {
            (_, true) => SessionMode::Resume(id),
            (Some(from), false) => SessionMode::Fork {
                from: from.clone(),
                new_id: id,
            },
            (None, false) => SessionMode::New(id),
        }
    }

    /// A claude process's way back to this Iris, when the API serves MCP.
    pub(super) fn seat(&self) -> Option<crate::pool::seat::Seat> {
        if !matches!(
            self.team.agent(),
            iris_agent::AgentKind::Claude | iris_agent::AgentKind::Acp
        ) {
            return None;
        }
        let url = self.pool.mcp_url.get()?;
        // It sees every team (a message outside `canMessage` is refused with
        // FORBIDDEN, audited, not hidden); its reading is limited to its own
        // team's conversations and messages (`Iris::own_session`, the ops).
        let teams = None;
        match crate::pool::seat::Seat::new(
            &self.pool.auth,
            url,
            &self.team.name,
            &self.session.id,
            teams,
        ) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(team = %self.team.name, error = %e, "no iris MCP server for this process");
                None
            }
        }
    }

    /// Refuse to start a process of a run-time team whose folder left the
    /// team roots since it was checked (a symlink swapped, a root removed).
    pub(super) fn check_folder(&mut self) -> Result<()> {
        match self.team.check_folder() {
            Ok(()) => Ok(()),
            Err(problem) => Err(self.not_started(&problem)),
        }
    }

    /// A process that may not start: failed, logged, published, and the
    /// caller's error.
    fn not_started(&mut self, problem: &str) -> IrisError {
        self.set_state(ProcState::Failed);
        let message = format!("team `{}`: {problem}", self.team.name);
        tracing::warn!(team = %self.team.name, "{message}; not started");
        self.publish(
            EventKind::ProcessError,
            None,
            json!({"team": self.team.name, "error": message}),
        );
        IrisError::process(message).with_details(json!({"team": self.team.name}))
    }

    /// Start the persistent process if it is not running.
    pub(super) async fn ensure_process(&mut self) -> Result<()> {
        if self.process.is_some() || !self.team.agent().is_persistent() {
            return Ok(());
        }
        self.set_state(ProcState::Spawning);
        self.check_folder()?;
        if !self.session.started {
            // The row handed to us may predate writes still in the recorder.
            self.pool.recorder.flush().await;
            if let Ok(Some(row)) = self.pool.store.session(&self.session.id).await {
                self.session.started = row.started;
            }
        }
        let seat = self.seat();
        let mode = self.spawn_mode();
        let mut spec = self
            .team
            .launch_session(&mode, &self.pool.echo_program, seat.as_ref());
        if let Some(acp) = spec.acp.as_mut() {
            acp.continues = !matches!(mode, SessionMode::New(_));
            if let SessionMode::Resume(id) = &mode {
                // The agent's own id of this conversation, as it said when
                // it opened it (recorded with the turn's events: written
                // first, should a turn have just ended).
                self.pool.recorder.flush().await;
                acp.resume = self.pool.store.agent_session(id).await.ok().flatten();
            }
        }
        if self.team.agent() == iris_agent::AgentKind::A2a
            && let SessionMode::Resume(id) = &mode
        {
            // The remote's context of this conversation, and a task of it
            // that asked the caller a question, as the bridge said.
            self.pool.recorder.flush().await;
            let init = self.pool.store.agent_init(id).await.ok().flatten();
            // (In its environment: the remote chose them, they are no
            // arguments of anyone's.)
            for (key, var) in [
                ("session_id", iris_agent::launch::A2A_CONTEXT_VAR),
                ("open_task", iris_agent::launch::A2A_TASK_VAR),
            ] {
                if let Some(v) = init.as_ref().and_then(|i| i[key].as_str()) {
                    spec.env.push((var.to_owned(), v.to_owned()));
                }
            }
        }
        if let Some(dir) = &self.session.worktree {
            spec.cwd = dir.clone();
        }
        let confined =
            self.pool
                .sandbox
                .confine(&self.team, &mut spec, self.session.worktree.as_deref());
        if let Err(problem) = confined {
            return Err(self.not_started(&problem));
        }
        self.transcript = None;
        if self.team.agent() == iris_agent::AgentKind::Claude {
            // The conversation it resumes (or forks) must be in its files:
            // on another node or a new home, from the database.
            let resumed = match &mode {
                SessionMode::Resume(id) => Some(id),
                SessionMode::Fork { from, .. } => Some(from),
                SessionMode::New(_) => None,
            };
            if let Some(id) = resumed
                && let Some(file) = crate::pool::transcript::claude_file(&spec.env, &spec.cwd, id)
            {
                crate::pool::transcript::restore(&self.pool.store, &self.team.name, id, &file)
                    .await;
            }
            self.transcript =
                crate::pool::transcript::claude_file(&spec.env, &spec.cwd, &self.session.id)
                    .map(|f| (f, spec.cwd.clone()));
        }
        match AgentProcess::spawn(&spec, self.pool.settings().max_line_bytes) {
            Ok(p) => {
                let pid = p.pid();
                self.process = Some(p);
                self.seat = seat;
                self.session.afresh = false;
                self.shared.pid.store(pid.unwrap_or(0), Ordering::Relaxed);
                self.shared.spawned_at.store(now_ms(), Ordering::Relaxed);
                self.set_state(ProcState::Ready);
                self.publish(
                    EventKind::ProcessSpawned,
                    None,
                    json!({"team": self.team.name, "pid": pid}),
                );
                tracing::info!(team = %self.team.name, session = %self.session.id, pid, "agent process spawned");
                self.record_state("ready");
                Ok(())
            }
            Err(e) => {
                self.set_state(ProcState::Failed);
                let message = match &e {
                    iris_agent::ProcessError::NotFound { program } => format!(
                        "team `{}`: agent binary `{}` was not found",
                        self.team.name,
                        short_program(program)
                    ),
                    iris_agent::ProcessError::MissingFolder { .. } => {
                        format!("team `{}`: its folder does not exist", self.team.name)
                    }
                    iris_agent::ProcessError::Confine { program, .. } => format!(
                        "team `{}`: could not confine `{}`",
                        self.team.name,
                        short_program(program)
                    ),
                    iris_agent::ProcessError::Spawn { program, .. } => {
                        format!(
                            "team `{}`: could not start `{}`",
                            self.team.name,
                            short_program(program)
                        )
                    }
                };
                tracing::warn!(team = %self.team.name, error = %e, "agent spawn failed");
                self.publish(
                    EventKind::ProcessError,
                    None,
                    json!({"team": self.team.name, "error": message}),
                );
                Err(IrisError::process(message).with_details(json!({"team": self.team.name})))
            }
        }
    }

    /// The agent no longer has the conversation it was resumed with (Claude
    /// Code: "No conversation found with session ID"): start it afresh
    /// under the same id, once per turn, hand it the turn's message again,
    /// record that on the session and tell the caller. False when it does
    /// not apply (then the turn fails as reported).
    pub(super) async fn start_afresh(&mut self) -> bool {
        let Some(r) = self.current.as_mut() else {
            return false;
        };
        if r.restarted || !r.fresh_process || r.interrupt_sent.is_some() {
            return false;
        }
        r.restarted = true;
        let tracker = r.tracker.clone();
        tracing::warn!(team = %self.team.name, session = %self.session.id, "the agent had lost this conversation; starting it afresh");
        self.kill_process().await;
        self.session.afresh = true;
        self.session.fork_of = None;
        self.pool.recorder.write(StoreWrite::SessionRestarted {
            id: self.session.id.clone(),
            at: now_ms(),
        });
        tracker.set_notice(
            "the agent no longer had this conversation, so Iris started it afresh: \
             it does not remember the earlier messages",
        );
        let sent = match self.ensure_process().await {
            Ok(()) => match self.process.as_mut() {
                Some(p) => p
                    .send(&protocol::user_message_line(&tracker.request))
                    .await
                    .map_err(|e| e.to_string()),
                None => Err("no process".to_owned()),
            },
            Err(e) => Err(e.message),
        };
        self.session.started = true;
        self.set_state(ProcState::Busy);
        if let Some(r) = self.current.as_mut() {
            let now = Instant::now();
            r.last_output = now;
            r.got_output = false;
            r.deltas.clear();
            r.assistant_text.clear();
            r.tool_uses.clear();
        }
        if let Err(e) = sent {
            let reason = format!(
                "team `{}`: starting the conversation afresh failed: {e}",
                self.team.name
            );
            self.end_turn(TurnStatus::Failed, Some(reason), None).await;
        }
        true
    }

    /// The agent could not continue this conversation (an ACP agent that
    /// could not load its session, or none to load): it started afresh.
    /// Recorded on the conversation and told to the caller, as a Claude
    /// conversation started afresh is.
    pub(super) fn note_lost(&mut self) {
        let Some(r) = self.current.as_ref() else {
            return;
        };
        tracing::warn!(team = %self.team.name, session = %self.session.id, "the agent could not continue this conversation; it started afresh");
        r.tracker.set_notice(
            "the agent could not continue this conversation, so it started afresh: \
             it does not remember the earlier messages",
        );
        self.pool.recorder.write(StoreWrite::SessionRestarted {
            id: self.session.id.clone(),
            at: now_ms(),
        });
    }

    /// stdout closed: the process ended (a crash, or a command agent finishing).
    pub(super) async fn on_exit(&mut self) {
        let Some(mut p) = self.process.take() else {
            return;
        };
        self.seat = None;
        self.expire_all("the agent's process ended").await;
        let status = p.wait_for(Duration::from_secs(2)).await;
        if status.is_none() {
            p.kill_now().await;
        }
        let code = status.and_then(|s| s.code());
        self.shared.pid.store(0, Ordering::Relaxed);
        if !self.team.agent().is_persistent() {
            if self.current.is_some() {
                match code {
                    Some(0) => self.end_turn(TurnStatus::Completed, None, None).await,
                    _ if self
                        .current
                        .as_ref()
                        .is_some_and(|r| r.interrupt_sent.is_some()) =>
                    {
                        self.end_turn(TurnStatus::Cancelled, Some("cancelled".into()), None)
                            .await
                    }
                    _ => {
                        let msg = format!(
                            "team `{}`: command exited with status {}",
                            self.team.name,
                            describe(code)
                        );
                        self.end_turn(TurnStatus::Failed, Some(msg), None).await
                    }
                }
            }
            self.set_state(ProcState::Ready);
            return;
        }
        tracing::warn!(team = %self.team.name, session = %self.session.id, code, stderr = %p.stderr_tail(), "agent process exited");
        self.terminated(json!({"team": self.team.name, "exitCode": code}));
        if let Some(r) = &self.current {
            let (status, msg) = if r.interrupt_sent.is_some() {
                (TurnStatus::Cancelled, "cancelled".to_owned())
            } else {
                let mut msg = format!(
                    "team `{}`: agent process exited with status {} during the turn",
                    self.team.name,
                    describe(code)
                );
                // What it said last on stderr, briefly: often the reason.
                let tail = self.team.redact(&p.stderr_tail());
                let last: Vec<&str> = tail.lines().rev().take(3).collect();
                if !last.is_empty() {
                    let said: String = last.into_iter().rev().collect::<Vec<_>>().join(" / ");
                    let said: String = said.chars().take(400).collect();
                    msg.push_str(&format!(" (stderr: {said})"));
                }
                (TurnStatus::Failed, msg)
            };
            self.end_turn(status, Some(msg), None).await;
        }
    }

    /// Its running turn has ended after `StopWhenIdle`: stop, leave the
    /// pool, and cancel whatever was sent meanwhile.
    pub(super) async fn leave(&mut self, reason: &str) {
        self.stop_everything(reason).await;
        self.pool.leave(&self.shared);
        self.rx.close();
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                Command::Turn(job) => {
                    self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                    self.finish_job(&job.tracker, TurnStatus::Cancelled, Some(reason.to_owned()))
                        .await;
                }
                Command::Wake(reply) => {
                    let _ = reply.send(Err(IrisError::new(
                        crate::error::ErrorKind::ServiceUnavailable,
                        reason.to_owned(),
                    )));
                }
                Command::Cancel { reply, .. } => {
                    let _ = reply.send(false);
                }
                Command::Stop { reply, .. } => {
                    let _ = reply.map(|r| r.send(()));
                }
                Command::Decide { .. } | Command::Reconfigure(_) | Command::StopWhenIdle { .. } => {
                }
            }
        }
    }

    /// End the actor: cancel everything, stop the process politely, then firmly.
    pub(super) async fn stop_everything(&mut self, reason: &str) {
        self.set_state(ProcState::Stopping);
        self.cancel_pending(reason).await;
        if let Some(p) = self.process.take() {
            self.shut_down(p, None).await;
        }
        if self.current.is_some() {
            self.end_turn(TurnStatus::Cancelled, Some(reason.to_owned()), None)
                .await;
        }
        self.shared.pid.store(0, Ordering::Relaxed);
        self.set_state(ProcState::Stopped);
        self.record_state("stopped");
    }

    /// Stop the process politely between turns; the next turn starts a new
    /// one (resuming the conversation) with the team's configuration.
    pub(super) async fn retire_process(&mut self, reason: &str) {
        let Some(p) = self.process.take() else { return };
        tracing::info!(team = %self.team.name, session = %self.session.id, reason, "restarting the agent's process");
        self.shut_down(p, Some(reason)).await;
        self.shared.pid.store(0, Ordering::Relaxed);
        self.set_state(ProcState::Stopped);
        self.record_state("stopped");
    }

    /// Stop `p` politely, then firmly, and say so (with `reason` if given).
    async fn shut_down(&mut self, p: AgentProcess, reason: Option<&str>) {
        let status = p.shutdown(self.grace()).await;
        self.seat = None;
        self.expire_all("the agent's process was stopped").await;
        let mut data = json!({"team": self.team.name, "exitCode": status.and_then(|s| s.code())});
        if let Some(reason) = reason {
            data["reason"] = json!(reason);
        }
        self.publish(EventKind::ProcessTerminated, None, data);
    }

    /// The process is gone: say so (`data`: how) and mark it stopped.
    fn terminated(&mut self, data: serde_json::Value) {
        self.publish(EventKind::ProcessTerminated, None, data);
        self.set_state(ProcState::Stopped);
        self.record_state("stopped");
    }

    pub(super) async fn kill_process(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill_now().await;
            self.seat = None;
            self.expire_all("the agent's process was stopped").await;
            self.shared.pid.store(0, Ordering::Relaxed);
            if self.team.agent().is_persistent() {
                self.terminated(json!({"team": self.team.name, "killed": true}));
            }
        }
    }
}

/// Whether a `result` line says the agent does not have the conversation
/// it was resumed with (Claude Code: `errors: ["No conversation found with
/// session ID: …"]`).
pub(super) fn lost_conversation(raw: &Value) -> bool {
    raw.get("errors")
        .and_then(Value::as_array)
        .is_some_and(|e| {
            e.iter()
                .filter_map(Value::as_str)
                .any(|m| m.contains("No conversation found"))
        })
}

pub(super) fn describe(code: Option<i32>) -> String {
    code.map(|c| c.to_string())
        .unwrap_or_else(|| "a signal".into())
}

/// The program's file name only: messages never show the server's paths.
pub(super) fn short_program(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}
