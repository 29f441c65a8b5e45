//! Team ownership across the nodes of a cluster (docs/scale-out.md):
//! with `cluster.secret`, each team's processes run on one node at a time,
//! the holder of the team's lease (`team_leases`, on the database's clock,
//! with a fencing token). A call for a team that reaches another node is
//! forwarded to the owner, signed with the cluster's secret and carrying
//! the caller it authenticated. A lease not renewed for `cluster.leaseTtl`
//! is free: the next node a call for the team reaches takes it, and with it
//! what the old owner left (its messages of the team end `failed`, its
//! approvals expire, its jobs are let go and run here).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iris_storage::Store;
use serde_json::{Value, json};

use crate::clock::now_ms;
use crate::config::Config;
use crate::ctx::Ctx;
use crate::error::{ErrorKind, IrisError, Result};

/// The header that names the forwarding node.
pub const NODE_HEADER: &str = "x-iris-node";
/// The header that carries the signature of a forwarded call (the
/// webhooks' scheme: `t=<unix seconds>,v1=<hex HMAC-SHA256>`).
pub const SIGNATURE_HEADER: &str = "x-iris-cluster-signature";
/// Where a node takes forwarded calls.
pub const DISPATCH_PATH: &str = "/internal/v1/dispatch";
/// How long another node's hold on a team is taken as read (a dead
/// owner's team is looked at again after this).
const KNOWN_FOR: Duration = Duration::from_millis(500);

/// How far a forwarded call's signature time may be from this node's.
const SIGNATURE_TOLERANCE_SECS: i64 = 60;

/// Where an operation is carried out in a cluster whose teams are owned
/// by one node each (docs/scale-out.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runs {
    /// On the node the call reached.
    Anywhere,
    /// On the owner of the team its `toTeam` (or `team`) names, else of
    /// the team of the conversation its `sessionId` names.
    OnTeamsOwner,
    /// On the owner of the team of the job its `jobId` names.
    OnJobsOwner,
}

/// Who runs a team's processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This node (its lease taken or renewed).
    Here,
    /// Another node, reached at `url`.
    There { node: String, url: String },
}

pub struct Ownership {
    store: Store,
    node: String,
    ttl_ms: i64,
    secret: Option<String>,
    /// The leases this node holds: team → fencing token, and when it was
    /// last taken or renewed (this node's clock).
    held: Mutex<HashMap<String, (i64, std::time::Instant)>>,
    /// A look for expired leases is under way.
    sweeping: std::sync::atomic::AtomicBool,
    http: reqwest::Client,
    /// Teams another node holds, as last read, and when: trusted for
    /// [`KNOWN_FOR`] (a forwarded call costs no database round trip).
    known: Mutex<HashMap<String, (Owner, std::time::Instant)>>,
    /// Told each team this node took over from another (its jobs run here).
    taken_over: std::sync::OnceLock<Box<dyn Fn(String) + Send + Sync>>,
}

impl Ownership {
    pub(crate) fn new(config: &Config, store: Store, node: &str) -> Self {
        Ownership {
            store,
            node: node.to_owned(),
            ttl_ms: config.cluster.lease_ttl_ms() as i64,
            secret: config.cluster.secret.clone(),
            held: Mutex::new(HashMap::new()),
            sweeping: std::sync::atomic::AtomicBool::new(false),
            // No pool of idle connections held for long: nodes come and go.
            http: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            taken_over: std::sync::OnceLock::new(),
            known: Mutex::new(HashMap::new()),
        }
    }

    /// What to do with a team taken over from another node (set once).
    pub(crate) fn on_take_over(&self, f: impl Fn(String) + Send + Sync + 'static) {
        let _ = self.taken_over.set(Box::new(f));
    }

    /// Whether teams are owned (a cluster with `cluster.secret`).
    pub fn enabled(&self) -> bool {
        self.secret.is_some()
    }

