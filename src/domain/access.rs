//! Who may do what: Sluice's roles, the actions they allow, and the rules
//! that give a pipeline's token a role. Pure; the token itself is checked in
//! `ports::identity`, and the handlers ask [`Principal::may`] before acting.
//!
//! The roles are app roles on Sluice's app registration (their values are
//! [`Role::value`]); a token's `roles` claim carries the ones assigned.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

/// A role a caller holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Role {
    /// Reads rollouts, releases, the dashboard and the report.
    Reader,
    /// Starts rollouts and releases; aborts, promotes, retries; reports a pipeline's failure.
    Operator,
    /// Approves and rejects at gates (a spec's approver list narrows it further).
    Approver,
    /// Everything, including overriding a policy.
    Admin,
    /// Azure Monitor's action group: posts alerts, nothing else.
    AlertSender,
}

impl Role {
    /// Every role, in the order the roles table shows them.
    pub const ALL: [Role; 5] = [Role::Reader, Role::Operator, Role::Approver, Role::Admin, Role::AlertSender];

    /// The app role's value, as the token's `roles` claim carries it.
    pub fn value(self) -> &'static str {
        match self {
            Role::Reader => "Sluice.Reader",
            Role::Operator => "Sluice.Operator",
            Role::Approver => "Sluice.Approver",
            Role::Admin => "Sluice.Admin",
            // Microsoft's documented app role for an action group's secure webhook.
            Role::AlertSender => "ActionGroupsSecureWebhook",
        }
    }

    /// The role a `roles` claim value or a rule's right-hand side names
    /// (`Sluice.Operator`, or `Operator`, in any case).
    pub fn named(text: &str) -> Option<Role> {
        let text = text.trim();
        Role::ALL.into_iter().find(|r| {
            let value = r.value();
            value.eq_ignore_ascii_case(text) || value.strip_prefix("Sluice.").is_some_and(|short| short.eq_ignore_ascii_case(text))
        })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.value())
    }
}

/// What a caller asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Action {
    /// Read rollouts, releases, the gate, the dashboard, the report.
    Read,
    /// Start a rollout or a release.
    Start,
    /// Abort, promote, retry; report a pipeline's failure.
    Steer,
    /// Approve or reject at a gate.
    Approve,
    /// Override a policy (a window, a freeze).
    Override,
    /// Post an alert.
    Alert,
}

impl Action {
    /// The roles that allow it; [`Role::Admin`] allows everything but posting alerts.
    pub fn allowed_by(self) -> &'static [Role] {
        match self {
            Action::Read => &[Role::Reader, Role::Operator, Role::Approver, Role::Admin],
            Action::Start | Action::Steer => &[Role::Operator, Role::Admin],
            Action::Approve => &[Role::Approver, Role::Admin],
            Action::Override => &[Role::Admin],
            Action::Alert => &[Role::AlertSender],
        }
    }

    /// The role a refusal names: the least one that would have allowed it.
    pub fn needs(self) -> Role {
        self.allowed_by()[0]
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Read => "read",
            Action::Start => "start",
            Action::Steer => "abort, promote or retry",
            Action::Approve => "approve or reject",
            Action::Override => "override a policy",
            Action::Alert => "post alerts",
        })
    }
}

/// What kind of caller a token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CallerKind {
    /// A signed-in person.
    Person,
    /// A pipeline (GitHub Actions' OIDC token, an Azure DevOps service connection).
    Pipeline,
    /// An application: Azure Monitor, another service.
    Application,
}

/// A caller whose token Sluice checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Principal {
    /// Stable: `{tenant}/{oid}` for Entra, `{issuer}#{sub}` otherwise.
    pub id: String,
    /// Shown to people: the UPN, the repository and ref, the app's id.
    pub name: String,
    /// Person, pipeline or application.
    pub kind: CallerKind,
    /// The roles it holds.
    pub roles: BTreeSet<Role>,
    /// Entra group object ids (the `groups` claim), for approver lists that name a group.
    pub groups: Vec<String>,
}

/// Why an action was refused, naming what was missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{who} may not {action}: it needs the role {needs} (holds: {holds})")]
pub struct Refusal {
    /// Who tried.
    pub who: String,
    /// What.
    pub action: Action,
    /// The least role that allows it.
    pub needs: Role,
    /// What it holds, in words.
    pub holds: String,
}

