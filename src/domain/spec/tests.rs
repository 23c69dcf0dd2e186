use serde_json::{json, Value};

use super::*;

fn names() -> ProviderNames {
    ProviderNames {
        traffic: vec!["local", "frontDoor"],
        metrics: vec!["local", "httpProbe"],
        backlog: vec!["local"],
        notify: vec!["console", "jsonl"],
        no_preview: vec![("frontDoor", "no per-request rule")],
    }
}

fn minimal() -> Value {
    json!({
        "target": {
            "name": "api",
            "router": {"provider": "local"},
            "stable": {"name": "stable", "version": "v1"},
            "canary": {"name": "canary", "version": "v2"}
        },
        "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {"duration": "1m"}}]}}
    })
}

fn problems_of(doc: &Value) -> Vec<String> {
    match validate(doc, &names()) {
        Ok(_) => vec![],
        Err(p) => p.iter().map(|p| p.to_string()).collect(),
    }
}

fn examples_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

#[test]
fn every_example_validates_and_summarises() {
    let mut seen = 0;
    for entry in std::fs::read_dir(examples_dir()).expect("examples/ exists") {
        let path = entry.expect("readable").path();
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Format::Json,
            Some("yaml") | Some("yml") => Format::Yaml,
            _ => continue,
        };
        let text = std::fs::read_to_string(&path).expect("readable");
        // Examples may use every registered provider.
        let (spec, plan) = load(&text, format, &crate::ports::registry::names()).unwrap_or_else(|p| panic!("{}:\n{p}", path.display()));
        assert!(!plan.stages.is_empty());
        assert!(matches!(
            plan.stages.last(),
            Some(crate::domain::rollout::Stage::Promote) | Some(crate::domain::rollout::Stage::ScaleDown { .. })
        ));
        // Serialising the typed spec and reading it back gives the same spec.
        let again: RolloutSpec = serde_json::from_value(serde_json::to_value(&spec).expect("serialises")).expect("reads back");
        assert_eq!(again, spec);
        seen += 1;
    }
    assert!(seen >= 3, "expected at least three examples, found {seen}");
}

#[test]
fn canary_example_compiles_to_the_expected_plan() {
    let text = std::fs::read_to_string(examples_dir().join("canary-approval.json")).expect("readable");
    let (_, plan) = load(&text, Format::Json, &names()).expect("valid");
    assert_eq!(
        plan.summary(),
        "canary: 5% → analysis(error-rate+latency) → 20% → approval(1) → 50% → pause 5m → 100% → pause 2m → promote"
    );
}

#[test]
fn blue_green_compiles_to_preview_gate_switch_bake_promote_scale_down() {
    let text = std::fs::read_to_string(examples_dir().join("blue-green.json")).expect("readable");
    let (_, plan) = load(&text, Format::Json, &names()).expect("valid");
    assert_eq!(
        plan.summary(),
        "blue-green: analysis(preview-healthy) → approval(2) → 100% → analysis(error-rate) → promote → scale down after 10m"
    );
}

#[test]
fn five_mistakes_are_all_reported_with_their_paths() {
    let mut doc = minimal();
    doc["strategy"]["canary"]["steps"] = json!([
        {"setWeight": 5},
        {"pause": {"duration": "10x"}},
        {"analysis": {"templates": ["nope"]}},
        {"setWeight": 140},
    ]);
    doc["target"]["router"]["provider"] = json!("nginx");
    doc["policy"] = json!({"onAlert": "sometimes"});
    doc["colour"] = json!("blue");
    let problems = problems_of(&doc);
    let expected = [
        "colour: unknown field (expected one of: analysisTemplates, backlog, notifications, policy, strategy, target)",
        "policy.onAlert: \"sometimes\" is not one of: rollback, pause",
        "strategy.canary.steps[1].pause.duration: '10x' has an unknown unit 'x' (use ms, s, m, h or d)",
        "strategy.canary.steps[2].analysis.templates[0]: no analysis template named 'nope' (none are defined)",
        "strategy.canary.steps[3].setWeight: 140 is over 100",
        "target.router.provider: unknown traffic provider 'nginx' (known: local, frontDoor)",
    ];
    assert_eq!(problems, expected);
}