    /// The teams this node holds, with their tokens.
    pub fn held(&self) -> Vec<(String, i64)> {
        let mut out: Vec<(String, i64)> = self
            .held
            .lock()
            .map(|h| h.iter().map(|(k, (t, _))| (k.clone(), *t)).collect())
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Who runs `team` now: this node when its lease is free, expired or
    /// already this node's (taken or renewed; a team taken from another
    /// node is cleaned up first), else its holder.
    ///
    /// # Errors
    /// The database, or a holder that cannot be reached (no
    /// `advertiseUrl`).
    pub(crate) async fn owner(&self, team: &str) -> Result<Owner> {
        if !self.enabled() {
            return Ok(Owner::Here);
        }
        // Held and renewed within half the TTL: the renewal keeps it (and
        // drops it, within a third of the TTL, if another node took it), no
        // database round trip per call. Older (this node was paused or cut
        // off): asked again below before anything is accepted.
        let fresh = std::time::Duration::from_millis((self.ttl_ms / 2).max(1) as u64);
        if self
            .held
            .lock()
            .is_ok_and(|h| h.get(team).is_some_and(|(_, at)| at.elapsed() < fresh))
        {
            return Ok(Owner::Here);
        }
        let recent = self.known.lock().ok().and_then(|k| {
            k.get(team)
                .filter(|(_, at)| at.elapsed() < KNOWN_FOR)
                .map(|(o, _)| o.clone())
        });
        if let Some(owner) = recent {
            return Ok(owner);
        }
        let store_err = |e| IrisError::from_store("reading a team's lease", e);
        let (before, _) = self.store.lease(team).await.map_err(store_err)?;
        if let Some(lease) = self
            .store
            .acquire_lease(team, &self.node, self.ttl_ms)
            .await
            .map_err(store_err)?
        {
            self.store.hold_fence(team, lease.token);
            let taken = self
                .held
                .lock()
                .map(|mut h| {
                    h.insert(team.to_owned(), (lease.token, std::time::Instant::now()))
                        .is_none()
                })
                .unwrap_or(false);
            if let Some(prev) = before.filter(|b| b.node_id != self.node) {
                self.take_over(team, &prev.node_id).await;
            } else if taken {
                tracing::info!(team, token = lease.token, "this node owns the team");
            }
            return Ok(Owner::Here);
        }
        let (lease, _) = self.store.lease(team).await.map_err(store_err)?;
        let holder = lease.map(|l| l.node_id).unwrap_or_default();
        let url = self
            .store
            .nodes()
            .await
            .map_err(store_err)?
            .into_iter()
            .find(|n| n.id == holder)
            .and_then(|n| n.advertise_url)
            .ok_or_else(|| {
                IrisError::new(
                    ErrorKind::ServiceUnavailable,
                    format!("team `{team}` runs on node `{holder}`, which has no advertiseUrl"),
                )
            })?;
        let owner = Owner::There { node: holder, url };
        if let Ok(mut k) = self.known.lock() {
            k.insert(team.to_owned(), (owner.clone(), std::time::Instant::now()));
        }
        Ok(owner)
    }

    /// `team` was taken from node `from`: what it left of the team ends.
    async fn take_over(&self, team: &str, from: &str) {
        let reason = format!(
            "node `{from}`, which ran team `{team}`, stopped renewing its lease; node `{}` took the team over",
            self.node
        );
        match self
            .store
            .take_over_team(team, from, &reason, now_ms())
            .await
        {
            Ok(expired) => {
                tracing::warn!(team, from, approvals = ?expired, "took a team over from another node");
                if let Some(f) = self.taken_over.get() {
                    f(team.to_owned());
                }
            }
            Err(e) => tracing::warn!(team, from, error = %e, "taking a team over"),
        }
    }

    /// Renew this node's leases every third of their life; a lease another
    /// node took meanwhile is dropped, and `lost` is told its team. Then
    /// take over the teams whose lease ran out (their node died, or shut
    /// down): their waiting work runs here without waiting for a call.
    pub(crate) fn spawn_renewal(self: &Arc<Self>, lost: impl Fn(String) + Send + 'static) {
        if !self.enabled() {
            return;
        }
        let weak = Arc::downgrade(self);
        let every = Duration::from_millis((self.ttl_ms / 3).max(500) as u64);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(me) = weak.upgrade() else { return };
                for (team, token) in me.held() {
                    match me.store.acquire_lease(&team, &me.node, me.ttl_ms).await {
                        Ok(Some(l)) if l.token == token => {
                            if let Ok(mut h) = me.held.lock() {
                                h.insert(team, (token, std::time::Instant::now()));
                            }
                        }
                        Ok(_) => {
                            if let Ok(mut h) = me.held.lock() {
                                h.remove(&team);
                            }
                            tracing::warn!(
                                team,
                                "another node took the team over; its processes here stop"
                            );
                            lost(team);
                        }
                        Err(e) => tracing::warn!(team, error = %e, "renewing a team's lease"),
                    }
                }
                // Apart from the renewals, so that a take-over that waits
                // (a lease row a paused node still locks) never delays them.
                use std::sync::atomic::Ordering;
                if !me.sweeping.swap(true, Ordering::AcqRel) {
                    let me = me.clone();
                    tokio::spawn(async move {
                        if let Ok((all, clock)) = me.store.leases().await {
                            for l in all
                                .iter()
                                .filter(|l| l.node_id != me.node && l.expires_at < clock)
                            {
                                if let Err(e) = me.owner(&l.team).await {
                                    tracing::warn!(team = %l.team, error = %e.message, "taking over a team whose lease ran out");
                                }
                            }
                        }
                        me.sweeping.store(false, Ordering::Release);
                    });
                }
            }
        });
    }

    /// Give back every lease (a clean shutdown).
    pub(crate) async fn release(&self) {
        if !self.enabled() {
            return;
        }
        if let Err(e) = self.store.release_leases(&self.node).await {
            tracing::warn!(error = %e, "giving back the teams' leases");
        }
        if let Ok(mut h) = self.held.lock() {
            h.clear();
        }
    }

    /// Send `operation` to the node at `url` for the caller of `ctx`
    /// (`watch`: the owner names each turn the call starts as it starts).
    async fn send(
        &self,
        url: &str,
        ctx: &Ctx,
        operation: &str,
        params: Value,
        watch: bool,
    ) -> Result<reqwest::Response> {
        let secret = self.secret.as_deref().unwrap_or_default();
        let body = serde_json::to_vec(&json!({
            "operation": operation,
            "params": params,
            "principal": &*ctx.principal,
            "ip": ctx.origin.ip.map(|ip| ip.to_string()),
            "requestId": ctx.request_id(),
            "watch": watch,
        }))
        .map_err(|e| IrisError::internal("writing a forwarded call", e))?;
        let signature = iris_webhooks::sign::signature(secret, now_ms() / 1000, &body);
        let target = format!("{}{DISPATCH_PATH}", url.trim_end_matches('/'));
        self.http
            .post(&target)
            .header(NODE_HEADER, &self.node)
            .header(SIGNATURE_HEADER, signature)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| unreachable_owner(&e))
    }

    /// Carry out `operation` on the node at `url` for the caller of `ctx`.
    ///
    /// # Errors
    /// The other node's error, or why it could not be reached.
    pub(crate) async fn forward(
        &self,
        url: &str,
        ctx: &Ctx,
        operation: &str,
        params: Value,
    ) -> Result<Value> {
        let resp = self.send(url, ctx, operation, params, false).await?;
        let ok = resp.status().is_success();
        let answer: Value = resp.json().await.map_err(|e| not_json(&e))?;
        if ok {
            Ok(answer)
        } else {
            Err(IrisError::from_body(&answer))
        }
    }

    /// [`Ownership::forward`], with each turn the call starts on the owner
    /// sent to `started` (its message id) as it starts: the owner answers
    /// a line of JSON per turn, then one with the result or the error.
    ///
    /// # Errors
    /// As [`Ownership::forward`]; also an answer that ends before its result.
    pub(crate) async fn forward_watched(
        &self,
        url: &str,
        ctx: &Ctx,
        operation: &str,
        params: Value,
        started: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Result<Value> {
        let mut resp = self.send(url, ctx, operation, params, true).await?;
        let lines = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-ndjson"));
        // An error, or a node that answers plainly (one that does not know
        // `watch`): one JSON body.
        if !resp.status().is_success() || !lines {
            let ok = resp.status().is_success();
            let answer: Value = resp.json().await.map_err(|e| not_json(&e))?;
            return if ok {
                Ok(answer)
            } else {
                Err(IrisError::from_body(&answer))
            };
        }
        let (mut buf, mut scanned, mut turn) = (Vec::new(), 0, None::<String>);
        loop {
            let chunk = resp.chunk().await.map_err(|e| unreachable_owner(&e))?;
            let done = chunk.is_none();
            buf.extend_from_slice(chunk.as_deref().unwrap_or_default());
            if done && !buf.is_empty() && !buf.ends_with(b"\n") {
                buf.push(b'\n');
            }
            while let Some(at) = buf[scanned..].iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=scanned + at).collect();
                scanned = 0;
                let v: Value = serde_json::from_slice(&line).map_err(|e| not_json(&e))?;
                if let Some(id) = v.get("turn").and_then(Value::as_str) {
                    turn = Some(id.to_owned());
                    let _ = started.send(id.to_owned());
                } else if let Some(result) = v.get("result") {
                    return Ok(result.clone());
                } else if let Some(error) = v.get("error") {
                    return Err(IrisError::from_body(error));
                }
            }
            scanned = buf.len();
            if done {
                break;
            }
        }
        // Cut off after a turn started: it goes on there (it is durable);
        // say which, so the caller follows it rather than sending again.
        Err(match turn {
            Some(id) => IrisError::new(
                ErrorKind::ServiceUnavailable,
                format!("the node that runs this team stopped answering; message {id} goes on there: follow it or read it later, do not send it again"),
            )
            .with_details(json!({"messageId": id})),
            None => IrisError::new(
                ErrorKind::ServiceUnavailable,
                "the node that runs this team stopped answering before the call ended",
            ),
        })
    }

    /// Whether `signature` signs `body` with the cluster's secret, now.
    pub fn verify(&self, signature: &str, body: &[u8]) -> bool {
        match &self.secret {
            Some(secret) => iris_webhooks::sign::verify(
                signature,
                secret,
                body,
                now_ms() / 1000,
                SIGNATURE_TOLERANCE_SECS,
            ),
            None => false,
        }
    }
}

fn unreachable_owner(e: &reqwest::Error) -> IrisError {
    IrisError::new(
        ErrorKind::ServiceUnavailable,
        format!("the node that runs this team cannot be reached: {e}"),
    )
}

fn not_json(e: &dyn std::fmt::Display) -> IrisError {
    IrisError::new(
        ErrorKind::ServiceUnavailable,
        format!("the node that runs this team answered something that is not JSON: {e}"),
    )
}
