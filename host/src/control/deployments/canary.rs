//! Canary deployments: a new version takes a share of a component's
//! requests beside the active one ([`crate::runtime::canary`] splits them),
//! until it is promoted, rolled back, or judged by the platform.
//!
//! With `auto_rollback`, [`Deployments::judge_canaries`] compares the
//! canary's requests with the active version's since the canary started,
//! every [`JUDGE_EVERY`]: once the canary has served
//! [`CanaryPolicy::min_requests`], it is rolled back when its error rate is
//! above [`CanaryPolicy::max_error_rate`] and above the active version's,
//! or its p99 latency above [`CanaryPolicy::max_p99_ms`] and above the
//! active version's; it is promoted once it has served
//! `promote_after_requests`, or `promote_after_ms` has passed, without
//! either.
//!
//! What counts as a failed request is in [`crate::runtime::canary`]: not a
//! 4xx, not a refusal by an open breaker. The active version's figures
//! excuse the canary ("it fails, but so does the active version") only
//! once the active version has itself served `min_requests` since the
//! canary started: a client that makes the active version fail a few times
//! in a row opens its breaker, after which it serves nothing, and its few
//! failures would otherwise excuse any canary. A canary whose own breaker
//! opened is judged before `min_requests`, on the requests it served.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Deployments;
use super::records::{CanaryEnd, CanaryRecord, ComponentRecord, find_version};
use crate::resilience::breaker::State;
use crate::runtime::DeployError;
use crate::runtime::canary::{CanaryPolicy, TrafficSnapshot};
use crate::runtime::registry::{Canary, Deployment};

/// How often auto-rollback canaries are judged.
pub const JUDGE_EVERY: Duration = Duration::from_millis(250);

/// A canary to start: its share of requests, and whether the platform
/// judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CanaryPlan {
    /// 1 to 99.
    pub percent: u8,
    /// Roll back (or promote) on its own.
    pub auto_rollback: bool,
}

impl CanaryPlan {
    /// A plan, or why `percent` cannot be one.
    pub fn new(percent: u8, auto_rollback: bool) -> Result<Self, DeployError> {
        if !(1..=99).contains(&percent) {
            return Err(DeployError::Canary(format!(
                "a canary takes 1 to 99 percent of the requests, not {percent}"
            )));
        }
        Ok(CanaryPlan { percent, auto_rollback })
    }

    pub(super) fn record(&self, version: u64) -> CanaryRecord {
        CanaryRecord { version, percent: self.percent, auto_rollback: self.auto_rollback }
    }
}

/// What the judge decided about one canary.
#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    Keep,
    RollBack(String),
    Promote(String),
}

fn judge(canary: &Canary, active: &Deployment, policy: &CanaryPolicy) -> Verdict {
    let theirs = canary.deployment.traffic.snapshot();
    let ours = active.traffic.snapshot().since(&canary.baseline);
    // A canary whose breaker opened serves nothing more (its share goes to
    // the active version, and refusals are not its requests) until a probe
    // every `open_ms`: it is judged on what it served, however few.
    let open = canary.deployment.breaker.snapshot().state != State::Closed;
    if theirs.requests < policy.min_requests && !(open && theirs.requests > 0) {
        return Verdict::Keep;
    }
    // Too few requests of the active version to compare with: the canary
    // is held to the limits alone.
    let ours = if ours.requests >= policy.min_requests { ours } else { TrafficSnapshot::default() };
    let (rate, active_rate) = (theirs.error_rate(), ours.error_rate());
    if rate > policy.max_error_rate && rate > active_rate {
        return Verdict::RollBack(format!(
            "error rate {rate:.2} over {} requests, above the limit {} and the active \
             version's {active_rate:.2}",
            theirs.requests, policy.max_error_rate
        ));
    }
    let (p99, active_p99) = (theirs.p99_ms().unwrap_or(0.0), ours.p99_ms().unwrap_or(0.0));
    if p99 > policy.max_p99_ms && p99 > active_p99 {
        return Verdict::RollBack(format!(
            "p99 latency up to {p99} ms over {} requests, above the limit {} ms and the \
             active version's {active_p99} ms",
            theirs.requests, policy.max_p99_ms
        ));
    }
    if policy.promote_after_requests.is_some_and(|n| theirs.requests >= n) {
        return Verdict::Promote(format!("{} requests went well", theirs.requests));
    }
    let elapsed = canary.started.elapsed();
    if policy.promote_after_ms.is_some_and(|ms| elapsed >= Duration::from_millis(ms)) {
        return Verdict::Promote(format!("{} s went well", elapsed.as_secs()));
    }
    Verdict::Keep
}

impl Deployments {
    /// Deploy `bytes` as a canary of `name`, which must have an active
    /// version; a canary running already is replaced.
    pub async fn deploy_canary(
        &self,
        name: &str,
        bytes: Vec<u8>,
        plan: CanaryPlan,
    ) -> Result<super::Deployed, DeployError> {
        let deployed = self.deploy_unless_active(name, bytes, None, false, Some(plan)).await?;
        Ok(deployed.expect("deploys whenever unchanged is not skipped"))
    }

    /// Make the canary of `name` its active version; returns that version.
    pub async fn promote(&self, name: &str) -> Result<u64, DeployError> {
        let _name = self.lock_name(name).await;
        self.promote_locked(name, "asked to promote").await
    }