#[test]
fn wrong_types_and_missing_fields_are_named() {
    let doc = json!({
        "target": {"name": "api", "router": {"provider": "local"}, "stable": {"name": "s", "version": 1}},
        "strategy": {"canary": {"steps": []}}
    });
    let problems = problems_of(&doc);
    assert!(problems.contains(&"target.canary: is required".to_string()), "{problems:?}");
    assert!(problems.contains(&"target.stable.version: expected a string, found the number 1".to_string()), "{problems:?}");
    assert!(problems.contains(&"strategy.canary.steps: needs at least 1 item".to_string()), "{problems:?}");
}

#[test]
fn a_step_with_a_misspelt_key_says_which_keys_are_accepted() {
    let mut doc = minimal();
    doc["strategy"]["canary"]["steps"] = json!([{"setWieght": 5}]);
    assert_eq!(
        problems_of(&doc),
        ["strategy.canary.steps[0]: expects exactly one of the keys setWeight, pause, analysis, approval, preview; found setWieght"]
    );
}

#[test]
fn unknown_fields_are_errors_at_every_depth() {
    let mut doc = minimal();
    doc["target"]["stable"]["slot"] = json!("x");
    doc["strategy"]["canary"]["steps"][1]["pause"]["untilApproved"] = json!(true);
    let problems = problems_of(&doc);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].starts_with("strategy.canary.steps[1].pause.untilApproved: unknown field"));
    assert!(problems[1].starts_with("target.stable.slot: unknown field"));
}

#[test]
fn cross_field_rules() {
    let mut doc = minimal();
    doc["target"]["canary"] = doc["target"]["stable"].clone();
    doc["analysisTemplates"] = json!([
        {"name": "t", "metrics": [
            {"name": "m", "provider": "local", "query": "q", "successCondition": "< 1", "interval": "500ms"},
            {"name": "m", "provider": "local", "query": "q", "successCondition": "< 1", "sampleQuery": "x"}
        ]},
        {"name": "t", "metrics": [{"name": "n", "provider": "local", "query": "q", "successCondition": "< 1"}]}
    ]);
    doc["strategy"]["canary"]["steps"] = json!([
        {"approval": {"minApprovers": 3, "approvers": ["a", "b"]}},
        {"analysis": {}}
    ]);
    doc["policy"] = json!({"onInconclusive": "extend", "maxExtensions": 0});
    doc["backlog"] = json!({"provider": "local", "settings": {"token": "ghp_abc"}});
    doc["notifications"] = json!([{"provider": "console", "settings": {"url": "https://hooks.example/T0/B0/x"}}]);
    let problems = problems_of(&doc);
    let expected = [
        "analysisTemplates[0].metrics: metric name 'm' is used twice",
        "analysisTemplates[0].metrics[0].interval: '500ms' is shorter than the 1s minimum",
        "analysisTemplates[0].metrics[1].sampleQuery: has no effect without minSampleSize",
        "analysisTemplates[1].name: template 't' is defined twice",
        "backlog.settings.token: looks like a secret written inline; put it in an app setting and reference it as tokenSetting",
        "notifications[0].settings.url: looks like a secret written inline; put it in an app setting and reference it as urlSetting",
        "policy.maxExtensions: must be at least 1 with onInconclusive: extend",
        "strategy.canary.steps[0].approval.minApprovers: 3 approvers are needed but only 2 people are allowed",
        "strategy.canary.steps[1].analysis: needs at least one template or metric",
        "target.canary: is the same as target.stable: nothing would change",
    ];
    assert_eq!(problems, expected);
}

#[test]
fn blue_green_rejects_approval_with_auto_promotion() {
    let mut doc = minimal();
    doc["strategy"] = json!({"blueGreen": {"approval": {}, "autoPromoteAfter": "5m"}});
    let problems = problems_of(&doc);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("strategy.blueGreen.autoPromoteAfter: cannot be combined with approval"));
}

