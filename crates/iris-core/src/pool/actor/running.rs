//! The turn in flight: begun from the queue, its agent's output read
//! line by line into events and the live stream, and ended — completed,
//! failed, cancelled — with its record written.

use super::*;

impl Actor {
    /// Start the next queued turn if nothing runs.
    pub(super) async fn begin_next(&mut self) {
        if self.current.is_none()
            && let Some(team) = self.reconfigured.take()
        {
            self.retire_process("the team's configuration changed")
                .await;
            self.team = team;
        }
        while self.current.is_none() {
            let Some(job) = self.queue.iter_mut().find_map(VecDeque::pop_front) else {
                return;
            };
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            let fresh = self.process.is_none();
            if let Err(e) = self.ensure_process().await {
                self.finish_job(&job.tracker, TurnStatus::Failed, Some(e.message))
                    .await;
                continue;
            }
            let tracker = job.tracker;
            let now = Instant::now();
            let text = tracker.request.clone();
            tracker.set_running();
            self.set_state(ProcState::Busy);
            let at = now_ms();
            self.pool.recorder.write(StoreWrite::TurnStarted {
                id: tracker.id.clone(),
                at,
            });
            self.pool.recorder.write(StoreWrite::SessionUsed {
                id: self.session.id.clone(),
                at,
            });
            self.session.started = true;
            self.shared.turns.fetch_add(1, Ordering::Relaxed);
            self.publish(
                EventKind::TurnStarted,
                Some(&tracker.id),
                json!({"messageId": tracker.id}),
            );
            let sent = if self.team.agent().is_persistent() {
                match self.process.as_mut() {
                    Some(p) => p
                        .send(&protocol::user_message_line(&text))
                        .await
                        .map_err(|e| e.to_string()),
                    None => Err("no process".to_owned()),
                }
            } else {
                let mut spec = self.team.launch_turn(&text, &self.pool.echo_program);
                if let Some(dir) = &self.session.worktree {
                    spec.cwd = dir.clone();
                }
                let worktree = self.session.worktree.clone();
                let spawned = self
                    .team
                    .check_folder()
                    .and_then(|()| {
                        self.pool
                            .sandbox
                            .confine(&self.team, &mut spec, worktree.as_deref())
                    })
                    .and_then(|()| {
                        AgentProcess::spawn(&spec, self.pool.settings().max_line_bytes)
                            .map_err(|e| e.to_string())
                    });
                match spawned {
                    Ok(p) => {
                        self.shared
                            .pid
                            .store(p.pid().unwrap_or(0), Ordering::Relaxed);
                        self.process = Some(p);
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            };
            self.current = Some(Running {
                tracker,
                started: now,
                last_output: now,
                got_output: false,
                fresh_process: fresh,
                deltas: String::new(),
                assistant_text: String::new(),
                tool_uses: Vec::new(),
                tool_started: HashMap::new(),
                events: Vec::new(),
                events_dropped: 0,
                next_seq: 0,
                pending: Vec::new(),
                interrupt_sent: None,
                restarted: false,
            });
            if let Err(e) = sent {
                tracing::warn!(team = %self.team.name, error = %e, "could not hand the message to the agent");
                let message = format!(
                    "team `{}`: could not hand the message to the agent",
                    self.team.name
                );
                self.kill_process().await;
                self.end_turn(TurnStatus::Failed, Some(message), None).await;
            }
        }
    }

    /// Keep a raw event (bounded); returns its sequence number in the turn.
    pub(super) fn record(&mut self, kind: &str, data: Value) -> u64 {
        let max = self.pool.settings().max_events_per_turn;
        let Some(r) = self.current.as_mut() else {
            return 0;
        };
        r.next_seq += 1;
        if r.events.len() < max {
            r.events.push(EventRow {
                seq: r.next_seq as i64,
                at: now_ms(),
                kind: kind.to_owned(),
                data,
            });
        } else {
            r.events_dropped += 1;
        }
        r.next_seq
    }

    /// Hand stream items to the turn's followers and the bus.
    /// Take stream items of the running turn. Chunks update the partial
    /// response at once; followers and the bus get them at the next
    /// [`Actor::flush_stream`], consecutive chunks merged into one.
    pub(super) fn stream(&mut self, items: Vec<StreamItem>) {
        let Some(r) = self.current.as_mut() else {
            return;
        };
        for item in items {
            if item.kind == StreamKind::Chunk {
                let text = item.data["text"].as_str().unwrap_or_default();
                r.deltas.push_str(text);
                r.tracker.push_partial(text);
                if let Some(last) = r.pending.last_mut()
                    && last.kind == StreamKind::Chunk
                {
                    let merged =
                        format!("{}{text}", last.data["text"].as_str().unwrap_or_default());
                    last.data["text"] = merged.into();
                    last.seq = item.seq;
                    continue;
                }
            }
            r.pending.push(item);
        }
    }

    /// Hand the pending stream items to the turn's followers and the bus.
    pub(super) fn flush_stream(&mut self) {
        let Some(r) = self.current.as_mut() else {
            return;
        };
        let id = r.tracker.id.clone();
        for item in std::mem::take(&mut r.pending) {
            let kind = item.kind.event_kind();
            let mut data = item.data.clone();
            data["seq"] = item.seq.into();
            r.tracker.push_item(item);
            self.pool.bus.publish(
                kind,
                &self.team.name,
                Some(&self.session.id),
                Some(&id),
                data,
            );
        }
    }

    /// Handle the lines the agent has already written, without waiting.
    /// When the agent is faster than its readers this batches its chunks,
    /// so a crowd of subscribers gets fewer, larger events instead of
    /// slowing the agent down; an idle pipe costs nothing.
    pub(super) async fn drain_ready(&mut self) {
        use futures_util::FutureExt;
        for _ in 0..256 {
            let Some(p) = self.process.as_mut() else {
                return;
            };
            match p.next_line().now_or_never() {
                Some(Some(Ok(line))) => self.on_line(line).await,
                Some(Some(Err(e))) => {
                    self.flush_stream();
                    return self.on_bad_output(e).await;
                }
                Some(None) => {
                    self.flush_stream();
                    return self.on_exit().await;
                }
                None => return,
            }
        }
    }

    pub(super) async fn on_line(&mut self, line: String) {
        if let Some(r) = self.current.as_mut() {
            r.last_output = Instant::now();
            r.got_output = true;
        }
        if !self.team.agent().is_persistent() {
            // A command agent: every line is a chunk.
            let raw = Value::String(line);
            let seq = self.record("line", raw.clone());
            self.stream(stored_items(seq, "line", &raw));
            return;
        }
        let (event, raw) = match protocol::parse_line(&line) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(team = %self.team.name, error = %e, "skipping agent output that is not stream-json");
                return;
            }
        };
        if self.current.is_none() {
            if let AgentEvent::PermissionRequest { request_id, .. } = &event {
                // Nothing runs that it could be for: refuse, never leave it waiting.
                let line = protocol::permission_line(
                    request_id,
                    false,
                    &Value::Null,
                    "no message is running",
                );
                if let Some(p) = self.process.as_mut() {
                    let _ = p.send(&line).await;
                }
                return;
            }
            if !matches!(event, AgentEvent::ControlResponse { .. }) {
                tracing::debug!(team = %self.team.name, "agent output outside a turn");
            }
            return;
        }
        let kind = raw
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_owned();
        let lost = matches!(&event, AgentEvent::Result(r) if r.is_error)
            && super::process::lost_conversation(&raw);
        let seq = self.record(&kind, raw);
        if lost && self.start_afresh().await {
            return;
        }
        let items = match &event {
            AgentEvent::ToolResults(results) => self.finish_tools(seq, results),
            _ => stream_items(seq, &event),
        };
        self.stream(items);
        match event {
            AgentEvent::TextDelta(_) | AgentEvent::ToolResults(_) | AgentEvent::Plan(_) => {}
            AgentEvent::Assistant { text, tool_uses } => {
                if let Some(r) = self.current.as_mut() {
                    let now = Instant::now();
                    r.tool_started
                        .extend(tool_uses.iter().map(|t| (t.id.clone(), now)));
                    r.tool_uses.extend(tool_uses);
                    r.assistant_text.push_str(&text);
                }
            }
            AgentEvent::Result(result) => {
                let interrupted = self
                    .current
                    .as_ref()
                    .is_some_and(|r| r.interrupt_sent.is_some());
                let (status, error) = if interrupted {
                    (TurnStatus::Cancelled, Some("cancelled".to_owned()))
                } else if result.is_error {
                    let reason = result
                        .text
                        .clone()
                        .filter(|t| !t.is_empty())
                        .or_else(|| result.subtype.clone())
                        .unwrap_or_else(|| "the agent reported an error".into());
                    // (It may quote what it was given: the team's secrets
                    // are blanked, as in its stderr.)
                    (TurnStatus::Failed, Some(self.team.redact(&reason)))
                } else {
                    (TurnStatus::Completed, None)
                };
                self.end_turn(status, error, Some(result)).await;
            }
            AgentEvent::PermissionRequest {
                request_id,
                tool_name,
                input,
                ..
            } => self.on_permission(request_id, tool_name, input).await,
            AgentEvent::ControlResponse { success, error, .. } => {
                if !success {
                    tracing::warn!(team = %self.team.name, error = ?error, "agent refused a control request");
                }
            }
            AgentEvent::Init { lost: true, .. } => self.note_lost(),
            AgentEvent::Init { .. } | AgentEvent::Other { .. } => {}
        }
    }

