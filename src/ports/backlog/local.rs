//! The local backlog: one markdown file per issue under `.sluice/backlog/`,
//! named after the rollout so a second attempt finds the first; comments
//! are appended to it.
//! No settings: a spec never chooses a file path.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use super::{Backlog, BacklogError, CommentDraft, Filed, IssueDraft};
use crate::domain::rollout::IssueRef;
use crate::ports::env::{AdapterEnv, AdapterError, Settings};

/// A directory of markdown issues.
pub struct FileBacklog {
    dir: PathBuf,
}

/// Builds the file backlog.
pub fn build(settings: &Settings, env: &AdapterEnv) -> Result<Arc<dyn Backlog>, AdapterError> {
    env.configuration_only("local", settings, "dir")?;
    let dir = env.data_dir.join("backlog");
    Ok(Arc::new(FileBacklog { dir }))
}

impl FileBacklog {
    fn path(&self, rollout_id: &str) -> PathBuf {
        self.dir.join(format!("{rollout_id}.md"))
    }

    fn issue_ref(&self, rollout_id: &str) -> IssueRef {
        let path = self.path(rollout_id);
        let absolute = std::fs::canonicalize(&path).unwrap_or(path);
        IssueRef { id: rollout_id.to_string(), url: format!("file://{}", absolute.display()) }
    }
}

#[async_trait]
impl Backlog for FileBacklog {
    async fn open(&self, draft: &IssueDraft) -> Result<Filed, BacklogError> {
        let dir = self.dir.clone();
        let path = self.path(&draft.rollout_id);
        let text = format!("# {}\n\nLabels: {}\n\n{}", draft.title, draft.labels.join(", "), draft.body.markdown());
        let failure = super::failure_marker(&draft.rollout_id);
        let (created, tells_failure) = tokio::task::spawn_blocking(move || {
            crate::ports::env::create_private_dir(&dir)
                .map_err(|e| BacklogError::Failed(format!("cannot create {}: {e}", dir.display())))?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(&path) {
                Ok(mut f) => f.write_all(text.as_bytes()).map(|_| (true, false)).map_err(|e| BacklogError::Failed(e.to_string())),
                // One issue per rollout: the file already there is the issue.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let existing = std::fs::read_to_string(&path).map_err(|e| BacklogError::Failed(e.to_string()))?;
                    Ok((false, existing.contains(&failure)))
                }
                Err(e) => Err(BacklogError::Failed(format!("cannot write {}: {e}", path.display()))),
            }
        })
        .await
        .map_err(|e| BacklogError::Failed(e.to_string()))??;
        let tells_failure = if created { draft.rollout_failure } else { tells_failure };
        Ok(Filed { issue: self.issue_ref(&draft.rollout_id), created, tells_failure })
    }

    async fn comment(&self, issue: &IssueRef, comment: &CommentDraft) -> Result<(), BacklogError> {
        let path = self.path(&issue.id);
        let marker = comment.marker.clone();
        let text = format!("\n---\n\n{}", comment.body.markdown());
        tokio::task::spawn_blocking(move || {
            let existing =
                std::fs::read_to_string(&path).map_err(|e| BacklogError::Failed(format!("cannot read {}: {e}", path.display())))?;
            if existing.contains(&marker) {
                return Ok(());
            }
            let mut f = std::fs::OpenOptions::new().append(true).open(&path).map_err(|e| BacklogError::Failed(e.to_string()))?;
            f.write_all(text.as_bytes()).map_err(|e| BacklogError::Failed(e.to_string()))
        })
        .await
        .map_err(|e| BacklogError::Failed(e.to_string()))?
    }
}