#[test]
fn bad_conditions_names_and_numbers() {
    let mut doc = minimal();
    doc["target"]["name"] = json!("orders api!");
    doc["strategy"]["canary"]["steps"] = json!([{"analysis": {"metrics": [
        {"name": "m", "provider": "local", "query": "q", "successCondition": "below 3", "count": 0,
         "baseline": {"factor": -1}}
    ]}}]);
    let problems = problems_of(&doc);
    assert_eq!(problems.len(), 4, "{problems:?}");
    assert!(problems
        .iter()
        .any(|p| p.starts_with("strategy.canary.steps[0].analysis.metrics[0].successCondition: 'below 3' is not a condition")));
    assert!(problems.iter().any(|p| p == "strategy.canary.steps[0].analysis.metrics[0].count: 0 is under 1"));
    assert!(problems.iter().any(|p| p == "strategy.canary.steps[0].analysis.metrics[0].baseline.factor: -1 is under 0"));
    assert!(problems.iter().any(|p| p.starts_with("target.name: 'orders api!' may only use")));
}

#[test]
fn a_judge_names_its_tests_and_its_ranges() {
    let mut doc = minimal();
    doc["strategy"]["canary"]["steps"] = json!([{"analysis": {"metrics": [
        {"name": "a", "provider": "local", "judge": {"test": "median", "histogram": "latency_histogram"}},
        {"name": "b", "provider": "local", "judge": {"test": "latency", "histogram": "latency_histogram", "confidence": 1.2}},
        {"name": "c", "provider": "local", "judge": {"test": "errorRate", "failures": "error_count"}}
    ]}}]);
    let problems = problems_of(&doc);
    let at = "strategy.canary.steps[0].analysis.metrics";
    assert_eq!(
        problems,
        vec![
            format!("{at}[0].judge.test: \"median\" is not one of: errorRate, latency"),
            format!("{at}[1].judge.confidence: 1.2 is over 0.999"),
            format!("{at}[2].judge.requests: is required"),
        ]
    );
}

#[test]
fn yaml_reads_the_same_as_json() {
    let yaml = r#"
target:
  name: api
  router: { provider: local }
  stable: { name: stable, version: v1 }
  canary: { name: canary, version: v2 }
strategy:
  canary:
    steps:
      - setWeight: 20
      - pause: { duration: 1m }
"#;
    let from_yaml = load(yaml, Format::Yaml, &names()).expect("valid yaml");
    let from_json = validate(&minimal(), &names()).expect("valid json");
    assert_eq!(from_yaml, from_json);
}

#[test]
fn unparseable_documents_say_where() {
    let err = load("{\"target\": ", Format::Json, &names()).expect_err("truncated");
    assert!(err.to_string().starts_with("not valid JSON: EOF while parsing"), "{err}");
    let err = load("a: [", Format::Yaml, &names()).expect_err("truncated");
    assert!(err.to_string().starts_with("not valid YAML"), "{err}");
    let err = load("[1, 2]", Format::Json, &names()).expect_err("not an object");
    assert_eq!(err.to_string(), "expected an object, found a list");
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let err = load(&deep, Format::Json, &names()).expect_err("too deep");
    assert!(err.to_string().contains("recursion limit"), "{err}");
}

#[test]
fn committed_schema_is_up_to_date() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/rollout-spec.schema.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let current = serde_json::to_string_pretty(&json_schema()).expect("serialises") + "\n";
    assert!(
        committed == current,
        "schema/rollout-spec.schema.json is out of date: run `cargo run --release -- schema > schema/rollout-spec.schema.json`"
    );
}