    /// Note each tool's result on its use (kept with the turn) and make
    /// their stream items, with how long each tool took.
    fn finish_tools(&mut self, seq: u64, results: &[iris_agent::ToolResult]) -> Vec<StreamItem> {
        let Some(r) = self.current.as_mut() else {
            return Vec::new();
        };
        results
            .iter()
            .map(|result| {
                let took = r
                    .tool_started
                    .remove(&result.tool_use_id)
                    .map(|t| t.elapsed().as_millis() as u64);
                if let Some(used) = r.tool_uses.iter_mut().find(|u| u.id == result.tool_use_id) {
                    used.finish(result, took);
                }
                StreamItem {
                    seq,
                    kind: StreamKind::ToolResult,
                    data: tool_result_data(result, took),
                }
            })
            .collect()
    }

    pub(super) async fn on_bad_output(&mut self, e: LineError) {
        tracing::warn!(team = %self.team.name, error = %e, "bad agent output; restarting the process");
        self.kill_process().await;
        if self.current.is_some() {
            self.end_turn(
                TurnStatus::Failed,
                Some(format!("team `{}`: {e}", self.team.name)),
                None,
            )
            .await;
        }
    }

    pub(super) async fn cancel(&mut self, turn_id: Option<&str>) -> bool {
        if let Some(id) = turn_id {
            for q in self.queue.iter_mut() {
                if let Some(pos) = q.iter().position(|j| j.tracker.id == id) {
                    let job = q.remove(pos);
                    self.shared.queued.fetch_sub(1, Ordering::AcqRel);
                    if let Some(job) = job {
                        self.finish_job(
                            &job.tracker,
                            TurnStatus::Cancelled,
                            Some("cancelled".into()),
                        )
                        .await;
                    }
                    return true;
                }
            }
        }
        let Some(r) = self.current.as_mut() else {
            return false;
        };
        if turn_id.is_some_and(|id| id != r.tracker.id) {
            return false;
        }
        if r.interrupt_sent.is_some() {
            return true;
        }
        r.interrupt_sent = Some(Instant::now());
        if self.team.agent().is_persistent() {
            self.interrupt_seq += 1;
            let line = protocol::interrupt_line(&format!("iris_interrupt_{}", self.interrupt_seq));
            let sent = match self.process.as_mut() {
                Some(p) => p.send(&line).await.is_ok(),
                None => false,
            };
            if !sent {
                self.kill_process().await;
                self.end_turn(TurnStatus::Cancelled, Some("cancelled".into()), None)
                    .await;
            }
        } else {
            self.kill_process().await;
            self.end_turn(TurnStatus::Cancelled, Some("cancelled".into()), None)
                .await;
        }
        true
    }

