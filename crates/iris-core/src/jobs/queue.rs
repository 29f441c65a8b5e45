//! The jobs waiting and running: the scheduler's state ([`JobQueue`]),
//! kept in this process by [`LocalQueue`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use iris_storage::JobRecord;

use crate::clock::now_ms;
use crate::pool::turn::{Priority, TurnTracker};

/// A job waiting for its turn to be handed to the pool. Only its id: the
/// rest (up to a megabyte of task) is read back from the database when it
/// goes, so a long queue costs little memory.
#[derive(Debug, Clone)]
pub struct Waiting {
    pub id: String,
}

/// One team's jobs.
#[derive(Default)]
struct TeamJobs {
    /// By priority, then arrival.
    waiting: BTreeMap<(Priority, u64), Waiting>,
    /// Handed to the pool, not yet ended.
    running: HashMap<String, Arc<TurnTracker>>,
    /// Moving average of this team's job durations (ms).
    average_ms: Option<f64>,
}

#[derive(Default)]
struct State {
    teams: HashMap<String, TeamJobs>,
    /// Where each waiting job is: team and key.
    index: HashMap<String, (String, (Priority, u64))>,
    /// Taken from the queue, not yet in the pool.
    dispatching: HashSet<String>,
    /// Cancelled while being dispatched: ended instead of submitted.
    /// Jobs cancelled while being dispatched, with the cancel's reason.
    cancelled: HashMap<String, String>,
    arrivals: u64,
}

/// Where a job stands in its team's queue, for its record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Place {
    /// 1 for the next job to run; `None` once it is not waiting.
    pub position: Option<usize>,
    /// When it should end (Unix ms), from the team's average job duration;
    /// `None` until one of the team's jobs has ended.
    pub estimated_completion: Option<i64>,
}

/// The scheduler's state: the jobs waiting per team by priority then
/// arrival, those being handed to the pool, those running, and each
/// team's average duration. [`LocalQueue`] keeps it in this process; a
/// cluster's shares it between nodes behind this same interface.
pub trait JobQueue: Send + Sync {
    /// Jobs waiting, in all.
    fn waiting(&self) -> usize;
    /// Queue a job whose records are written; returns its place.
    fn enqueue(&self, job: &JobRecord) -> Place;
    /// Where job `id` stands, if it waits here.
    fn place(&self, id: &str) -> Option<Place>;
    /// When a running job of `team` should end, from the team's average.
    fn estimate_running(&self, team: &str, started_at: Option<i64>) -> Option<i64>;
    /// Take job `id` out of the queue, if it waits.
    fn take_waiting(&self, id: &str) -> Option<(String, Waiting)>;
    /// The next jobs to hand to the pool: per team, while a slot is free.
    fn next_batch(&self) -> Vec<(String, (Priority, u64), Waiting)>;
    /// Return a job the pool could not take, at its place.
    fn put_back(&self, team: &str, key: (Priority, u64), w: Waiting);
    /// Job `tracker` was handed to the pool.
    fn started(&self, team: &str, tracker: Arc<TurnTracker>);
    /// Running job `id` of `team` ended after `duration_ms`.
    fn ended(&self, team: &str, id: &str, duration_ms: Option<u64>);
    /// Dispatching of job `id` is over (it failed or was cancelled);
    /// whether it had been cancelled meanwhile.
    fn dispatched(&self, id: &str) -> bool;
    /// Dispatching of job `id` ends here if it was cancelled meanwhile:
    /// the cancel's reason.
    fn dispatched_if_cancelled(&self, id: &str) -> Option<String>;
    /// Cancel job `id` for `reason` if it is being dispatched (and not yet
    /// cancelled); whether it was.
    fn cancel_dispatching(&self, id: &str, reason: &str) -> bool;
    /// The jobs handed to the pool and not ended.
    fn running_ids(&self) -> Vec<String>;
    /// The running turn of job `id`, if it runs.
    fn running_turn(&self, id: &str) -> Option<Arc<TurnTracker>>;
    /// Seed a team's average from its recent turns, if none is known yet.
    fn seed_average(&self, team: &str, avg_ms: Option<f64>);
}

/// [`JobQueue`] in this process's memory.
pub struct LocalQueue {
    state: Mutex<State>,
    /// Jobs of one team handed to the pool at once.
    concurrency: usize,
}

impl LocalQueue {
    pub fn new(concurrency: usize) -> Self {
        LocalQueue {
            state: Mutex::new(State::default()),
            concurrency: concurrency.max(1),
        }
    }

    fn place_in(&self, team: &TeamJobs, key: (Priority, u64)) -> Place {
        let ahead = team.waiting.range(..key).count();
        let estimated_completion = team.average_ms.map(|avg| {
            // Jobs ahead and running share the team's slots.
            let rounds = ((ahead + team.running.len()) / self.concurrency) as f64 + 1.0;
            now_ms() + (avg * rounds) as i64
        });
        Place {
            position: Some(ahead + 1),
            estimated_completion,
        }
    }
}

/// Weight of the newest duration in the moving average.
const AVERAGE_WEIGHT: f64 = 0.3;

impl JobQueue for LocalQueue {
    /// Jobs waiting, in all.
    fn waiting(&self) -> usize {
        self.state.lock().map(|s| s.index.len()).unwrap_or(0)
    }

