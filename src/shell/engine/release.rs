//! The release driver: load the release, look at its rollouts, decide, carry
//! out the commands (start a target's rollout, stop one, put a promoted
//! target back, file the issue), decide their results and save — the same
//! shape as a rollout's round. Every command is idempotent, so a crash or a
//! lost ETag race only repeats work; the timer visits every release whose
//! wake-up has come, and a rollout that finishes nudges its release at once.

use chrono::{DateTime, Utc};

use super::{Engine, EngineError, MAX_CONFLICT_RETRIES};
use crate::domain::ids::{Actor, RolloutId};
use crate::domain::release::{self, decide, Release, ReleaseCommand, ReleaseEvent, ReleaseSpec, Seen};
use crate::domain::rollout::{Input, Outcome, Phase, Refusal, RefusalKind, ReleaseLink, Rollout};
use crate::ports::store::{StoreError, DUE_BATCH};
use crate::shell::messages::StepMessage;

/// How long one tracker call may take.
const BACKLOG_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// Rounds of command results folded into one save.
const MAX_RELEASE_ROUNDS: usize = 8;

/// A release after an event.
#[derive(Debug, Clone)]
pub struct ReleaseApplied {
    /// The release afterwards.
    pub release: Release,
    /// What the event itself did.
    pub outcome: Outcome,
}

/// A new release id: readable, sortable by time, unique.
fn new_release_id(name: &str, now: DateTime<Utc>) -> Result<RolloutId, EngineError> {
    let short: String = name.chars().take(20).collect();
    let random: String = uuid::Uuid::new_v4().simple().to_string().chars().take(6).collect();
    RolloutId::parse(&format!("{short}-{}-{random}", now.format("%Y%m%d-%H%M%S"))).map_err(|e| EngineError::Invalid(e.to_string()))
}

impl Engine {
    /// Stores a new release and starts its first wave. A release id given
    /// twice for the same spec is the same release (a retried request).
    pub async fn create_release(&self, spec: ReleaseSpec, by: &Actor, id: Option<RolloutId>) -> Result<Release, EngineError> {
        let now = self.clock.now();
        let id = match id {
            Some(id) => id,
            None => new_release_id(&spec.name, now)?,
        };
        let (release, first) = Release::new(id.clone(), spec.clone(), by.clone(), now);
        match self.store.create_release(&release, &first).await {
            Ok(_) => {}
            Err(StoreError::AlreadyExists(_)) => {
                let (existing, _) = self.store.load_release(&id).await?.ok_or_else(|| EngineError::NotFound(id.clone()))?;
                if existing.spec != spec {
                    return Err(EngineError::Invalid(format!("release id '{id}' is taken by a different spec")));
                }
            }
            Err(e) => return Err(e.into()),
        }
        Ok(self.advance_release(&id, None).await?.release)
    }

    /// Looks at a release's rollouts, applies `event` (a person's action) if
    /// any, carries out what follows and saves.
    pub async fn advance_release(&self, id: &RolloutId, event: Option<ReleaseEvent>) -> Result<ReleaseApplied, EngineError> {
        let lock = self.locks.get(&RolloutId::parse(&format!("release.{id}")).unwrap_or_else(|_| id.clone()));
        let _guard = lock.lock().await;
        for _ in 0..MAX_CONFLICT_RETRIES {
            let (loaded, etag) = self.store.load_release(id).await?.ok_or_else(|| EngineError::NotFound(id.clone()))?;
            // What the rollouts say comes first, so a person's event is decided on their phases as
            // they are now: an abort stops a rollout the release had not seen running yet, at once.
            let observed = ReleaseEvent::Observed(self.observe(&loaded).await?);
            let mut pending: Vec<ReleaseEvent> = std::iter::once(observed).chain(event.iter().cloned()).collect();
            // The outcome answered is the person's event's, else the observation's.
            let answered = pending.len() - 1;
            let (mut state, mut history, mut outcome) = (loaded.clone(), Vec::new(), None);
            for round in 0..MAX_RELEASE_ROUNDS {
                if pending.is_empty() {
                    break;
                }
                let mut commands = Vec::new();
                for (i, e) in std::mem::take(&mut pending).into_iter().enumerate() {
                    let d = decide(&state, &e, self.clock.now());
                    if round == 0 && i == answered {
                        outcome = Some(d.outcome.clone());
                    }
                    state = d.release;
                    history.extend(d.history);
                    commands.extend(d.commands);
                }
                for command in commands {
                    pending.extend(self.carry_out(&state, command).await?);
                }
            }
            let outcome = outcome.unwrap_or(Outcome::Refused(Refusal { kind: RefusalKind::Conflict, reason: "no events".into() }));
            if state == loaded && history.is_empty() {
                return Ok(ReleaseApplied { release: state, outcome });
            }
            match self.store.save_release(&state, &etag, &history).await {
                Ok(_) => {
                    self.keep_release_wake_scheduled(&state, loaded.wake_at).await;
                    return Ok(ReleaseApplied { release: state, outcome });
                }
                Err(StoreError::Conflict) => tracing::debug!(release = %id, "stale ETag; deciding again"),
                Err(e) => return Err(e.into()),
            }
        }
        Err(EngineError::Contended(id.to_string()))
    }

