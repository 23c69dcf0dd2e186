//! Sluice: a progressive-delivery controller for Azure. A pipeline posts a
//! rollout; Sluice moves real traffic from the stable version to the new one
//! in phases, checks health with automated analysis, waits for people where
//! the plan says so, and on an alert or a breached metric puts all traffic
//! back on stable at once and opens an issue in the team's backlog.
//!
//! # Layout
//!
//! Each layer is a folder; dependencies point inwards only (a layer uses
//! the ones above it in this list, never one below):
//!
//! - [`domain`] — pure: [`domain::ids`] (the newtypes every edge parses
//!   into) and [`domain::parse`] (typed JSON naming the field at fault),
//!   [`domain::spec`] (the spec and its validation), [`domain::rollout`]
//!   (the plan, analysis judge and the state machine
//!   `decide(state, event, now) -> (state', commands)`, one file per event
//!   family), [`domain::release`] (one version across waves: its spec and
//!   reducer), [`domain::stats`] (the statistical judges),
//!   [`domain::health`] (release health and the metrics exposition, from
//!   rollouts' states), [`domain::pipeline_wait`] (an Azure Pipelines
//!   agentless task waiting on a rollout), [`domain::alert_keys`] (the names
//!   an alert may use for a target, as index keys), [`domain::format`] (a
//!   stored state's format), [`domain::bounded`] and [`domain::redact`]
//!   (outside text cut to size, credentials scrubbed out of it) and
//!   [`domain::backoff`], [`domain::access`] (roles, the actions they
//!   allow, pipelines' subject rules) and [`domain::window`] (deployment
//!   windows and freezes: when the next move may happen). No I/O, no clock.
//! - [`ports`] — one folder per port (trait in `mod.rs`, adapters beside it,
//!   one registry line each): [`ports::store`], [`ports::queue`],
//!   [`ports::traffic`], [`ports::metrics`], [`ports::backlog`],
//!   [`ports::notify`], the alert sources [`ports::alerts`] and the time
//!   [`ports::clock`]; with what adapters share ([`ports::env`],
//!   [`ports::reach`] — where credentials may go, [`ports::azure`],
//!   [`ports::github`], [`ports::registry`], [`ports::local_router`]),
//!   [`ports::identity`] (bearer tokens: issuers' keys, claims to a
//!   caller with roles), [`ports::preflight`] (what `sluice doctor` reports) and
//!   [`ports::azure_pipelines`] (answering a waiting pipeline task).
//! - [`shell`] — the application shell: [`shell::engine`] (load → decide →
//!   effects → save), [`shell::messages`] (the step-message wire format),
//!   [`shell::config`] (app settings), [`shell::doctor`] (gathers the
//!   ports' preflight findings) and [`shell::replay`] (a spec's analysis
//!   over a past window).
//! - [`functions`] — the handlers, one per `functions/<name>/function.json`,
//!   thin: parse the input at the edge, call the engine, answer.
//! - [`host`] — the two ways handlers are driven: the local host (`sluice
//!   up`) and the Azure Functions custom handler (`sluice serve`), with the
//!   Functions-host machinery they share (function.json, routes, envelopes).
//! - [`cli`] — the client, views and packaging behind `src/main.rs`.
//! - [`devtools`] (feature `devtools`, on by default) — demo, benchmarks,
//!   sample API, load generator and local router: never in the package
//!   `sluice serve` runs from.

// Nothing from outside may panic a handler: no byte slicing of strings.
#![cfg_attr(not(test), warn(clippy::string_slice))]

pub mod cli;
#[cfg(feature = "devtools")]
pub mod devtools;
pub mod domain;
pub mod functions;
pub mod host;
pub mod ports;
pub mod shell;

#[cfg(test)]
mod layout {
    /// The map above stays true: it names every module of `src/` and of the
    /// layers it details.
    #[test]
    fn the_layout_names_every_module() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let read = |file: &str| std::fs::read_to_string(src.join(file)).expect("a source file");
        let declared = |text: &str| -> Vec<String> {
            text.lines().filter_map(|l| l.trim().strip_prefix("pub mod ")?.strip_suffix(';').map(str::to_string)).collect()
        };
        let lib = read("lib.rs");
        let map: String = lib.lines().take_while(|l| l.starts_with("//!")).collect();
        let mut missing: Vec<String> = declared(&lib).into_iter().filter(|m| !map.contains(&format!("[`{m}`]"))).collect();
        for layer in ["domain", "ports", "shell"] {
            let names = declared(&read(&format!("{layer}/mod.rs"))).into_iter().map(|m| format!("{layer}::{m}"));
            missing.extend(names.filter(|m| !map.contains(&format!("[`{m}`]"))));
        }
        assert!(missing.is_empty(), "src/lib.rs's layout does not name {missing:?}");
    }

    /// Dependencies point inwards: no code of a layer names a layer below it
    /// in the map (doc comments and tests may point anywhere).
    #[test]
    fn no_layer_reaches_below_itself() {
        let order = ["domain", "ports", "shell", "functions", "host", "cli", "devtools"];
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut reaches = Vec::new();
        for (i, layer) in order.iter().enumerate() {
            for file in rust_files(&src.join(layer)) {
                if file.file_name().is_some_and(|n| n == "tests.rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&file).expect("a source file");
                // Tests may use any layer to build their world.
                let code = text.lines().enumerate().take_while(|(_, l)| l.trim() != "#[cfg(test)]");
                for (n, line) in code.filter(|(_, l)| !l.trim_start().starts_with("//")) {
                    for below in &order[i + 1..] {
                        if line.contains(&format!("crate::{below}::")) {
                            reaches.push(format!("{}:{}: {layer} names {below}", file.display(), n + 1));
                        }
                    }
                }
            }
        }
        assert!(reaches.is_empty(), "{}", reaches.join("\n"));
    }

    fn rust_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                files.extend(rust_files(&path));
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
        files
    }
}