impl Principal {
    /// Whether it may do `action`; only a person approves.
    pub fn may(&self, action: Action) -> Result<(), Refusal> {
        let allowed = action.allowed_by().iter().any(|r| self.roles.contains(r));
        let person_only = action == Action::Approve && self.kind != CallerKind::Person;
        if allowed && !person_only {
            return Ok(());
        }
        let holds =
            if self.roles.is_empty() { "none".to_string() } else { self.roles.iter().map(|r| r.value()).collect::<Vec<_>>().join(", ") };
        let holds = if person_only { format!("{holds}; only a person approves") } else { holds };
        Err(Refusal { who: self.name.clone(), action, needs: action.needs(), holds })
    }
}

/// A rule giving pipelines whose token subject matches `pattern` a role:
/// `repo:contoso/orders:environment:production=Operator`; `*` matches any run
/// of characters, everything else literally (case-sensitive, as GitHub's `sub` is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectRule {
    /// The subject pattern.
    pub pattern: String,
    /// The role a match gives.
    pub role: Role,
}

impl SubjectRule {
    /// Parses `pattern=Role`.
    pub fn parse(text: &str) -> Result<SubjectRule, String> {
        let (pattern, role) = text.rsplit_once('=').ok_or_else(|| format!("'{}' is not pattern=Role", crate::domain::ids::shown(text)))?;
        let pattern = pattern.trim();
        // Anyone can mint a GitHub token for any audience: the owner must be written out.
        let owner = pattern.strip_prefix("repo:").and_then(|rest| rest.split_once('/')).map(|(owner, _)| owner);
        if !owner.is_some_and(|o| !o.is_empty() && !o.contains('*')) {
            return Err(format!(
                "'{}' must begin with repo:OWNER/ with the owner written out (a token of any repository on GitHub could match a wildcard)",
                crate::domain::ids::shown(pattern)
            ));
        }
        let role =
            Role::named(role).ok_or_else(|| format!("'{}' is not a role (Reader, Operator)", crate::domain::ids::shown(role.trim())))?;
        if !matches!(role, Role::Reader | Role::Operator) {
            return Err(format!("a pipeline may be given Reader or Operator, not {role}"));
        }
        Ok(SubjectRule { pattern: pattern.to_string(), role })
    }

    /// Parses rules separated by `;` or new lines.
    pub fn parse_list(text: &str) -> Result<Vec<SubjectRule>, String> {
        text.split([';', '\n']).filter(|t| !t.trim().is_empty()).map(SubjectRule::parse).collect()
    }

    /// Whether `subject` matches.
    pub fn matches(&self, subject: &str) -> bool {
        glob(&self.pattern, subject)
    }
}