    /// The timer's visit to every release whose wake-up has come.
    pub async fn sweep_releases(&self) -> Result<usize, EngineError> {
        let due = self.store.due_releases(self.clock.now(), DUE_BATCH).await?;
        let mut visited = 0;
        for id in due {
            visited += 1;
            if let Err(e) = self.advance_release(&id, None).await {
                tracing::warn!(release = %id, error = %e, "release visit failed");
            }
        }
        Ok(visited)
    }

    /// Keeps a message scheduled for the release's wake-up (a gate's
    /// timeout, a failed call's retry), so it needs no timer. A running wave
    /// is looked at when each of its rollouts finishes (`nudge_release`);
    /// its periodic look is the sweep's, the safety net.
    async fn keep_release_wake_scheduled(&self, release: &Release, before: Option<DateTime<Utc>>) {
        if release.phase == release::ReleasePhase::Running {
            return;
        }
        let Some(at) = release.wake_at.filter(|at| *at > self.clock.now() && Some(*at) != before) else { return };
        let msg = StepMessage::Release { release: release.id.clone(), after: None, at: Some(at) };
        if let Err(e) = self.queue.send(msg.to_out(Some(at))).await {
            tracing::warn!(release = %release.id, error = %e, "could not schedule the release's wake-up; the timer will look");
        }
    }

    /// Tells a finished rollout's release to look now (the timer would, later).
    pub(super) async fn nudge_release(&self, rollout: &Rollout) {
        let Some(link) = &rollout.release else { return };
        let msg = StepMessage::Release { release: link.id.clone(), after: Some(rollout.id.clone()), at: None };
        if let Err(e) = self.queue.send(msg.to_out(None)).await {
            tracing::warn!(release = %link.id, error = %e, "could not nudge the release; the timer will");
        }
    }

    /// Every rollout of the release that exists: its phase, and why it failed.
    async fn observe(&self, release: &Release) -> Result<Vec<Seen>, EngineError> {
        let mut seen = Vec::new();
        for (w, runs) in release.runs.iter().enumerate() {
            // Waves after the current one have no rollouts yet.
            if w > release.wave {
                break;
            }
            for run in runs {
                if run.phase.map(Phase::is_terminal).unwrap_or(false) {
                    continue;
                }
                if let Some((r, _)) = self.store.load(&run.rollout).await? {
                    let cause = r.failure.as_ref().filter(|f| !f.aborted).map(|f| f.evidence.headline());
                    seen.push(Seen { rollout: r.id, phase: r.phase, cause });
                }
            }
        }
        Ok(seen)
    }

