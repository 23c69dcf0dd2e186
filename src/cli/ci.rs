//! `watch` inside a pipeline: the runner is detected from its environment
//! (`GITHUB_ACTIONS=true`, `TF_BUILD=True`), lines stay plain (no ANSI, one
//! per phase or weight change), the log folds into a group, a failure
//! becomes an annotation the run's page shows, and on GitHub the job
//! summary (`$GITHUB_STEP_SUMMARY`) gets the timeline table and links.
//!
//! Escaping follows the runners' own libraries: GitHub's workflow commands
//! as `actions/toolkit` `packages/core/src/command.ts` writes them (`%`,
//! CR, LF in data; also `:` and `,` in properties); Azure Pipelines logging
//! commands as `microsoft/azure-pipelines-task-lib` `node/taskcommand.ts`
//! does (`%` as `%AZP25`, CR, LF; also `;` and `]` in properties).

use std::path::PathBuf;

use serde_json::Value;

use crate::ports::backlog::doc::{code, strong, text, Block, Doc, Span};

/// Where `watch` is running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runner {
    /// GitHub Actions; the job summary file, if the runner gave one.
    GitHub {
        /// `$GITHUB_STEP_SUMMARY`.
        summary: Option<PathBuf>,
    },
    /// Azure Pipelines.
    AzurePipelines,
    /// Anything else: plain lines.
    Plain,
}

impl Runner {
    /// The runner `get` (the environment) describes, unless `choice` names one
    /// (`github`, `azure`, `none`; `auto` detects).
    pub fn detect(choice: &str, get: &dyn Fn(&str) -> Option<String>) -> Runner {
        let github = || Runner::GitHub { summary: get("GITHUB_STEP_SUMMARY").filter(|p| !p.is_empty()).map(PathBuf::from) };
        match choice {
            "github" => github(),
            "azure" => Runner::AzurePipelines,
            "none" => Runner::Plain,
            _ if get("GITHUB_ACTIONS").as_deref() == Some("true") => github(),
            _ if get("TF_BUILD").is_some_and(|v| v.eq_ignore_ascii_case("true")) => Runner::AzurePipelines,
            _ => Runner::Plain,
        }
    }

    /// Whether this is a pipeline (then only changes are printed, never live numbers).
    pub fn in_pipeline(&self) -> bool {
        *self != Runner::Plain
    }

    /// The line that opens a folded group.
    pub fn group(&self, title: &str) -> Option<String> {
        match self {
            Runner::GitHub { .. } => Some(format!("::group::{}", github_data(title))),
            Runner::AzurePipelines => Some(format!("##[group]{}", azure_data(title))),
            Runner::Plain => None,
        }
    }

    /// The line that closes it.
    pub fn end_group(&self) -> Option<String> {
        match self {
            Runner::GitHub { .. } => Some("::endgroup::".into()),
            Runner::AzurePipelines => Some("##[endgroup]".into()),
            Runner::Plain => None,
        }
    }

    /// An error annotation on the run's page.
    pub fn error(&self, title: &str, message: &str) -> Option<String> {
        match self {
            Runner::GitHub { .. } => Some(format!("::error title={}::{}", github_property(title), github_data(message))),
            Runner::AzurePipelines => Some(format!("##vso[task.logissue type=error]{}", azure_data(&format!("{title}: {message}")))),
            Runner::Plain => None,
        }
    }
}

fn github_data(s: &str) -> String {
    s.replace('%', "%25").replace('\r', "%0D").replace('\n', "%0A")
}

fn github_property(s: &str) -> String {
    github_data(s).replace(':', "%3A").replace(',', "%2C")
}

fn azure_data(s: &str) -> String {
    s.replace('%', "%AZP25").replace('\r', "%0D").replace('\n', "%0A")
}