    /// Cancel every queued turn and interrupt the running one.
    pub(super) async fn cancel_pending(&mut self, reason: &str) {
        let jobs: Vec<TurnJob> = self.queue.iter_mut().flat_map(|q| q.drain(..)).collect();
        self.shared.queued.fetch_sub(jobs.len(), Ordering::AcqRel);
        for job in jobs {
            self.finish_job(&job.tracker, TurnStatus::Cancelled, Some(reason.to_owned()))
                .await;
        }
        if self.current.is_some() {
            self.cancel(None).await;
        }
    }

    /// Finish the running turn.
    pub(super) async fn end_turn(
        &mut self,
        status: TurnStatus,
        error: Option<String>,
        result: Option<TurnResult>,
    ) {
        self.flush_stream();
        // Its permission requests die with it.
        self.expire_all("the turn ended").await;
        let Some(r) = self.current.take() else { return };
        let result = result.unwrap_or_default();
        let response = match result
            .text
            .filter(|t| !t.is_empty() && status == TurnStatus::Completed)
        {
            Some(t) => t,
            None if !r.deltas.is_empty() => r.deltas,
            None => r.assistant_text,
        };
        let outcome = TurnOutcome {
            status,
            response,
            error,
            tool_uses: r.tool_uses,
            usage: result.usage,
            cost_usd: result.cost_usd,
            duration_ms: r.started.elapsed().as_millis() as u64,
            completed_at: 0, // set by `complete`
        };
        self.last_used = Instant::now();
        self.shared.last_used.store(now_ms(), Ordering::Relaxed);
        if self.process.is_some() || !self.team.agent().is_persistent() {
            self.set_state(ProcState::Ready);
        }
        self.complete(&r.tracker, outcome, r.events, r.events_dropped)
            .await;
        if let Some((file, cwd)) = &self.transcript {
            crate::pool::transcript::save(
                &self.pool.store,
                &self.team.name,
                &self.session.id,
                file,
                cwd,
            )
            .await;
        }
    }