    async fn promote_locked(&self, name: &str, reason: &str) -> Result<u64, DeployError> {
        let mut record = self.active_record(name)?;
        let Some(canary) = self.registry.canary(name) else {
            return Err(DeployError::Canary(format!("{name} has no canary to promote")));
        };
        let version = canary.deployment.version;
        // On a cluster the record may have moved on (another host ended
        // this canary or started another): never act on a stale one.
        if record.canary.as_ref().map(|c| c.version) != Some(version) {
            return Err(DeployError::Concurrent(name.to_string()));
        }
        let _change = self.changes.lock().await;
        self.end_canary(&mut record, "promoted", reason);
        record.active = Some(version);
        self.save(&record)?;
        self.registry.activate(canary.deployment.clone());
        self.registry.take_canary(name);
        self.metrics.deployed(name);
        tracing::info!(component = name, version, reason, "canary promoted");
        Ok(version)
    }

    /// Roll back the canary of `name` for `reason`; the caller holds the
    /// name's lock and has checked that the canary is still the one judged.
    async fn roll_back_locked(&self, name: &str, version: u64, reason: &str) {
        let Ok(mut record) = self.active_record(name) else { return };
        if record.canary.as_ref().map(|c| c.version) != Some(version) {
            // Another host of the cluster ended it (or started another);
            // following the record will bring this host in line.
            return;
        }
        let _change = self.changes.lock().await;
        self.end_canary(&mut record, "rolled back", reason);
        if let Err(error) = self.save(&record) {
            // Still serving, as the record says: judged again next time.
            tracing::error!(component = name, %error, "cannot record the canary's rollback");
            return;
        }
        self.registry.take_canary(name);
        self.metrics.rolled_back(name);
        tracing::warn!(component = name, version, reason, "canary rolled back");
    }

    /// Note in `record` that its canary (if any) ended with `outcome`.
    /// A canary that ends other than promoted is withdrawn: a later
    /// rollback skips it.
    pub(super) fn end_canary(&self, record: &mut ComponentRecord, outcome: &str, reason: &str) {
        if let Some(canary) = record.canary.take() {
            if outcome != "promoted"
                && let Some(version) =
                    record.versions.iter_mut().find(|v| v.version == canary.version)
            {
                version.withdrawn = true;
            }
            record.last_canary = Some(CanaryEnd {
                version: canary.version,
                outcome: outcome.to_string(),
                reason: reason.to_string(),
                at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            });
        }
    }

    /// Give `deployment` its share of requests, compared from now on.
    pub(super) fn start_canary(&self, deployment: Arc<Deployment>, plan: CanaryPlan) {
        let registry = &*self.registry;
        let baseline = registry.get(&deployment.name).map(|a| a.traffic.snapshot());
        registry.set_canary(Canary {
            deployment,
            percent: plan.percent,
            auto: plan.auto_rollback,
            baseline: baseline.unwrap_or_default(),
            started: Instant::now(),
        });
    }

    /// Serve the persisted canary of `record` again after a restart; one
    /// that cannot be loaded ends (`lost at restart`), so that the record
    /// and what serves agree.
    pub(super) async fn restore_canary(&self, record: &ComponentRecord) {
        self.serve_canary(record, true).await;
    }

    /// [`Self::restore_canary`]; a canary that cannot be loaded ends only
    /// when `end_if_lost` (a host following a cluster's change only logs:
    /// one host's trouble must not end the canary for all).
    pub(super) async fn serve_canary(&self, record: &ComponentRecord, end_if_lost: bool) {
        let Some(canary) = &record.canary else { return };
        let loaded = match find_version(record, canary.version) {
            Ok(version) => self.load(&record.name, version).await,
            Err(error) => Err(error),
        };
        match loaded {
            Ok(deployment) => {
                let plan =
                    CanaryPlan { percent: canary.percent, auto_rollback: canary.auto_rollback };
                self.start_canary(deployment, plan);
            }
            Err(error) => {
                tracing::error!(component = record.name, version = canary.version, %error, "cannot restore the canary");
                if !end_if_lost {
                    return;
                }
                let mut record = record.clone();
                self.end_canary(&mut record, "lost at restart", &error.to_string());
                if let Err(error) = self.save(&record) {
                    tracing::error!(component = record.name, %error, "cannot record the lost canary");
                }
            }
        }
    }

    /// One pass of the judge over every auto-rollback canary. A name
    /// being changed (a deploy compiling, say) is skipped until the next
    /// pass rather than waited for, so that it holds up no other name's
    /// verdict; each verdict is reached under the name's lock, on the
    /// canary serving then.
    pub async fn judge_canaries(&self, policy: &CanaryPolicy) {
        for judged in self.registry.canaries().into_iter().filter(|c| c.auto) {
            let name = judged.deployment.name.to_string();
            let Some(_name) = self.try_lock_name(&name) else { continue };
            let registry = &*self.registry;
            let (Some(canary), Some(active)) = (registry.canary(&name), registry.get(&name)) else {
                continue;
            };
            if !Arc::ptr_eq(&canary, &judged) {
                continue; // Replaced since the list was taken: the next pass judges it.
            }
            let version = canary.deployment.version;
            match judge(&canary, &active, policy) {
                Verdict::Keep => {}
                Verdict::RollBack(reason) => self.roll_back_locked(&name, version, &reason).await,
                Verdict::Promote(reason) => {
                    if let Err(error) = self.promote_locked(&name, &reason).await {
                        tracing::error!(component = name, %error, "cannot promote the canary");
                    }
                }
            }
        }
    }

    /// Judge canaries every [`JUDGE_EVERY`] until `stop` resolves.
    pub async fn watch_canaries(
        self: Arc<Self>,
        policy: CanaryPolicy,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut stop = std::pin::pin!(stop);
        let mut every = tokio::time::interval(JUDGE_EVERY);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = every.tick() => self.judge_canaries(&policy).await,
            }
        }
    }
}