fn field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The job summary for a finished (or still running) rollout: its result,
/// what changed, the timeline of phase and weight changes, and links.
pub fn summary_markdown(status: &Value, base_url: &str) -> String {
    let id = field(status, "id");
    let phase = field(status, "phase");
    let mut d = Doc::default();
    let verdict = match phase {
        "Succeeded" => "succeeded",
        "RolledBack" => "rolled back",
        "Aborted" => "was aborted",
        "AwaitingApproval" => "waits for approval",
        _ => "is still running",
    };
    let base = base_url.trim_end_matches('/');
    d.push(Block::Heading(format!("Sluice: rollout {id} {verdict}")));
    if phase == "AwaitingApproval" {
        d.push(Block::Para(vec![
            strong("Approve or reject: "),
            Span::Link("open the rollout's dashboard".into(), format!("{base}/api/dashboard/{id}")),
            text(", or run "),
            code(format!("sluice approve {id} --url {base}")),
            text(format!(" ({}).", field(status, "waitingFor"))),
        ]));
    }
    d.push(Block::Para(vec![
        strong(field(status, "target")),
        text(format!(" {} → {} · ", field(status, "stable"), field(status, "canary"))),
        code(field(status, "plan")),
    ]));
    if let Some(failure) = status.get("failure").and_then(Value::as_str) {
        d.push(Block::Para(vec![strong("Cause: "), text(failure)]));
    }
    let rows: Vec<Vec<String>> = status
        .get("history")
        .and_then(Value::as_array)
        .map(|h| {
            h.iter()
                .filter(|e| is_change(e))
                .map(|e| {
                    let at = field(e, "at");
                    vec![
                        at.get(11..19).unwrap_or(at).to_string(),
                        field(e, "to").to_string(),
                        format!("{}%", e.get("weight").and_then(Value::as_u64).unwrap_or(0)),
                        field(e, "by").to_string(),
                        field(e, "summary").to_string(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    d.push(Block::Table { head: ["time (UTC)", "phase", "canary weight", "by", "what"].map(String::from).to_vec(), rows });
    let mut links = vec![
        vec![Span::Link("Timeline (dashboard)".into(), format!("{base}/api/dashboard/{id}"))],
        vec![Span::Link("Status (JSON)".into(), format!("{base}/api/rollouts/{id}"))],
    ];
    if let Some(url) = status.pointer("/backlog/issue/url").and_then(Value::as_str) {
        links.push(vec![Span::Link("Backlog issue".into(), url.to_string())]);
    }
    d.push(Block::List(links));
    d.markdown()
}

/// Whether a history entry changed the phase or the weight (what a pipeline log shows).
pub fn is_change(entry: &Value) -> bool {
    entry.get("from") != entry.get("to") || entry.get("cause").and_then(Value::as_str) == Some("TrafficConfirmed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k: &str| pairs.iter().find(|(key, _)| *key == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn the_runner_is_recognised_from_its_environment() {
        let gh = env(&[("GITHUB_ACTIONS", "true"), ("GITHUB_STEP_SUMMARY", "/tmp/s.md")]);
        assert_eq!(Runner::detect("auto", &gh), Runner::GitHub { summary: Some(PathBuf::from("/tmp/s.md")) });
        assert_eq!(Runner::detect("auto", &env(&[("TF_BUILD", "True")])), Runner::AzurePipelines);
        assert_eq!(Runner::detect("auto", &env(&[])), Runner::Plain);
        assert_eq!(Runner::detect("none", &gh), Runner::Plain);
    }

    #[test]
    fn annotations_cannot_smuggle_a_second_command() {
        let message = "50% failed\n::error::forged\r\n##vso[task.complete result=Succeeded;]x";
        let gh = Runner::GitHub { summary: None }.error("rollout r-1: rolled back", message).expect("line");
        assert_eq!(
            gh,
            "::error title=rollout r-1%3A rolled back::50%25 failed%0A::error::forged%0D%0A##vso[task.complete result=Succeeded;]x"
        );
        let az = Runner::AzurePipelines.error("rollout r-1", message).expect("line");
        assert_eq!(
            az,
            "##vso[task.logissue type=error]rollout r-1: 50%AZP25 failed%0A::error::forged%0D%0A##vso[task.complete result=Succeeded;]x"
        );
        assert_eq!(az.lines().count(), 1);
        assert!(Runner::Plain.error("a", "b").is_none());
    }

    #[test]
    fn a_rollout_waiting_for_approval_puts_how_to_approve_in_the_summary() {
        let status = json!({"id": "gh-8", "phase": "AwaitingApproval", "waitingFor": "1 more approval (of: anyone)", "history": []});
        let md = summary_markdown(&status, "https://sluice.example");
        assert!(md.starts_with("## Sluice: rollout gh-8 waits for approval\n"), "{md}");
        assert!(md.contains("[open the rollout's dashboard](https://sluice.example/api/dashboard/gh-8)"), "{md}");
        assert!(md.contains("`sluice approve gh-8 --url https://sluice.example`"), "{md}");
    }

    #[test]
    fn the_summary_tables_the_changes_and_links_the_issue() {
        let status = json!({
            "id": "gh-7", "phase": "RolledBack", "target": "api", "stable": "v1", "canary": "v2", "plan": "canary: 5% → promote",
            "failure": "analysis errors: 0.2 | x",
            "backlog": {"state": "opened", "issue": {"id": "1", "url": "https://github.com/o/r/issues/1"}},
            "history": [
                {"at": "2026-12-02T10:00:00Z", "from": "Pending", "to": "Progressing", "weight": 5, "cause": "Start", "summary": "started"},
                {"at": "2026-12-02T10:00:01Z", "from": "Progressing", "to": "Progressing", "weight": 5, "cause": "Measured", "summary": "pass"},
                {"at": "2026-12-02T10:00:09Z", "from": "Progressing", "to": "RolledBack", "weight": 0, "cause": "Measured", "summary": "a|b"}
            ]
        });
        let md = summary_markdown(&status, "http://127.0.0.1:7071/");
        assert!(md.starts_with("## Sluice: rollout gh-7 rolled back\n"), "{md}");
        assert!(md.contains("| 10:00:00 | Progressing | 5% |  | started |"), "{md}");
        assert!(!md.contains("| pass |"), "measurements that change nothing stay out: {md}");
        assert!(md.contains("| 10:00:09 | RolledBack | 0% |  | a\\|b |"), "{md}");
        assert!(md.contains("[Timeline (dashboard)](http://127.0.0.1:7071/api/dashboard/gh-7)"), "{md}");
        assert!(md.contains("[Backlog issue](https://github.com/o/r/issues/1)"), "{md}");
    }
}