#[test]
fn defaults_are_applied() {
    let (spec, plan) = validate(&minimal(), &names()).expect("valid");
    assert_eq!(spec.policy.max_extensions, 2);
    assert_eq!(spec.policy.on_alert, OnAlert::Rollback);
    assert!(!plan.backlog);
    let mut doc = minimal();
    doc["strategy"]["canary"]["steps"] = json!([{"analysis": {"metrics": [
        {"name": "m", "provider": "local", "query": "q", "successCondition": "< 1"}
    ]}}, {"approval": {}}]);
    let (_, plan) = validate(&doc, &names()).expect("valid");
    match &plan.stages[0] {
        crate::domain::rollout::Stage::Analysis { analysis } => {
            let m = &analysis.metrics[0];
            assert_eq!((m.interval_ms, m.count, m.consecutive_error_limit, m.failure_limit), (60_000, Some(1), 4, 0));
        }
        other => panic!("expected an analysis stage, got {other:?}"),
    }
    match &plan.stages[1] {
        crate::domain::rollout::Stage::Approval { gate } => {
            assert_eq!((gate.min_approvers, gate.allow_self_approval, gate.timeout_ms), (1, false, None));
        }
        other => panic!("expected an approval stage, got {other:?}"),
    }
}

#[test]
fn a_spec_is_bounded_in_steps_metrics_templates_and_channels() {
    let mut huge = minimal();
    huge["strategy"]["canary"]["steps"] = json!(vec![json!({"setWeight": 5}); 50_000]);
    assert_eq!(problems_of(&huge), ["strategy.canary.steps: has 50000 items; at most 100 are allowed"]);
    let metric = |i: usize| json!({"name": format!("m{i}"), "provider": "local", "query": "error_rate", "successCondition": "< 1"});
    let mut many = minimal();
    many["strategy"]["canary"]["steps"] = json!([{"setWeight": 5}, {"analysis": {"metrics": (0..21).map(metric).collect::<Vec<_>>()}}]);
    many["notifications"] = json!(vec![json!({"provider": "console"}); 11]);
    assert_eq!(
        problems_of(&many),
        [
            "notifications: has 11 items; at most 10 are allowed",
            "strategy.canary.steps[1].analysis.metrics: has 21 items; at most 20 are allowed"
        ]
    );
    let mut at_the_limit = minimal();
    at_the_limit["strategy"]["canary"]["steps"] = json!(vec![json!({"setWeight": 5}); 100]);
    assert!(validate(&at_the_limit, &names()).is_ok());
}

#[test]
fn windows_are_checked_by_the_schema_and_then_by_their_own_rules_each_named_by_path() {
    let mut doc = minimal();
    doc["policy"] = json!({"windows": {"timeZone": "Europe/Berln", "allow": [{"days": ["Monday"], "from": "9:00"}],
                                       "freezes": [{"from": "2026-12-24T25:00", "to": "2026-12-23", "reason": "x"}], "colour": 1}});
    assert_eq!(
        problems_of(&doc),
        [
            "policy.windows.allow[0].days[0]: \"Monday\" is not one of: Mon, Tue, Wed, Thu, Fri, Sat, Sun",
            "policy.windows.allow[0].from: '9:00' is not a time of day as HH:MM (00:00 to 24:00)",
            "policy.windows.colour: unknown field (expected one of: allow, freezes, timeZone)",
            "policy.windows.freezes[0].from: '2026-12-24T25:00' is not a local day (YYYY-MM-DD) or time (YYYY-MM-DDTHH:MM)",
            "policy.windows.timeZone: 'Europe/Berln' is not an IANA time zone (e.g. Europe/Berlin, America/New_York, UTC)",
        ]
    );
    doc["policy"] = json!({"windows": {"timeZone": "UTC", "allow": [{"from": "22:00", "to": "22:00"}],
                                       "freezes": [{"from": "2026-12-24", "to": "2026-12-23", "reason": "x"}]}});
    assert_eq!(
        problems_of(&doc),
        [
            "policy.windows.allow[0].to: the window opens and closes at 22:00; leave both out for the whole day",
            "policy.windows.freezes[0].to: the freeze ends (2026-12-23) before it starts (2026-12-24)",
        ]
    );
    doc["policy"] = json!({"windows": {"timeZone": "America/New_York", "allow": [{"days": ["Fri"], "from": "22:00", "to": "02:00"}]}});
    let (_, plan) = validate(&doc, &names()).expect("a night window across midnight is valid");
    assert_eq!(plan.windows.len(), 1);
}