    /// Queue a job whose records are written; returns its place.
    fn enqueue(&self, job: &JobRecord) -> Place {
        let priority = parse_priority(&job.job.priority);
        let waiting = Waiting {
            id: job.job.id.clone(),
        };
        {
            let Ok(mut s) = self.state.lock() else {
                return Place {
                    position: None,
                    estimated_completion: None,
                };
            };
            s.arrivals += 1;
            let key = (priority, s.arrivals);
            s.index
                .insert(job.job.id.clone(), (job.job.team.clone(), key));
            let team = s.teams.entry(job.job.team.clone()).or_default();
            team.waiting.insert(key, waiting);
            self.place_in(team, key)
        }
    }

    /// Where job `id` stands, if it waits here.
    fn place(&self, id: &str) -> Option<Place> {
        let s = self.state.lock().ok()?;
        let (team, key) = s.index.get(id)?;
        Some(self.place_in(s.teams.get(team)?, *key))
    }

    /// When a running job of `team` should end, from the team's average.
    fn estimate_running(&self, team: &str, started_at: Option<i64>) -> Option<i64> {
        let s = self.state.lock().ok()?;
        let avg = s.teams.get(team)?.average_ms?;
        // One running longer than the average ends "now", not in the past.
        Some((started_at.unwrap_or_else(now_ms) + avg as i64).max(now_ms()))
    }

    /// Take job `id` out of the queue; false when it was not waiting.
    fn take_waiting(&self, id: &str) -> Option<(String, Waiting)> {
        let mut s = self.state.lock().ok()?;
        let (team, key) = s.index.remove(id)?;
        let w = s.teams.get_mut(&team)?.waiting.remove(&key)?;
        Some((team, w))
    }

    /// The next jobs to hand to the pool: per team, while a slot is free.
    fn next_batch(&self) -> Vec<(String, (Priority, u64), Waiting)> {
        let Ok(mut s) = self.state.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let State {
            teams,
            index,
            dispatching,
            ..
        } = &mut *s;
        for (name, team) in teams.iter_mut() {
            while team.running.len() + out.iter().filter(|(t, _, _)| t == name).count()
                < self.concurrency
            {
                let Some((key, w)) = team.waiting.pop_first() else {
                    break;
                };
                index.remove(&w.id);
                dispatching.insert(w.id.clone());
                out.push((name.clone(), key, w));
            }
        }
        out
    }

    /// Return a job the pool could not take, at its place.
    fn put_back(&self, team: &str, key: (Priority, u64), w: Waiting) {
        if let Ok(mut s) = self.state.lock() {
            s.dispatching.remove(&w.id);
            // A cancel meanwhile finds it waiting again and ends it there.
            s.cancelled.remove(&w.id);
            s.index.insert(w.id.clone(), (team.to_owned(), key));
            s.teams
                .entry(team.to_owned())
                .or_default()
                .waiting
                .insert(key, w);
        }
    }

    fn started(&self, team: &str, tracker: Arc<TurnTracker>) {
        if let Ok(mut s) = self.state.lock() {
            s.dispatching.remove(&tracker.id);
            // A cancel that came too late for the dispatcher to see is
            // the running turn's to take (`Jobs::cancel` interrupts it).
            s.cancelled.remove(&tracker.id);
            s.teams
                .entry(team.to_owned())
                .or_default()
                .running
                .insert(tracker.id.clone(), tracker);
        }
    }

    fn ended(&self, team: &str, id: &str, duration_ms: Option<u64>) {
        if let Ok(mut s) = self.state.lock()
            && let Some(t) = s.teams.get_mut(team)
        {
            t.running.remove(id);
            if let Some(d) = duration_ms {
                let d = d as f64;
                t.average_ms = Some(match t.average_ms {
                    Some(avg) => avg + AVERAGE_WEIGHT * (d - avg),
                    None => d,
                });
            }
        }
    }

    /// Dispatching of job `id` is over (it failed or was cancelled);
    /// whether it had been cancelled meanwhile.
    fn dispatched(&self, id: &str) -> bool {
        self.state.lock().is_ok_and(|mut s| {
            s.dispatching.remove(id);
            s.cancelled.remove(id).is_some()
        })
    }

    /// Dispatching of job `id` ends here if it was cancelled meanwhile:
    /// the cancel's reason.
    fn dispatched_if_cancelled(&self, id: &str) -> Option<String> {
        let mut s = self.state.lock().ok()?;
        let reason = s.cancelled.remove(id)?;
        s.dispatching.remove(id);
        Some(reason)
    }

    /// Cancel job `id` if it is being dispatched; whether it was.
    fn cancel_dispatching(&self, id: &str, reason: &str) -> bool {
        self.state.lock().is_ok_and(|mut s| {
            s.dispatching.contains(id)
                && s.cancelled
                    .insert(id.to_owned(), reason.to_owned())
                    .is_none()
        })
    }

    /// The jobs handed to the pool and not ended.
    fn running_ids(&self) -> Vec<String> {
        self.state
            .lock()
            .map(|s| {
                s.teams
                    .values()
                    .flat_map(|t| t.running.keys().cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The running turn of job `id`, if it runs.
    fn running_turn(&self, id: &str) -> Option<Arc<TurnTracker>> {
        let s = self.state.lock().ok()?;
        s.teams.values().find_map(|t| t.running.get(id).cloned())
    }

    /// Seed a team's average from its recent turns, if none is known yet.
    fn seed_average(&self, team: &str, avg_ms: Option<f64>) {
        if let (Ok(mut s), Some(avg)) = (self.state.lock(), avg_ms) {
            let t = s.teams.entry(team.to_owned()).or_default();
            t.average_ms.get_or_insert(avg);
        }
    }
}

pub(crate) fn parse_priority(p: &str) -> Priority {
    match p {
        "high" => Priority::High,
        "low" => Priority::Low,
        _ => Priority::Normal,
    }
}