    /// Finish a turn that never ran.
    pub(super) async fn finish_job(
        &mut self,
        tracker: &Arc<TurnTracker>,
        status: TurnStatus,
        error: Option<String>,
    ) {
        let outcome = TurnOutcome {
            status,
            response: String::new(),
            error,
            tool_uses: Vec::new(),
            usage: None,
            cost_usd: None,
            duration_ms: 0,
            completed_at: 0, // set by `complete`
        };
        self.complete(tracker, outcome, Vec::new(), 0).await;
    }

    /// Tell waiters, publish, then persist (waiters are not held up by the write).
    pub(super) async fn complete(
        &self,
        tracker: &Arc<TurnTracker>,
        mut outcome: TurnOutcome,
        events: Vec<EventRow>,
        dropped: i64,
    ) {
        // One end time for memory and the record, so a reader that sees the
        // turn ended in memory before the write sees the same time.
        outcome.completed_at = now_ms();
        let finish = outcome.finish(dropped);
        let data = json!({
            "messageId": tracker.id,
            "status": outcome.status,
            "response": outcome.response,
            "error": outcome.error,
            "durationMs": outcome.duration_ms,
            "usage": outcome.usage,
            "costUsd": outcome.cost_usd,
        });
        if tracker.outcome().is_some() {
            return;
        }
        let team = self.team.name.clone();
        metrics::counter!("iris_turns_total", "team" => team.clone(), "status" => outcome.status.as_str())
            .increment(1);
        metrics::histogram!("iris_turn_duration_seconds", "team" => team)
            .record(outcome.duration_ms as f64 / 1000.0);
        // Subscribers hear of the end before waiters return, so a caller that
        // subscribes after its call returned never sees this turn's events.
        self.publish(EventKind::TurnCompleted, Some(&tracker.id), data);
        tracker.finish(outcome);
        self.pool.recorder.write(StoreWrite::TurnFinished {
            id: tracker.id.clone(),
            finish,
            events,
        });
        // Memory answers for the turn until the database has it.
        let pool = self.pool.clone();
        let id = tracker.id.clone();
        self.pool.recorder.then(move || pool.forget(&id));
    }
}
