//! The watchdog: when something must happen without outside input
//! (silence, a spawn that does not answer, a job's time limit, an idle
//! process, an approval's timeout), and what happens then.

use super::*;

impl Actor {
    pub(super) fn grace(&self) -> Duration {
        Duration::from_millis(self.pool.settings().shutdown_grace)
    }

    /// The next moment something must happen without outside input.
    pub(super) fn deadline(&self) -> Option<Instant> {
        let limit = self.limit_deadline();
        match (self.next_deadline(), limit) {
            (Some(d), Some(l)) => Some(d.min(l)),
            (d, l) => d.or(l),
        }
    }

    /// When the running turn's own time limit (a job's `timeout`) runs out.
    pub(super) fn limit_deadline(&self) -> Option<Instant> {
        let r = self.current.as_ref()?;
        if r.interrupt_sent.is_some() {
            return None;
        }
        Some(r.started + r.tracker.limit?)
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let s = self.pool.settings();
        if let Some(d) = self.approval_deadline() {
            // Waiting for a person is not silence: only the approval's own
            // timeout runs (and an interrupt's grace).
            return Some(match self.current.as_ref().and_then(|r| r.interrupt_sent) {
                Some(at) => d.min(at + self.grace()),
                None => d,
            });
        }
        match &self.current {
            Some(r) => Some(match r.interrupt_sent {
                Some(at) => at + self.grace(),
                None if r.fresh_process && !r.got_output => {
                    r.started + Duration::from_millis(s.spawn_timeout)
                }
                None => r.last_output + Duration::from_millis(s.response_timeout),
            }),
            None if self.idle() => Some(self.last_used + self.team.idle_timeout(&s)),
            None => None,
        }
    }

    /// Returns true when the actor has ended.
    pub(super) async fn on_deadline(&mut self) -> bool {
        let Some(deadline) = self.deadline() else {
            return false;
        };
        if Instant::now() < deadline {
            return false;
        }
        if self.limit_deadline().is_some_and(|l| l <= Instant::now()) {
            let limit = self
                .current
                .as_ref()
                .and_then(|r| r.tracker.limit)
                .unwrap_or_default();
            let msg = format!(
                "team `{}`: the time limit of {} ms ran out",
                self.team.name,
                limit.as_millis()
            );
            tracing::warn!(team = %self.team.name, "{msg}; restarting the process");
            self.kill_process().await;
            self.end_turn(TurnStatus::TimedOut, Some(msg), None).await;
            return false;
        }
        let interrupt_due = self
            .current
            .as_ref()
            .and_then(|r| r.interrupt_sent)
            .is_some_and(|at| at + self.grace() <= Instant::now());
        if !interrupt_due {
            if self
                .approval_deadline()
                .is_some_and(|d| d <= Instant::now())
            {
                self.expire_due().await;
                return false;
            }
            if self.approval_deadline().is_some() {
                return false;
            }
        }
        // Silent because it waits on another team's answer (an `iris` tool
        // call): no hang; look again a silence later. (Checked when the
        // silence runs out, not on every line of output.)
        let silent = self
            .current
            .as_ref()
            .is_some_and(|r| r.interrupt_sent.is_none() && (r.got_output || !r.fresh_process));
        if silent && self.pool.waits_on_others(&self.session.id) {
            if let Some(r) = self.current.as_mut() {
                r.last_output = Instant::now();
            }
            return false;
        }
        let Some(r) = &self.current else {
            // Idle too long: leave the pool, unless a command is on its way.
            if !self.pool.retire(&self.shared, &mut self.rx) {
                self.last_used = Instant::now();
                return false;
            }
            tracing::info!(team = %self.team.name, session = %self.session.id, "idle timeout: stopping the process");
            self.stop_everything("idle timeout").await;
            return true;
        };
        let (status, msg) = if r.interrupt_sent.is_some() {
            (
                TurnStatus::Cancelled,
                "cancelled; the agent did not stop in time and was killed".to_owned(),
            )
        } else if r.fresh_process && !r.got_output {
            (
                TurnStatus::Failed,
                format!(
                    "team `{}`: the agent did not start within {} ms",
                    self.team.name,
                    self.pool.settings().spawn_timeout
                ),
            )
        } else {
            (
                TurnStatus::TimedOut,
                format!(
                    "team `{}`: no output from the agent for {} ms",
                    self.team.name,
                    self.pool.settings().response_timeout
                ),
            )
        };
        tracing::warn!(team = %self.team.name, "{msg}; restarting the process");
        self.kill_process().await;
        self.end_turn(status, Some(msg), None).await;
        false
    }
}