#[test]
fn a_preview_comes_first_once_through_a_router_that_has_one_and_its_check_is_checked() {
    let mut doc = minimal();
    doc["strategy"]["canary"]["steps"] = json!([
        {"preview": {"check": {"path": "healthz", "attempts": 0, "expectStatus": 99, "bodyContains": "x".repeat(1001)}}},
        {"setWeight": 5},
        {"preview": {}},
    ]);
    let expected = [
        "strategy.canary.steps[0].preview.check.attempts: 0 is under 1",
        "strategy.canary.steps[0].preview.check.bodyContains: is 1001 characters long; at most 1000 are allowed",
        "strategy.canary.steps[0].preview.check.expectStatus: 99 is under 100",
        "strategy.canary.steps[0].preview.check.path: must be a path starting with '/', without spaces (e.g. /healthz)",
        "strategy.canary.steps[2].preview: only one preview step is allowed",
    ];
    assert_eq!(problems_of(&doc), expected);

    doc["strategy"]["canary"]["steps"] = json!([
        {"preview": {"approval": {"minApprovers": 2, "approvers": ["a"]}}},
        {"analysis": {"metrics": [{"name": "m", "provider": "httpProbe", "query": "https://x.example",
            "successCondition": ">= 1", "settings": {"sluicePreviewHeaders": {"authorization": "Bearer t"}}}]}}
    ]);
    assert_eq!(
        problems_of(&doc),
        [
            "strategy.canary.steps[0].preview.approval.minApprovers: 2 approvers are needed but only 1 person is allowed",
            "strategy.canary.steps[1].analysis.metrics[0].settings.sluicePreviewHeaders: is set by Sluice for a preview's smoke check, never by a spec",
        ]
    );

    doc["strategy"]["canary"]["steps"] = json!([{"setWeight": 5}, {"preview": {}}]);
    assert_eq!(
        problems_of(&doc),
        ["strategy.canary.steps[1].preview: comes after users already reach the canary: put it before the first setWeight above 0"]
    );

    doc["target"]["router"]["provider"] = json!("frontDoor");
    doc["strategy"]["canary"]["steps"] = json!([{"preview": {}}, {"setWeight": 5}]);
    assert_eq!(
        problems_of(&doc),
        ["strategy.canary.steps[0].preview: the frontDoor router cannot show the canary without user traffic: no per-request rule"]
    );

    doc["strategy"] = json!({"blueGreen": {"preview": {}, "autoPromoteAfter": "5m"}});
    assert_eq!(
        problems_of(&doc),
        ["strategy.blueGreen.preview: the frontDoor router cannot show the canary without user traffic: no per-request rule"]
    );
    doc["target"]["router"]["provider"] = json!("local");
    let (_, plan) = validate(&doc, &names()).unwrap_or_else(|p| panic!("{p}"));
    assert_eq!(plan.summary(), "blue-green: preview → approval(1) → pause 5m → 100% → promote");
    doc["strategy"] = json!({"blueGreen": {"preview": {}, "approval": {"minApprovers": 2}}});
    let (_, plan) = validate(&doc, &names()).unwrap_or_else(|p| panic!("{p}"));
    assert_eq!(plan.summary(), "blue-green: preview → approval(2) → 100% → promote", "the switch's own approval is the look");

    doc["strategy"] = json!({"canary": {"steps": [{"setWeight": 0}, {"preview": {"check": {}}}, {"setWeight": 5}]}});
    let (spec, plan) = validate(&doc, &names()).unwrap_or_else(|p| panic!("{p}"));
    assert_eq!(plan.summary(), "canary: 0% → preview → analysis(smoke) → 5% → promote");
    let Strategy::Canary(canary) = &spec.strategy else { panic!("{spec:?}") };
    let Some(CanaryStep::Preview(PreviewStep { check: Some(check), approval: None })) = canary.steps.get(1) else { panic!("{spec:?}") };
    assert_eq!((check.path.as_str(), check.expect_status, check.attempts, check.interval.ms()), ("/", 200, 3, 10_000));
}
