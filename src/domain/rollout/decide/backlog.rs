//! The backlog issue: opening it, commenting news, and their results.

use super::{Step, Txn};
use crate::domain::rollout::command::{Command, CommandKind};
use crate::domain::rollout::event::{CommandRef, IssueRef};
use crate::domain::rollout::history::Evidence;
use crate::domain::rollout::{Attempt, BacklogState, Reported};

impl Txn {
    pub(super) fn open_backlog(&mut self, attempts: u32, evidence: Evidence) {
        let id = self.next_id();
        self.r.backlog = BacklogState::Opening { attempt: Attempt::new(id, attempts, self.now) };
        self.commands.push(Command::OpenBacklogIssue { evidence, id });
    }

    /// Tells an open issue what it does not say yet (one comment at a time;
    /// news arriving meanwhile goes into the next one).
    pub(super) fn update_backlog(&mut self) {
        if let BacklogState::Opened { reported, updating: None, .. } = &self.r.backlog {
            if Reported::of(&self.r).news_since(reported) {
                self.comment_backlog(1);
            }
        }
    }

    pub(super) fn comment_backlog(&mut self, attempts: u32) {
        let id = self.next_id();
        if let BacklogState::Opened { issue, reported, updating } = &mut self.r.backlog {
            *updating = Some(Attempt::new(id, attempts, self.now));
            self.commands.push(Command::CommentBacklogIssue { issue: issue.clone(), id, told: *reported });
        }
    }

    pub(super) fn on_backlog_opened(&mut self, issue: &IssueRef, reported: Reported) -> Step {
        if !matches!(self.r.backlog, BacklogState::Opening { .. }) {
            return Err("no backlog issue is being opened".into());
        }
        self.note(format!("backlog issue {} opened: {}", issue.id, issue.url));
        self.r.backlog = BacklogState::Opened { issue: issue.clone(), reported, updating: None };
        Ok(())
    }

    pub(super) fn on_backlog_commented(&mut self, id: u64, told: Reported) -> Step {
        let BacklogState::Opened { issue, reported, updating } = &mut self.r.backlog else {
            return Err("no backlog comment is being posted".into());
        };
        let Some(attempt) = updating.take().filter(|a| a.id == id) else {
            return Err(format!("stale comment report: comment {id} is not the one being posted"));
        };
        *reported = told;
        let text = format!("backlog issue {} updated (attempt {})", issue.id, attempt.attempts);
        self.note(text);
        Ok(())
    }

    /// Opening the issue or posting a comment failed: the tick retries it.
    pub(super) fn on_backlog_failed(&mut self, command: &CommandRef, error: &str) -> Step {
        let now = self.now;
        let attempt = match (&mut self.r.backlog, command.kind) {
            (BacklogState::Opening { attempt }, CommandKind::OpenBacklogIssue) => attempt,
            (BacklogState::Opened { updating: Some(attempt), .. }, CommandKind::CommentBacklogIssue) => attempt,
            _ => return Err("stale failure report".into()),
        };
        if attempt.id != command.id || attempt.failed_at.is_some() {
            return Err("stale failure report".into());
        }
        attempt.failed_at = Some(now);
        attempt.last_error = Some(error.to_string());
        let n = attempt.attempts;
        let what = if command.kind == CommandKind::OpenBacklogIssue { "issue not opened" } else { "comment not posted" };
        self.note(format!("backlog {what} (attempt {n}): {error}; will retry"));
        Ok(())
    }
}