    /// One command; its result as the event the release decides next.
    async fn carry_out(&self, release: &Release, command: ReleaseCommand) -> Result<Option<ReleaseEvent>, EngineError> {
        match command {
            ReleaseCommand::StartRollout { wave, target } => self.start_target(release, wave, target).await,
            ReleaseCommand::AbortRollout { rollout, reason } => {
                let by = Actor::parse("sluice").map_err(|e| EngineError::Invalid(e.to_string()))?;
                let input = Input::AbortRequested { by, reason, request: None };
                if let Err(e) = self.apply(&rollout, input.into()).await {
                    tracing::warn!(rollout = %rollout, error = %e, "could not stop the rollout; the next visit tries again");
                }
                Ok(None)
            }
            ReleaseCommand::RevertPromoted { rollout } => Ok(Some(self.revert_promoted(&rollout).await)),
            ReleaseCommand::OpenIssue => Ok(Some(self.open_release_issue(release).await)),
        }
    }

    async fn start_target(&self, release: &Release, wave: usize, target: usize) -> Result<Option<ReleaseEvent>, EngineError> {
        let Some(run) = release.runs.get(wave).and_then(|r| r.get(target)) else { return Ok(None) };
        let (spec, plan) = release_target(&release.spec, wave, target)?;
        let link = ReleaseLink { id: release.id.clone(), wave, wave_name: release.spec.waves[wave].name.clone() };
        let (mut rollout, first) = Rollout::new(run.rollout.clone(), spec, plan, release.created_by.clone(), self.clock.now());
        rollout.release = Some(link);
        match self.store.create(&rollout, &first).await {
            Ok(_) | Err(StoreError::AlreadyExists(_)) => {
                self.enqueue_start(&run.rollout).await?;
                Ok(None)
            }
            Err(e @ StoreError::TargetBusy { .. }) => {
                Ok(Some(ReleaseEvent::StartRefused { rollout: run.rollout.clone(), reason: e.to_string() }))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn revert_promoted(&self, id: &RolloutId) -> ReleaseEvent {
        let failed = |error: String| ReleaseEvent::RevertFailed { rollout: id.clone(), error };
        let rollout = match self.store.load(id).await {
            Ok(Some((r, _))) => r,
            Ok(None) => return failed("the rollout is gone".into()),
            Err(e) => return failed(e.to_string()),
        };
        let router = match crate::ports::traffic::build(&rollout.spec.target, &self.env) {
            Ok(r) => r,
            Err(e) => return failed(e.to_string()),
        };
        match router.revert(true, rollout.created_at).await {
            Ok(_) => ReleaseEvent::Reverted { rollout: id.clone() },
            Err(e) => failed(e.to_string()),
        }
    }

    async fn open_release_issue(&self, release: &Release) -> ReleaseEvent {
        let failed = |error: String| ReleaseEvent::IssueFailed { error };
        let Some(backlog) = &release.spec.backlog else { return failed("no backlog configured".into()) };
        let tracker = match crate::ports::backlog::build(&backlog.provider, &backlog.settings, &self.env) {
            Ok(t) => t,
            Err(e) => return failed(e.to_string()),
        };
        let draft = crate::ports::backlog::release_halted(release, &self.env.public_url);
        match tokio::time::timeout(BACKLOG_TIMEOUT, tracker.open(&draft)).await {
            Ok(Ok(filed)) => ReleaseEvent::IssueOpened { issue: filed.issue },
            Ok(Err(e)) => failed(e.to_string()),
            Err(_) => failed(format!("the backlog did not answer within {}s", BACKLOG_TIMEOUT.as_secs())),
        }
    }
}

/// A target's rollout spec and plan (bake included), from the release spec.
pub fn release_target(
    spec: &ReleaseSpec,
    wave: usize,
    target: usize,
) -> Result<(crate::domain::spec::RolloutSpec, crate::domain::rollout::Plan), EngineError> {
    let rollout =
        spec.rollout_spec(wave, target).ok_or_else(|| EngineError::Invalid(format!("release has no waves[{wave}].targets[{target}]")))?;
    let doc = serde_json::to_value(&rollout).map_err(|e| EngineError::Invalid(e.to_string()))?;
    let (rollout, plan) = crate::domain::spec::validate(&doc, &crate::ports::registry::names())
        .map_err(|p| EngineError::Invalid(format!("target spec is invalid: {}", p.to_string().replace('\n', "; "))))?;
    let plan = match spec.waves[wave].bake.as_ref() {
        Some(bake) => release::spec::with_bake(plan, bake.ms()),
        None => plan,
    };
    Ok((rollout, plan))
}