/// `*` matches any run of characters; the rest literally.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = match parts.split_first() {
        Some(p) => p,
        None => return text.is_empty(),
    };
    let Some(mut remaining) = text.strip_prefix(first) else { return false };
    let Some((last, middle)) = rest.split_last() else { return remaining.is_empty() };
    for part in middle {
        match remaining.find(part).and_then(|at| remaining.get(at + part.len()..)) {
            Some(rest) => remaining = rest,
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

/// The roles the rules give `subject`.
pub fn roles_for_subject(rules: &[SubjectRule], subject: &str) -> BTreeSet<Role> {
    rules.iter().filter(|r| r.matches(subject)).map(|r| r.role).collect()
}

/// Whether an approver list entry names this caller: its stable id, its
/// name in any case (UPNs are case-insensitive), or `group:<object id>` of a
/// group it is in.
pub fn names(entry: &str, id: Option<&str>, name: &str, groups: &[String]) -> bool {
    let entry = entry.trim();
    if let Some(group) = entry.strip_prefix("group:") {
        return groups.iter().any(|g| g.eq_ignore_ascii_case(group.trim()));
    }
    entry.eq_ignore_ascii_case(name) || id.is_some_and(|id| id.eq_ignore_ascii_case(entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(kind: CallerKind, roles: &[Role]) -> Principal {
        Principal { id: "t/1".into(), name: "alice@contoso.com".into(), kind, roles: roles.iter().copied().collect(), groups: vec![] }
    }

    #[test]
    fn each_action_needs_its_role_and_a_refusal_names_it() {
        let reader = principal(CallerKind::Person, &[Role::Reader]);
        assert!(reader.may(Action::Read).is_ok());
        let refused = reader.may(Action::Start).expect_err("a reader does not start");
        assert_eq!(refused.needs, Role::Operator);
        assert_eq!(refused.to_string(), "alice@contoso.com may not start: it needs the role Sluice.Operator (holds: Sluice.Reader)");
        let approver = principal(CallerKind::Person, &[Role::Approver]);
        assert!(approver.may(Action::Approve).is_ok() && approver.may(Action::Steer).is_err());
        let admin = principal(CallerKind::Person, &[Role::Admin]);
        for action in [Action::Read, Action::Start, Action::Steer, Action::Approve, Action::Override] {
            assert!(admin.may(action).is_ok(), "{action}");
        }
        assert_eq!(admin.may(Action::Alert).expect_err("people do not post alerts").needs, Role::AlertSender);
        let nobody = principal(CallerKind::Person, &[]);
        assert!(nobody.may(Action::Read).expect_err("no role").to_string().ends_with("(holds: none)"));
    }

    #[test]
    fn only_a_person_approves_whatever_a_pipeline_or_an_app_holds() {
        for kind in [CallerKind::Pipeline, CallerKind::Application] {
            let caller = principal(kind, &[Role::Admin]);
            assert!(caller.may(Action::Start).is_ok());
            assert!(caller.may(Action::Approve).expect_err("never").to_string().contains("only a person approves"));
        }
    }

    #[test]
    fn roles_are_named_by_value_or_short_name_in_any_case() {
        assert_eq!(Role::named("Sluice.Approver"), Some(Role::Approver));
        assert_eq!(Role::named("operator"), Some(Role::Operator));
        assert_eq!(Role::named("ActionGroupsSecureWebhook"), Some(Role::AlertSender));
        assert_eq!(Role::named("Sluice"), None);
        assert_eq!(Role::named("Contributor"), None);
    }

    #[test]
    fn subject_rules_match_whole_subjects_with_stars() {
        let rules = SubjectRule::parse_list(
            "repo:contoso/orders:environment:production=Operator; repo:contoso/*:ref:refs/heads/main=Reader\nrepo:contoso/pay*:*=operator",
        )
        .expect("parses");
        assert_eq!(rules.len(), 3);
        let of = |s: &str| roles_for_subject(&rules, s).into_iter().collect::<Vec<_>>();
        assert_eq!(of("repo:contoso/orders:environment:production"), [Role::Operator]);
        assert!(of("repo:contoso/orders:environment:production-eu").is_empty(), "a prefix is not a match");
        assert!(of("repo:contoso/orders:environment:Production").is_empty(), "subjects are case-sensitive");
        assert_eq!(of("repo:contoso/web:ref:refs/heads/main"), [Role::Reader]);
        assert!(of("repo:evil/orders:environment:production").is_empty());
        assert_eq!(of("repo:contoso/payments:pull_request"), [Role::Operator]);
        assert!(of("repo:contoso/web:ref:refs/heads/mainline").is_empty());
    }

    #[test]
    fn a_rule_must_name_a_repository_and_a_pipeline_role() {
        assert!(SubjectRule::parse("*=Operator").is_err());
        assert!(SubjectRule::parse("repo:a/b").is_err());
        for wild in ["*:environment:production=Operator", "repo:*/orders:*=Operator", "repo:contoso*=Operator", "repo:contoso=Reader"] {
            assert!(SubjectRule::parse(wild).expect_err(wild).contains("owner written out"), "{wild}");
        }
        assert!(SubjectRule::parse("repo:a/b=Approver").expect_err("never an approver").contains("Reader or Operator"));
        assert!(SubjectRule::parse("repo:a/b=Boss").expect_err("no such role").contains("'Boss'"));
    }

    #[test]
    fn the_glob_matches_as_a_shell_would() {
        for (p, t, want) in [
            ("a*c", "abc", true),
            ("a*c", "ac", true),
            ("a*c", "acb", false),
            ("*b*", "abc", true),
            ("a**", "a", true),
            ("ab*ba", "aba", false),
            ("x", "x", true),
            ("x", "xy", false),
            ("é*", "éa", true),
        ] {
            assert_eq!(glob(p, t), want, "{p} ~ {t}");
        }
    }

    #[test]
    fn approver_entries_name_ids_names_in_any_case_and_groups() {
        let groups = vec!["0b1c".to_string()];
        assert!(names("Alice@Contoso.com", Some("t/1"), "alice@contoso.com", &groups));
        assert!(names("t/1", Some("t/1"), "alice@contoso.com", &groups));
        assert!(names("group:0B1C", None, "bob", &groups));
        assert!(!names("group:ffff", None, "bob", &groups));
        assert!(!names("carol", Some("t/1"), "alice@contoso.com", &groups));
    }
}
