//! Pipeline tasks waiting on rollouts: answered when their rollout ends
//! (right after the save that ends it, off the path of whoever ended it),
//! and by the timer when that answer was lost to a crash or to Azure DevOps
//! being away. Calls run [`PARALLEL_ANSWERS`] at a time, each bounded by its
//! timeout, so an Azure DevOps that hangs costs a sweep at most
//! `WAIT_SWEEP_LIMIT / PARALLEL_ANSWERS` timeouts. A task is forgotten once
//! answered, once Azure DevOps refuses it for good, or after [`MAX_WAIT`] —
//! no pipeline job waits that long.

use std::collections::BTreeMap;

use chrono::TimeDelta;
use futures::StreamExt;

use super::{Engine, EngineError};
use crate::domain::pipeline_wait::{PipelineWait, TaskResult};
use crate::domain::rollout::Rollout;
use crate::ports::azure_pipelines::{complete_task, CompleteError};

/// Waiting tasks the timer looks at per sweep (in key order; the ones past
/// it are answered when their rollout ends, and by later sweeps).
pub const WAIT_SWEEP_LIMIT: usize = 200;
/// Answers in flight at once.
pub const PARALLEL_ANSWERS: usize = 16;
/// How long a task may wait before Sluice forgets it.
pub const MAX_WAIT: TimeDelta = TimeDelta::days(30);

/// What a sweep of waiting tasks did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WaitsReport {
    /// Tasks answered.
    pub answered: usize,
    /// Tasks still waiting on a running rollout.
    pub waiting: usize,
    /// Tasks forgotten: refused for good, their rollout gone, or too old.
    pub dropped: usize,
    /// Tasks to try again at the next sweep.
    pub failed: usize,
}

impl Engine {
    /// Answers, in the background, the tasks waiting on a rollout that has
    /// just ended: whoever ended it (a person's abort, an alert) is not kept
    /// waiting for Azure DevOps; the timer answers what this does not.
    pub(super) fn answer_pipeline_waits_later(&self, rollout: &Rollout) {
        let (engine, rollout) = (self.clone(), rollout.clone());
        tokio::spawn(async move {
            engine.answer_pipeline_waits(&rollout).await;
        });
    }

    /// Answers the tasks waiting on `rollout` if it has ended.
    pub async fn answer_pipeline_waits(&self, rollout: &Rollout) -> WaitsReport {
        let mut report = WaitsReport::default();
        match self.store.pipeline_waits(Some(&rollout.id), 0).await {
            Ok(waits) => self.answer(rollout, &waits, &mut report).await,
            Err(e) => {
                report.failed += 1;
                tracing::warn!(rollout = %rollout.id, error = %e, "could not read the pipeline tasks waiting; the timer will answer them");
            }
        }
        report
    }

    /// The timer's look at every waiting task (up to [`WAIT_SWEEP_LIMIT`]).
    pub async fn sweep_pipeline_waits(&self) -> Result<WaitsReport, EngineError> {
        let mut by_rollout: BTreeMap<String, Vec<PipelineWait>> = BTreeMap::new();
        for wait in self.store.pipeline_waits(None, WAIT_SWEEP_LIMIT).await? {
            by_rollout.entry(wait.rollout.to_string()).or_default().push(wait);
        }
        let mut report = WaitsReport::default();
        for (id, waits) in by_rollout {
            match self.store.load(&id).await? {
                Some((rollout, _)) => self.answer(&rollout, &waits, &mut report).await,
                None => {
                    for wait in &waits {
                        self.forget(wait, "its rollout no longer exists", &mut report).await;
                    }
                }
            }
        }
        Ok(report)
    }

    async fn answer(&self, rollout: &Rollout, waits: &[PipelineWait], report: &mut WaitsReport) {
        let Some(result) = TaskResult::of(rollout.phase) else {
            for wait in waits {
                if self.clock.now() - wait.registered_at > MAX_WAIT {
                    self.forget(wait, "it waited longer than any pipeline job can", report).await;
                } else {
                    report.waiting += 1;
                }
            }
            return;
        };
        let env = &self.env;
        let calls = futures::stream::iter(waits.iter().cloned()).map(|wait| async move {
            let answer = complete_task(env, &wait, result).await;
            (wait, answer)
        });
        let answers: Vec<(PipelineWait, _)> = calls.buffer_unordered(PARALLEL_ANSWERS).collect().await;
        for (wait, answer) in &answers {
            match answer {
                Ok(()) => {
                    tracing::info!(rollout = %rollout.id, task = %wait.task_instance_id, result = result.as_str(), "pipeline task answered");
                    report.answered += 1;
                    if let Err(e) = self.store.drop_pipeline_wait(&rollout.id, &wait.task_instance_id).await {
                        // The next sweep sends the event again; whatever the plan answers then, the task is forgotten.
                        tracing::warn!(rollout = %rollout.id, error = %e, "answered, but could not forget the task");
                    }
                }
                Err(CompleteError::Refused(why)) => self.forget(wait, why, report).await,
                Err(e @ CompleteError::Unavailable(_)) => {
                    report.failed += 1;
                    tracing::warn!(rollout = %rollout.id, task = %wait.task_instance_id, error = %e, "pipeline task not answered; the timer tries again");
                }
            }
        }
    }

    async fn forget(&self, wait: &PipelineWait, why: &str, report: &mut WaitsReport) {
        tracing::warn!(rollout = %wait.rollout, task = %wait.task_instance_id, %why, "pipeline task forgotten");
        match self.store.drop_pipeline_wait(&wait.rollout, &wait.task_instance_id).await {
            Ok(()) => report.dropped += 1,
            Err(_) => report.failed += 1,
        }
    }
}
