//! The `sluice` command line: the hosts (`up`, and the demo), the local
//! router, spec tools, and the client verbs that talk HTTP to any Sluice
//! deployment — local by default, or in Azure with `--url` and `--key`
//! (and `--entra` or `--token` behind App Service authentication).

#![warn(clippy::string_slice)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
#[cfg(feature = "devtools")]
use clap::ValueEnum;
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use sluice::cli::client::Client;
use sluice::cli::safe;
use sluice::cli::sign_in::SignIn;
use sluice::cli::view;
#[cfg(feature = "devtools")]
use sluice::devtools::demo;
use sluice::domain::ids::RolloutId;
use sluice::domain::rollout::Phase;
use sluice::domain::spec::{self, Format};
use sluice::host;

#[derive(Parser)]
#[command(
    name = "sluice",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("SLUICE_COMMIT"), ")"),
    about = "Progressive delivery for Azure: phased rollouts with analysis, approvals and automatic rollback"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args, Clone)]
struct Remote {
    /// Sluice's base URL.
    #[arg(long, env = "SLUICE_URL", default_value = "http://127.0.0.1:7071", global = true)]
    url: String,
    /// Sluice's key, `SLUICE_API_KEY` (sent as x-functions-key).
    #[arg(long, env = "SLUICE_KEY", global = true, hide_env_values = true)]
    key: Option<String>,
    /// Sign in to a Sluice behind App Service authentication with a token
    /// from the Azure CLI for this app registration (client id or api:// URI).
    #[arg(long, env = "SLUICE_ENTRA_APP", global = true, conflicts_with = "token")]
    entra: Option<String>,
    /// Sign in with this Entra bearer token (e.g. a pipeline's federated identity).
    #[arg(long, env = "SLUICE_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// In a GitHub Actions job: sign in with the job's own OIDC token for this
    /// audience, fetched for every call (the job needs `permissions: id-token: write`).
    #[arg(long, env = "SLUICE_GITHUB_OIDC_AUDIENCE", global = true, conflicts_with_all = ["token", "entra"])]
    github_oidc: Option<String>,
    /// In an Azure Pipelines job: sign in to Sluice's app (client id) as the
    /// step's service connection, a token minted again before each expires
    /// (needs SYSTEM_ACCESSTOKEN mapped; AzureCLI@2 sets the connection's ids).
    #[arg(long, env = "SLUICE_AZURE_PIPELINES_APP", global = true, conflicts_with_all = ["token", "entra", "github_oidc"])]
    azure_pipelines: Option<String>,
    /// Who is acting, recorded in the history (default: your login name, else `someone`).
    /// Whoever started a rollout cannot approve it: approve as another person.
    #[arg(long = "as", env = "SLUICE_USER", global = true)]
    user: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[cfg(feature = "devtools")]
#[derive(Clone, Copy, ValueEnum)]
enum FaultKind {
    /// v2 answers 20% of requests with HTTP 500.
    Errors,
    /// v2 is 150 ms slower.
    Latency,
}

#[cfg(feature = "devtools")]
#[derive(Clone, Copy, ValueEnum)]
enum BenchKind {
    /// Alert accepted → canary weight 0 at the router and persisted.
    Rollback,
    /// `sluice serve` exec → first successful GET /, and idle memory.
    Startup,
    /// The statistical judges on generated canaries: false positives, passes, detections.
    Judge,
    /// Invocations an idle Sluice costs in a day (its timers; nothing else runs when nothing is due).
    Idle,
    /// Many active rollouts: timer sweep, list, alert acks at 16 concurrent, alert → rollback, memory
    /// (N = 100, 1 000, 10 000 unless `--rollouts` names one).
    Scale,
    /// A long run: rollouts start, step, roll back and finish under traffic while memory, open files,
    /// the store's size and request times are sampled, each with its slope per hour (`--minutes`).
    Soak,
}

/// How `sluice demo` judges the canary.
#[cfg(feature = "devtools")]
#[derive(Clone, Copy, ValueEnum)]
enum JudgeKind {
    /// Error-rate and latency thresholds.
    Thresholds,
    /// Statistical comparison with stable.
    Statistical,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check rollout specs: every problem with its path, or a one-line plan.
    Validate {
        /// Spec files (JSON, or YAML by extension).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Fill `${NAME}` placeholders in the spec's strings from the environment (a pipeline's
        /// commit, versions, resource names); an unset name is an error, a secret-looking one is
        /// never filled. `--fill-env=RELEASE_,GITHUB_SHA` fills only those names (an entry ending
        /// in `_` or `*` is a prefix).
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "", value_name = "NAMES")]
        fill_env: Option<String>,
    },
    /// Print the JSON Schema of the rollout spec (or of the release spec, or of the step messages on the queue).
    Schema {
        /// The wire format of `rollout-steps` messages instead.
        #[arg(long, conflicts_with = "release")]
        step_message: bool,
        /// The release spec (waves) instead.
        #[arg(long)]
        release: bool,
    },
    /// Run a spec's analysis over a past window of its real metric source, interval by
    /// interval, and print what Sluice would have decided and why. Runs here, with this
    /// machine's identity (AZURE_* settings) for Azure sources; nothing is written.
    Replay {
        /// Spec file (JSON, or YAML by extension).
        file: PathBuf,
        /// Window start: RFC 3339 (`2026-12-01T10:00:00Z`) or a time ago (`2h`).
        #[arg(long, value_parser = point_in_time)]
        from: chrono::DateTime<chrono::Utc>,
        /// Window end: RFC 3339 or a time ago; default now.
        #[arg(long, value_parser = point_in_time)]
        to: Option<chrono::DateTime<chrono::Utc>>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the ready-made metric templates a spec can name (`"template": "appinsights-error-rate"`).
    Templates {
        /// Print JSON, with every field each template fills in.
        #[arg(long)]
        json: bool,
    },
    /// Run Sluice locally: the embedded host with its HTTP API, timer and queue.
    Up {
        /// Port on 127.0.0.1.
        #[arg(long, default_value_t = 7071)]
        port: u16,
        /// Where state lives: the embedded store and queue, the local backlog (`backlog/`), notification logs and the local token.
        #[arg(long, env = "SLUICE_DATA_DIR", default_value = ".sluice")]
        data_dir: PathBuf,
        /// Directory holding host.json and functions/ (built-in copies otherwise).
        #[arg(long, default_value = ".")]
        root: PathBuf,
        /// Store: sqlite (embedded) or table (Azure Table Storage / Azurite; see SLUICE_TABLE_CONNECTION).
        #[arg(long, value_parser = ["sqlite", "table"])]
        store: Option<String>,
        /// Queue: embedded or servicebus (see SLUICE_SERVICEBUS_CONNECTION).
        #[arg(long, value_parser = ["embedded", "servicebus"])]
        queue: Option<String>,
        /// Who the dashboard is signed in as: its buttons act under this name
        /// (in Azure, App Service authentication's signed-in user).
        #[arg(long = "as", env = "SLUICE_USER")]
        signed_in: Option<String>,
    },
    /// Run as the Azure Functions custom handler (configured by app settings).
    Serve,
    /// Build the zip the Functions host deploys.
    Package {
        /// Output directory.
        #[arg(long, default_value = "dist")]
        out: PathBuf,
        /// Use this executable instead of building one.
        #[arg(long)]
        binary: Option<PathBuf>,
    },
    #[cfg(feature = "devtools")]
    /// Watch a real phased rollout on this machine, nothing to install.
    Demo {
        /// Make v2 faulty so analysis rolls it back.
        #[arg(long, value_enum)]
        fault: Option<FaultKind>,
        /// Make v2 fail while waiting for approval, and let an alert roll it back.
        #[arg(long, conflicts_with = "fault")]
        alert: bool,
        /// Pin users to a side for a while (an affinity cookie): v2 fails, and users
        /// pinned to it keep reaching it after the revert until Sluice sees them gone.
        #[arg(long, conflicts_with_all = ["fault", "alert"])]
        sticky: bool,
        /// One release across two regions as two waves: the second wave's canary
        /// fails, the release halts, and the first wave stays promoted.
        #[arg(long, conflicts_with_all = ["fault", "alert", "sticky", "prometheus"])]
        waves: bool,
        /// The team's deployment window opens within a minute and a half: the
        /// rollout waits for it, goes on at the opening and succeeds.
        #[arg(long, conflicts_with_all = ["fault", "alert", "sticky", "waves"])]
        window: bool,
        /// Requests per second of load.
        #[arg(long, default_value_t = 300)]
        rps: u32,
        /// Keep serving the dashboard after the end, until Ctrl-C.
        #[arg(long)]
        hold: bool,
        /// Keep earlier runs' rollouts in --data-dir instead of emptying it, so the
        /// dashboard's list and release-health report cover every run.
        #[arg(long)]
        keep: bool,
        /// Analyse through a real Prometheus scraping the router (Debian package prometheus).
        #[arg(long)]
        prometheus: bool,
        /// How the step analysis judges the canary: thresholds, or the statistical
        /// judges against stable (two-proportion / Fisher, Mann-Whitney U).
        #[arg(long, value_enum, default_value_t = JudgeKind::Thresholds)]
        judge: JudgeKind,
        /// Where the demo's state goes (emptied first, unless --keep).
        #[arg(long, env = "SLUICE_DEMO_DIR", default_value = ".sluice/demo")]
        data_dir: PathBuf,
    },
    #[cfg(feature = "devtools")]
    /// Measure: `rollback` (alert → weight 0 at the router and persisted).
    Bench {
        /// Which benchmark.
        #[arg(value_enum)]
        which: BenchKind,
        /// Rollouts to measure (rollback, startup: 200; scale: 100, 1 000 and 10 000).
        #[arg(long)]
        rollouts: Option<usize>,
        /// scale, soak: the store the server runs on — embedded, or Table Storage on Azurite
        /// (`azurite-table` from SLUICE_AZURITE_TABLE_BIN or .tools/; N = 100, 1 000, 2 000).
        #[arg(long, value_parser = ["embedded", "azurite"], default_value = "embedded")]
        store: String,
        /// scale: seconds each alert burst lasts.
        #[arg(long, default_value_t = 3)]
        burst_secs: u64,
        /// scale: hold finished rollouts over 10 services instead of active ones, and time what sums
        /// them (`/api/metrics`, the report).
        #[arg(long)]
        finished: bool,
        /// soak: how long it runs, in minutes.
        #[arg(long, default_value_t = 3.0)]
        minutes: f64,
        /// soak: seconds between samples.
        #[arg(long, default_value_t = 10)]
        sample_secs: u64,
        /// soak: targets rolled out at once, each under its own traffic (1 to 64).
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
        workers: u16,
        /// rollback: background metrics per rollout on a Prometheus that never answers, with the
        /// backlog and a channel hanging too (default 0: a healthy world).
        #[arg(long, default_value_t = 0)]
        hanging: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    #[cfg(feature = "devtools")]
    /// Run the local weighted router in front of two upstreams.
    Router {
        /// Address for users' traffic (proxied only).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Loopback address for the admin API, which a spec's `url` names
        /// [default: 127.0.0.1 on the --listen port + 1000, so 9080].
        #[arg(long)]
        admin: Option<SocketAddr>,
        /// Stable upstream as VERSION=URL.
        #[arg(long)]
        stable: String,
        /// Canary upstream as VERSION=URL.
        #[arg(long)]
        canary: String,
    },
    #[cfg(feature = "devtools")]
    /// Run the demo's sample API: one version, answering JSON, with an optional fault.
    SampleApi {
        /// The version it reports (e.g. v1 for stable, v2 for the canary).
        #[arg(long = "app-version")]
        app_version: String,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9001")]
        listen: SocketAddr,
        /// Errors per thousand requests (HTTP 500), to stand in for a bad release.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1000))]
        errors_per_mille: u32,
        /// Milliseconds added to every answer.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
    },
    #[cfg(feature = "devtools")]
    /// Send steady traffic, as users would, until Ctrl-C; then count the answers by version.
    Load {
        /// Where users' traffic goes (the router's --listen address).
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Requests per second.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=5000))]
        rps: u32,
    },
    /// Start a rollout from a spec file.
    Start {
        /// Spec (JSON, or YAML by extension).
        file: PathBuf,
        /// Fill `${NAME}` placeholders in the spec's strings from the environment (a pipeline's
        /// commit, versions, resource names); an unset name is an error, a secret-looking one is
        /// never filled. `--fill-env=RELEASE_,GITHUB_SHA` fills only those names (an entry ending
        /// in `_` or `*` is a prefix).
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "", value_name = "NAMES")]
        fill_env: Option<String>,
        /// Choose the rollout id (makes the call idempotent; a pipeline uses its run id).
        #[arg(long, value_parser = rollout_id)]
        id: Option<RolloutId>,
        /// Follow it until it finishes (exit 0 on success; see `watch`).
        #[arg(long)]
        watch: bool,
        /// Post the Start message straight to the Service Bus queue instead of the HTTP API:
        /// NAMESPACE/QUEUE (e.g. sb-sluice.servicebus.windows.net/rollout-steps). Needs --id.
        #[arg(long, value_name = "NAMESPACE/QUEUE", requires = "id")]
        queue: Option<String>,
        /// Entra token for Service Bus (audience https://servicebus.azure.net); else the Azure CLI's.
        #[arg(long, env = "SLUICE_SERVICEBUS_TOKEN", hide_env_values = true, requires = "queue")]
        queue_token: Option<String>,
        /// Pipeline output for --watch: auto (detect GitHub Actions / Azure Pipelines), github, azure, none.
        #[arg(long, value_parser = ["auto", "github", "azure", "none"], default_value = "auto")]
        ci: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Report a failed stage of a release pipeline (build, deploy, smoke test, …): rolls
    /// back the release's rollout if it runs, else opens (or comments on) the release's
    /// one backlog issue. Exits 0 once the report is filed.
    ReportFailure {
        /// The release's rollout id (the one `start --id` uses, e.g. from the run id).
        #[arg(value_parser = rollout_id)]
        id: RolloutId,
        /// The stage or job that failed.
        #[arg(long)]
        stage: String,
        /// A link to the pipeline run.
        #[arg(long)]
        run_url: Option<String>,
        /// A file holding the failed step's log (its end is sent, secrets scrubbed).
        #[arg(long, conflicts_with = "log")]
        log_file: Option<PathBuf>,
        /// The log excerpt itself.
        #[arg(long)]
        log: Option<String>,
        /// The rollout spec (names the backlog when the rollout has not started).
        #[command(flatten)]
        spec: SpecOption,
        #[command(flatten)]
        remote: Remote,
    },
    /// May a release to this target begin now? Exits 0 if ready, 1 with the reasons
    /// (a rollout running, a rollback open, the error budget below its minimum).
    Gate {
        /// The target's name (or the spec's, with --spec: it also names the error budget).
        #[arg(long, required_unless_present = "spec", conflicts_with = "spec")]
        target: Option<String>,
        #[command(flatten)]
        spec: SpecOption,
        #[command(flatten)]
        remote: Remote,
    },
    /// Before a first rollout: ask Sluice, where it runs and with its identity,
    /// whether it can do what the spec needs (router and permissions, queries,
    /// backlog, notifications, store, queue). Blockers first; exits 1 on a blocker.
    Doctor {
        /// Spec file (JSON, or YAML by extension).
        file: PathBuf,
        /// Fill `${NAME}` placeholders in the spec's strings from the environment (a pipeline's
        /// commit, versions, resource names); an unset name is an error, a secret-looking one is
        /// never filled. `--fill-env=RELEASE_,GITHUB_SHA` fills only those names (an entry ending
        /// in `_` or `*` is a prefix).
        #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "", value_name = "NAMES")]
        fill_env: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show one rollout (with history), or the active ones.
    Status {
        /// Rollout id.
        #[arg(value_parser = rollout_id)]
        id: Option<RolloutId>,
        #[command(flatten)]
        remote: Remote,
    },
    /// List rollouts.
    List {
        /// Only active ones.
        #[arg(long)]
        active: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Release health: deployment frequency, change failure rate, time to
    /// restore, failures caught at which weight, exposure, approval waits.
    Report {
        /// The period: this long until now (e.g. 7d, 30d).
        #[arg(long, default_value = "30d", value_parser = duration_arg)]
        since: String,
        /// Only this service (the rollouts' target name).
        #[arg(long, value_parser = service_name)]
        service: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Follow a rollout (or a release) live; exits 0 on Succeeded, 1 on RolledBack (a release: Halted), 3 on Aborted.
    Watch {
        /// Rollout or release id.
        #[arg(value_parser = rollout_id)]
        id: RolloutId,
        /// Stop (exit 0) once it waits for approval, with how to approve in the job summary;
        /// a pipeline then follows it to the end in a second step, the summary already shown.
        #[arg(long)]
        until_approval: bool,
        /// Pipeline output: auto (detect GitHub Actions / Azure Pipelines), github, azure, none.
        #[arg(long, value_parser = ["auto", "github", "azure", "none"], default_value = "auto")]
        ci: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Approve the current approval gate (or resume a pause).
    Approve(Action),
    /// Reject at the approval gate: rolls back and opens a backlog issue.
    Reject(Action),
    /// Stop and put all traffic back on stable (no backlog issue).
    Abort(Action),
    /// Skip the current pause, or with --full every remaining step up to the next approval gate.
    Promote(PromoteAction),
    /// Re-run a paused step, re-drive a stuck rollback, or restart a finished rollout.
    Retry(Action),
    /// Let a start or step held by a deployment window or freeze through, once (Admin; --reason is required and announced).
    Override(Action),
}

/// An optional `--spec FILE`, its placeholders filled from the environment with `--fill-env`.
#[derive(Args)]
struct SpecOption {
    /// The rollout spec (JSON, or YAML by extension).
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Fill `${NAME}` placeholders in the spec's strings from the environment (a pipeline's
    /// commit, versions, resource names); an unset name is an error, a secret-looking one is
    /// never filled. `--fill-env=RELEASE_,GITHUB_SHA` fills only those names (an entry ending
    /// in `_` or `*` is a prefix).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "", value_name = "NAMES")]
    fill_env: Option<String>,
}

impl SpecOption {
    fn read(&self) -> anyhow::Result<Option<serde_json::Value>> {
        self.spec.as_deref().map(|path| read_spec(path, self.fill_env.as_deref())).transpose()
    }
}

#[derive(Args)]
struct Action {
    /// Rollout id (or a release's, for approve, reject and abort).
    #[arg(value_parser = rollout_id)]
    id: RolloutId,
    /// Why (recorded).
    #[arg(long)]
    reason: Option<String>,
    /// The step you are acting on (as status shows it); stale if the rollout moved on.
    #[arg(long)]
    step: Option<u64>,
    #[command(flatten)]
    remote: Remote,
}

#[derive(Args)]
struct PromoteAction {
    #[command(flatten)]
    action: Action,
    /// Skip every remaining step up to the next approval gate, which then waits as usual (to the promotion if none is left).
    #[arg(long)]
    full: bool,
}

/// Rollout ids on the command line obey the same rule as everywhere else.
fn rollout_id(text: &str) -> Result<RolloutId, String> {
    RolloutId::parse(text).map_err(|e| e.message)
}

/// A period like `30d`, checked before it goes into a URL.
fn duration_arg(text: &str) -> Result<String, String> {
    sluice::domain::spec::parse_duration_ms(text).map(|_| text.trim().to_string())
}

/// A service (target) name, checked before it goes into a URL.
fn service_name(text: &str) -> Result<String, String> {
    sluice::domain::spec::check_name(text).map(|()| text.to_string())
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only for a person at a terminal: a pipeline's log shows escape codes as text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // One event, one line: a newline inside a field cannot forge the next line.
    let writer = move || sluice::host::log_lines::OneLine::new(std::io::stderr(), ansi);
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(writer).try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before the runtime starts its threads: arenas made before stay.
    sluice::host::memory::limit_arenas();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", safe::for_terminal(&format!("{e:#}")));
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::Validate { files, fill_env } => validate(&files, fill_env.as_deref()),
        Cmd::Replay { file, from, to, json } => replay(&file, from, to.unwrap_or_else(chrono::Utc::now), json).await,
        Cmd::Templates { json } => {
            if json {
                println!("{}", serde_json::to_string_pretty(&spec::catalog::describe())?);
            } else {
                for t in spec::catalog::TEMPLATES {
                    let needs = if t.needs.is_empty() { String::new() } else { format!(" (settings: {})", t.needs.join(", ")) };
                    println!("{:<30} {}{needs}", t.name, t.about);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Schema { step_message, release } => {
            let schema = match (step_message, release) {
                (true, _) => sluice::shell::messages::json_schema(),
                (_, true) => sluice::domain::release::spec::json_schema(),
                _ => spec::json_schema(),
            };
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Up { port, data_dir, root, store, queue, signed_in } => up(port, data_dir, root, store, queue, signed_in).await,
        Cmd::Serve => serve().await,
        Cmd::Package { out, binary } => package(&out, binary),
        #[cfg(feature = "devtools")]
        Cmd::Demo { fault, alert, sticky, waves, window, rps, hold, keep, prometheus, judge, data_dir } => {
            init_logging("warn");
            let variant = match (fault, alert, sticky) {
                _ if waves => demo::Variant::Waves,
                _ if window => demo::Variant::Window,
                (Some(FaultKind::Errors), _, _) => demo::Variant::FaultErrors,
                (Some(FaultKind::Latency), _, _) => demo::Variant::FaultLatency,
                (None, true, _) => demo::Variant::Alert,
                (None, false, true) => demo::Variant::Sticky,
                (None, false, false) => demo::Variant::Success,
            };
            let judging = match judge {
                JudgeKind::Thresholds => demo::Judging::Thresholds,
                JudgeKind::Statistical => demo::Judging::Statistical,
            };
            let options = demo::DemoOptions { variant, data_dir, keep, root: PathBuf::from("."), rps, hold, prometheus, judging };
            let report = demo::run(options).await?;
            Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        #[cfg(feature = "devtools")]
        Cmd::Router { listen, admin, stable, canary } => router(listen, admin, &stable, &canary).await,
        #[cfg(feature = "devtools")]
        Cmd::Load { url, rps } => load(&url, rps).await,
        #[cfg(feature = "devtools")]
        Cmd::SampleApi { app_version, listen, errors_per_mille, latency_ms } => {
            sample_api(&app_version, listen, errors_per_mille, latency_ms).await
        }
        #[cfg(feature = "devtools")]
        Cmd::Bench { which: BenchKind::Startup, rollouts, json, .. } => {
            let exe = std::env::current_exe().context("locating this executable")?;
            let report = sluice::devtools::bench::startup(&exe, rollouts.unwrap_or(200).clamp(1, 200)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                let s = &report.exec_to_ready;
                println!(
                    "exec -> first GET / answered  n={} p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
                    s.n, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms
                );
                println!(
                    "idle RSS after {}s: median {:.1} MiB (min {:.1}, max {:.1})",
                    report.idle_secs, report.idle_rss_mib_p50, report.idle_rss_mib_min, report.idle_rss_mib_max
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "devtools")]
        Cmd::Bench { which: BenchKind::Scale, rollouts, store, burst_secs, json, finished, .. } => {
            bench_scale(rollouts, &store, burst_secs, finished, json).await
        }
        #[cfg(feature = "devtools")]
        Cmd::Bench { which: BenchKind::Soak, store, minutes, sample_secs, workers, json, .. } => {
            bench_soak(&store, minutes, sample_secs, usize::from(workers), json).await
        }
        #[cfg(feature = "devtools")]
        Cmd::Bench { which: BenchKind::Idle, json, .. } => {
            let midnight = chrono::Utc::now().date_naive().and_time(chrono::NaiveTime::MIN).and_utc();
            let costs = sluice::devtools::bench_idle::idle(midnight).map_err(anyhow::Error::msg)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&costs)?);
            } else {
                for c in &costs {
                    println!("{:<8} {:<18} {:>6} invocations a day", c.function, c.schedule, c.per_day);
                }
                println!("steps, HTTP: 0 when idle (each wait, measurement and retry keeps its own scheduled message)");
            }
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "devtools")]
        Cmd::Bench { which: BenchKind::Judge, json, .. } => {
            let report = sluice::devtools::bench_judge::judge(2000);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", sluice::devtools::bench_judge::text(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(feature = "devtools")]
        Cmd::Bench { which: BenchKind::Rollback, rollouts, json, hanging, .. } => {
            init_logging("error");
            let rollouts = rollouts.unwrap_or(if hanging > 0 { 20 } else { 200 });
            let report = sluice::devtools::bench::rollback(rollouts, hanging, |n| {
                if n % 50 == 0 || (hanging > 0 && n % 5 == 0) {
                    eprintln!("  {n}/{rollouts} rollouts");
                }
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                let line = |name: &str, s: &sluice::devtools::bench::Summary| {
                    println!(
                        "{name:<38} n={:<5} p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
                        s.n, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms
                    )
                };
                line("alert POST -> router at 0%", &report.alert_to_router_zero);
                line("alert POST -> RolledBack persisted", &report.alert_to_persisted);
                line("alert POST -> 202 received", &report.alert_accepted);
                line("bare loopback HTTP round trip", &report.loopback_round_trip);
                println!("router-at-0 p50 / round-trip p50 = {:.1}x", report.ratio_p50);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Start { file, fill_env, id, watch, queue, queue_token, ci, remote } => {
            let doc = read_spec(&file, fill_env.as_deref())?;
            let client = client(&remote);
            let rid = match (queue, id) {
                (Some(queue), Some(id)) => {
                    let address = sluice::cli::release::QueueAddress::parse(&queue)?;
                    let token = match queue_token {
                        Some(t) => t,
                        None => SignIn::azure_cli(sluice::ports::queue::servicebus_identity::SERVICE_BUS_RESOURCE)
                            .bearer()
                            .await?
                            .unwrap_or_default(),
                    };
                    let by = sluice::domain::ids::Actor::parse(&actor_name(&remote)).map_err(|e| anyhow::anyhow!("--as: {}", e.message))?;
                    let message_id = sluice::cli::release::start_on_queue(&address, token, doc, by, id.clone()).await?;
                    println!("queued the start of {id} on {}/{} (message {message_id})", address.namespace, address.queue);
                    id.to_string()
                }
                (_, id) if sluice::domain::release::spec::is_release(&doc) => {
                    let answer = client.start_release(&doc, id.as_deref()).await?;
                    let rid = answer["id"].as_str().unwrap_or_default().to_string();
                    if remote.json {
                        println!("{}", safe::json_for_log(&serde_json::to_string_pretty(&answer)?));
                    } else {
                        print!("started {}", safe::for_terminal(&sluice::cli::waves::release_text(&answer)));
                    }
                    if watch {
                        return watch_release(&client, &rid, remote.json, false).await;
                    }
                    return Ok(ExitCode::SUCCESS);
                }
                (_, id) => {
                    let answer = client.start(&doc, id.as_deref()).await?;
                    let rid = answer["id"].as_str().unwrap_or_default().to_string();
                    if remote.json {
                        println!("{}", safe::json_for_log(&serde_json::to_string_pretty(&answer)?));
                    } else {
                        println!("started {rid}: {}", safe::for_terminal(answer["plan"].as_str().unwrap_or("")));
                    }
                    rid
                }
            };
            if watch {
                // Just started (perhaps through the queue): give it time to appear.
                return watch_rollout(&client, &rid, remote.json, &ci, (false, view::APPEAR_WITHIN)).await;
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::ReportFailure { id, stage, run_url, log_file, log, spec, remote } => {
            let mut report = json!({"stage": stage});
            if let Some(url) = run_url {
                report["runUrl"] = json!(url);
            }
            let log = match log_file {
                Some(path) => Some(sluice::cli::release::log_tail(&path)?),
                None => log,
            };
            if let Some(log) = log {
                report["log"] = json!(log);
            }
            if let Some(doc) = spec.read()? {
                report["spec"] = doc;
            }
            let answer = report_failure(&client(&remote), &id, &report).await?;
            if remote.json {
                println!("{}", safe::json_for_log(&serde_json::to_string_pretty(&answer)?));
            } else {
                let issue = answer.pointer("/issue/url").and_then(|u| u.as_str()).map(|u| format!(": {u}")).unwrap_or_default();
                let said = format!("release {id}: {}{issue}", answer["action"].as_str().unwrap_or("reported"));
                println!("{}", safe::for_terminal(&said));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Gate { target, spec, remote } => {
            let ask = match spec.read()? {
                Some(doc) => json!({"spec": doc}),
                None => json!({"target": target}),
            };
            let answer = client(&remote).gate(&ask).await?;
            if remote.json {
                println!("{}", safe::json_for_log(&serde_json::to_string_pretty(&answer)?));
            } else {
                print!("{}", safe::for_terminal(&view::gate_text(&answer)));
            }
            Ok(if answer["ready"] == json!(true) { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Cmd::Doctor { file, fill_env, remote } => {
            let doc = read_spec(&file, fill_env.as_deref())?;
            let client = client(&remote);
            let mut answer = client.doctor(&doc).await?;
            // From here, outside, as Azure Monitor calls it.
            view::add_check(&mut answer, client.alert_webhook_check().await);
            if remote.json {
                println!("{}", safe::json_for_log(&serde_json::to_string_pretty(&answer)?));
            } else {
                print!("{}", safe::for_terminal(&view::doctor_text(&answer)));
            }
            Ok(if answer["ready"] == json!(true) { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Cmd::Status { id, remote } => {
            let client = client(&remote);
            let answer = match &id {
                Some(id) => client.status_any(id).await?,
                None => client.list(true).await?,
            };
            if remote.json {
                println!("{}", safe::json_for_log(&serde_json::to_string_pretty(&answer)?));
            } else if answer["kind"] == "release" {
                print!("{}", safe::for_terminal(&sluice::cli::waves::release_text(&answer)));
            } else if id.is_some() {
                print!("{}", safe::for_terminal(&view::status_text(&answer)));
            } else {
                print!("{}", safe::for_terminal(&view::list_text(&answer)));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::List { active, remote } => {
            let answer = client(&remote).list(active).await?;
            if remote.json {
                println!("{}", safe::json_for_log(&serde_json::to_string_pretty(&answer)?));
            } else {
                print!("{}", safe::for_terminal(&view::list_text(&answer)));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Report { since, service, remote } => {
            let answer = client(&remote).report(&since, service.as_deref()).await?;
            if remote.json {
                println!("{}", safe::json_for_log(&serde_json::to_string_pretty(&answer)?));
            } else {
                print!("{}", safe::for_terminal(&view::report_text(&answer)));
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Watch { id, until_approval, ci, remote } => {
            let client = client(&remote);
            match client.status(&id).await {
                Err(sluice::cli::client::ClientError::Http { status: 404, .. }) if client.release(&id).await.is_ok() => {
                    watch_release(&client, &id, remote.json, until_approval).await
                }
                // Neither a rollout nor a release: say so now, not after waiting for it to appear.
                _ => watch_rollout(&client, &id, remote.json, &ci, (until_approval, Duration::ZERO)).await,
            }
        }
        Cmd::Approve(a) => action("approve", a, false).await,
        Cmd::Reject(a) => action("reject", a, false).await,
        Cmd::Abort(a) => action("abort", a, false).await,
        Cmd::Promote(p) => action("promote", p.action, p.full).await,
        Cmd::Retry(a) => action("retry", a, false).await,
        Cmd::Override(a) => action("override", a, false).await,
    }
}

/// A spec document from a file (JSON, or YAML by extension), its
/// placeholders filled from the environment if asked; not yet validated.
fn read_spec(file: &std::path::Path, fill_env: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let mut doc = spec::parse_document(&text, Format::from_path(file)).map_err(|p| anyhow::anyhow!("{}: {p}", file.display()))?;
    if let Some(names) = fill_env {
        let names = spec::placeholders::Names::parse(names);
        spec::placeholders::fill_only(&mut doc, &|name| std::env::var(name).ok(), &names)
            .map_err(|p| anyhow::anyhow!("{}: {p}", file.display()))?;
    }
    Ok(doc)
}

/// Who the CLI acts as: `--as`, else the login name.
fn actor_name(remote: &Remote) -> String {
    sluice::cli::actor::name(remote.user.as_deref(), &|k| std::env::var(k).ok())
}

/// Files a failure report; while the failed rollout's own issue is being
/// opened Sluice answers 409, and the report waits for it (up to 2 minutes).
async fn report_failure(client: &Client, id: &str, report: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        match client.report_failure(id, report).await {
            Err(sluice::cli::client::ClientError::Http { status: 409, body })
                if body["error"] == json!("issue_being_opened") && std::time::Instant::now() < deadline =>
            {
                let wait = body["retryAfterSeconds"].as_u64().unwrap_or(5).clamp(1, 30);
                eprintln!("the rollout's issue is being opened; reporting again in {wait}s");
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
            other => return Ok(other?),
        }
    }
}

fn client(remote: &Remote) -> Client {
    let user = actor_name(remote);
    let sign_in = match (&remote.entra, &remote.token, &remote.github_oidc, &remote.azure_pipelines) {
        (Some(app), _, _, _) => SignIn::azure_cli(app),
        (None, Some(token), _, _) => SignIn::Token(token.clone()),
        (None, None, Some(audience), _) => SignIn::GitHubActions { audience: audience.clone() },
        (None, None, None, Some(app)) => SignIn::azure_pipelines(app),
        (None, None, None, None) => SignIn::None,
    };
    Client::new(&remote.url, remote.key.clone(), &user).signed_in(sign_in).with_local_token(local_token(&remote.url))
}

async fn action(name: &str, a: Action, full: bool) -> anyhow::Result<ExitCode> {
    let mut body = json!({});
    if let Some(r) = &a.reason {
        body["reason"] = json!(r);
    }
    if full {
        body["full"] = json!(true);
    }
    if let Some(s) = a.step {
        body["step"] = json!(s);
    }
    let client = client(&a.remote);
    let answer = match client.action(&a.id, name, &body).await {
        // No rollout with this id: a release's gate (approve, reject) or the release itself (abort).
        Err(sluice::cli::client::ClientError::Http { status: 404, .. })
            if ["approve", "reject", "abort"].contains(&name) && client.release(&a.id).await.is_ok() =>
        {
            let reason = a.reason.as_ref().map(|r| json!({"reason": r})).unwrap_or_else(|| json!({}));
            let answer = client.release_action(&a.id, name, &reason).await?;
            if a.remote.json {
                println!("{}", safe::json_for_log(&serde_json::to_string_pretty(&answer)?));
            } else {
                print!("{}", safe::for_terminal(&sluice::cli::waves::release_text(&answer)));
            }
            return Ok(ExitCode::SUCCESS);
        }
        other => other?,
    };
    if a.remote.json {
        println!("{}", safe::json_for_log(&serde_json::to_string_pretty(&answer)?));
    } else {
        let said = format!(
            "{}: {} — step {}, {}% on {}; waiting for {}",
            answer["id"].as_str().unwrap_or(&a.id),
            answer["phase"].as_str().unwrap_or(""),
            answer["step"].as_str().unwrap_or(""),
            answer["weight"],
            answer["canary"].as_str().unwrap_or(""),
            answer["waitingFor"].as_str().unwrap_or("")
        );
        println!("{}", safe::for_terminal(&said));
    }
    Ok(ExitCode::SUCCESS)
}

async fn watch_release(client: &Client, id: &str, as_json: bool, until_approval: bool) -> anyhow::Result<ExitCode> {
    let poll = Duration::from_millis(500);
    let status = if as_json {
        sluice::cli::waves::watch(client, id, poll, until_approval, |_| {}).await?
    } else {
        println!("watching release {id} (Ctrl-C to stop watching; the release goes on)");
        sluice::cli::waves::watch(client, id, poll, until_approval, |line| println!("{}", safe::for_terminal(&line))).await?
    };
    if as_json {
        println!("{}", safe::json_for_log(&serde_json::to_string_pretty(&status)?));
    } else {
        print!("{}", safe::for_terminal(&sluice::cli::waves::release_text(&status)));
    }
    Ok(ExitCode::from(sluice::cli::waves::exit_code(status["phase"].as_str().unwrap_or(""))))
}

/// `until`: stop at an approval gate, and how long the rollout may take to appear.
async fn watch_rollout(client: &Client, id: &str, as_json: bool, ci: &str, until: (bool, Duration)) -> anyhow::Result<ExitCode> {
    use sluice::cli::ci::Runner;
    let runner = Runner::detect(ci, &|k| std::env::var(k).ok());
    let watcher = if runner.in_pipeline() { view::Watcher::changes_only() } else { view::Watcher::new(Duration::from_secs(5)) };
    let base = client.base();
    let hint = view::approval_hint(id, base);
    let watcher = watcher.with_approval_hint(hint);
    let poll = Duration::from_millis(500);
    let (phase, status) = if as_json {
        view::watch(client, id, poll, watcher, until, |_| {}).await?
    } else {
        println!(
            "{}",
            runner
                .group(&format!("Sluice rollout {id}"))
                .unwrap_or_else(|| format!("watching {id} (Ctrl-C to stop watching; the rollout goes on)"))
        );
        let followed = view::watch(client, id, poll, watcher, until, |line| println!("{}", safe::for_terminal(&line))).await;
        if let Some(end) = runner.end_group() {
            println!("{end}");
        }
        followed?
    };
    if as_json {
        println!("{}", safe::json_for_log(&serde_json::to_string_pretty(&status)?));
    }
    if phase.is_terminal() && phase != Phase::Succeeded {
        let cause = status["failure"].as_str().unwrap_or("no cause recorded");
        // The cause is outside text: defused before it is escaped into the annotation.
        if let Some(line) = runner.error(&format!("Sluice rollout {id}: {phase}"), &safe::for_terminal(cause)) {
            println!("{line}");
        }
    }
    if let sluice::cli::ci::Runner::GitHub { summary: Some(path) } = &runner {
        use std::io::Write;
        let markdown = sluice::cli::ci::summary_markdown(&status, client.base());
        let mut file =
            std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("opening {}", path.display()))?;
        file.write_all(markdown.as_bytes()).with_context(|| format!("writing the job summary to {}", path.display()))?;
    }
    Ok(match phase {
        Phase::Succeeded | Phase::AwaitingApproval => ExitCode::SUCCESS,
        Phase::RolledBack => ExitCode::from(1),
        _ => ExitCode::from(3),
    })
}

#[cfg(feature = "devtools")]
async fn bench_soak(store: &str, minutes: f64, sample_secs: u64, workers: usize, json: bool) -> anyhow::Result<ExitCode> {
    use sluice::devtools::bench_soak::{self, SoakOptions};
    init_logging("warn");
    if !(minutes.is_finite() && minutes > 0.0 && minutes <= 7.0 * 24.0 * 60.0) {
        anyhow::bail!("--minutes: {minutes} is not a duration from a moment to a week");
    }
    let exe = std::env::current_exe().context("locating this executable")?;
    let options = SoakOptions {
        duration: std::time::Duration::from_secs_f64(minutes * 60.0),
        every: std::time::Duration::from_secs(sample_secs.clamp(1, 3600)),
        store: scale_store(store)?,
        workers,
    };
    let report = bench_soak::soak(&exe, &options, |line| eprintln!("{line}")).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", bench_soak::text(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// The store a benchmark's `sluice up` runs on.
#[cfg(feature = "devtools")]
fn scale_store(store: &str) -> anyhow::Result<sluice::devtools::bench_scale::ScaleStore> {
    use sluice::devtools::bench_scale::ScaleStore;
    Ok(match store {
        "azurite" => {
            let bin =
                sluice::devtools::prometheus::find("SLUICE_AZURITE_TABLE_BIN", ".tools/node_modules/.bin/azurite-table", "azurite-table")
                    .context(
                    "azurite-table not found: set SLUICE_AZURITE_TABLE_BIN or run scripts/test once (it installs Azurite into .tools/)",
                )?;
            // Azurite starts in its own directory: a path relative to here would not be found there.
            ScaleStore::Azurite(std::fs::canonicalize(&bin).unwrap_or(bin))
        }
        _ => ScaleStore::Embedded,
    })
}

#[cfg(feature = "devtools")]
async fn bench_scale(rollouts: Option<usize>, store: &str, burst_secs: u64, finished: bool, json: bool) -> anyhow::Result<ExitCode> {
    use sluice::devtools::bench_scale::{self, ScaleStore};
    init_logging("warn");
    let exe = std::env::current_exe().context("locating this executable")?;
    let store = scale_store(store)?;
    let defaults = match store {
        ScaleStore::Azurite(_) => vec![100, 1000, 2000],
        ScaleStore::Embedded => vec![100, 1000, 10_000],
    };
    let sizes = rollouts.map(|n| vec![n.max(2)]).unwrap_or(defaults);
    if finished {
        let rows = bench_scale::finished(&exe, &sizes, &store, |line| eprintln!("{line}")).await?;
        match json {
            true => println!("{}", serde_json::to_string_pretty(&rows)?),
            false => print!("{}", bench_scale::finished_text(&rows)),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let rows =
        bench_scale::scale(&exe, &sizes, &store, std::time::Duration::from_secs(burst_secs.max(1)), |line| eprintln!("{line}")).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", bench_scale::text(&rows));
    }
    Ok(ExitCode::SUCCESS)
}

async fn up(
    port: u16,
    data_dir: PathBuf,
    root: PathBuf,
    store: Option<String>,
    queue: Option<String>,
    signed_in: Option<String>,
) -> anyhow::Result<ExitCode> {
    init_logging("info,sluice=info");
    let data_dir_text = data_dir.display().to_string();
    let get = |k: &str| match k {
        "SLUICE_STORE" if store.is_some() => store.clone(),
        "SLUICE_QUEUE" if queue.is_some() => queue.clone(),
        "SLUICE_DATA_DIR" => Some(data_dir_text.clone()),
        other => std::env::var(other).ok(),
    };
    let app_config = match sluice::shell::config::from_env(&get, sluice::shell::config::Mode::Up) {
        Ok(c) => c,
        Err(problems) => {
            eprintln!("sluice up cannot start; fix these settings:");
            for p in problems {
                eprintln!("  {p}");
            }
            return Ok(ExitCode::from(2));
        }
    };
    if app_config.alert_token.is_none() {
        tracing::warn!("SLUICE_ALERT_TOKEN is not set: /api/alerts accepts any local caller");
    }
    let write_token = local_token_for(&data_dir)?;
    let _trim = sluice::host::memory::trim_periodically();
    let config = host::local::LocalConfig {
        root,
        data_dir: data_dir.clone(),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        alert_token: app_config.alert_token.clone(),
        api_key: app_config.api_key.as_ref().map(|k| k.0.clone()),
        require_principal: app_config.require_principal,
        issuers: app_config.issuers.clone(),
        public_url: app_config.public_url.clone(),
        signed_in: signed_in.clone(),
        write_token: Some(write_token),
    };
    let running = host::local::start_with(config, |_, url| async move { host::build_engine(&app_config, url).await }).await?;
    let names: Vec<&str> = running.functions.iter().map(|f| f.name.as_str()).collect();
    println!("Sluice is listening on {} (functions: {}; state in {})", running.url(), names.join(", "), data_dir.display());
    match &signed_in {
        Some(name) => println!("dashboard: {}/api/dashboard (its buttons act as {name})", running.url()),
        None => println!("dashboard: {}/api/dashboard (sign it in with --as NAME)", running.url()),
    }
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    println!("stopping");
    running.stop().await;
    Ok(ExitCode::SUCCESS)
}

/// The file in the data directory that holds `sluice up`'s write token.
const LOCAL_TOKEN_FILE: &str = "local-token";

/// `sluice up`'s write token: the one kept owner-only in its data directory,
/// where the CLI finds it, or a fresh one.
fn local_token_for(data_dir: &std::path::Path) -> anyhow::Result<String> {
    use std::io::Write as _;
    sluice::ports::env::create_private_dir(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let path = data_dir.join(LOCAL_TOKEN_FILE);
    // Kept across restarts, so a CLI or a dashboard open before one goes on working.
    if let Some(kept) = std::fs::read_to_string(&path).ok().map(|t| t.trim().to_string()).filter(|t| t.len() >= 32) {
        sluice::ports::env::make_private(&path).with_context(|| format!("securing {}", path.display()))?;
        return Ok(kept);
    }
    let token = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
    let _ = std::fs::remove_file(&path);
    let mut file = sluice::ports::env::open_private_append(&path).with_context(|| format!("writing {}", path.display()))?;
    file.write_all(token.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    Ok(token)
}

/// The write token for a local Sluice: `SLUICE_LOCAL_TOKEN`, else the file in
/// `SLUICE_DATA_DIR` (default `.sluice`) when the URL is this machine's.
fn local_token(url: &str) -> Option<String> {
    if let Some(token) = std::env::var("SLUICE_LOCAL_TOKEN").ok().filter(|t| !t.is_empty()) {
        return Some(token);
    }
    let host = reqwest::Url::parse(url).ok()?.host_str()?.to_string();
    if !matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]" | "::1") {
        return None;
    }
    let dir = std::env::var("SLUICE_DATA_DIR").unwrap_or_else(|_| ".sluice".into());
    std::fs::read_to_string(std::path::Path::new(&dir).join(LOCAL_TOKEN_FILE)).ok().map(|t| t.trim().to_string())
}

async fn serve() -> anyhow::Result<ExitCode> {
    init_logging("info");
    let config = match sluice::shell::config::from_env(&|k| std::env::var(k).ok(), sluice::shell::config::Mode::Serve) {
        Ok(c) => c,
        Err(problems) => {
            eprintln!("sluice serve cannot start; fix these app settings:");
            for p in problems {
                eprintln!("  {p}");
            }
            return Ok(ExitCode::from(2));
        }
    };
    let port = config.port.unwrap_or(0);
    let (settings, defs) = host::load_app_or_embedded(std::path::Path::new("."))?;
    let public_url = config.public_url.clone().unwrap_or_else(|| format!("http://127.0.0.1:{port}"));
    let consume = config.queue == sluice::shell::config::QueueKind::Embedded;
    // Bind first (the host waits 30 s for GET /), connect the store and queue after.
    let config = std::sync::Arc::new(config);
    let warm: host::custom_handler::WarmUp = Box::new(move || {
        let (config, public_url) = (config.clone(), public_url.clone());
        Box::pin(async move {
            let engine = host::build_engine(&config, public_url).await?;
            let tokens = sluice::functions::access::verifier(&config.issuers).map_err(sluice::host::HostError::Config)?;
            Ok(std::sync::Arc::new(sluice::functions::App {
                engine,
                alert_token: config.alert_token.clone(),
                require_principal: config.require_principal,
                tokens,
                api_key: config.api_key.as_ref().map(|k| k.0.clone()),
            }))
        })
    });
    let server = host::custom_handler::start_warming(warm, settings, defs, SocketAddr::from(([127, 0, 0, 1], port)), consume).await?;
    let _trim = sluice::host::memory::trim_periodically();
    tracing::info!(port = server.addr.port(), "sluice serve is listening; warming up");
    shutdown_signal().await;
    server.stop().await;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn package(out: &std::path::Path, binary: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let binary = match binary {
        Some(b) => b,
        None => {
            if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
                bail!("sluice package builds on Linux x86_64; elsewhere build the executable there and pass --binary");
            }
            // The shipped binary: no devtools, linked by zig against glibc 2.31
            // (scripts/zigcc) so it runs on every Functions Linux host.
            let linker = std::fs::canonicalize("scripts/zigcc").context("scripts/zigcc (run from the repository root)")?;
            // Cargo puts the executable at target/release/sluice, over the
            // build with the devtools (`sluice demo`): that one is kept aside
            // and put back, and the shipped one moves under `out`.
            let built = PathBuf::from("target/release/sluice");
            let kept = PathBuf::from("target/release/.sluice-kept-by-package");
            let had = std::fs::copy(&built, &kept).is_ok();
            let mut cmd = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            // Not incremental: reusing the test build's incremental objects
            // with another linker has left hidden symbols undefined.
            cmd.env("CARGO_INCREMENTAL", "0");
            cmd.args(["rustc", "--release", "--locked", "--no-default-features", "--bin", "sluice", "--", "-C"])
                .arg(format!("linker={}", linker.display()));
            let status = cmd.status().context("running cargo rustc");
            let shipped = out.join("sluice");
            let moved = match status {
                Ok(s) if s.success() => std::fs::create_dir_all(out)
                    .and_then(|()| std::fs::copy(&built, &shipped))
                    .with_context(|| format!("copying the executable to {}", shipped.display())),
                Ok(_) => Err(anyhow::anyhow!("cargo rustc failed")),
                Err(e) => Err(e),
            };
            if had {
                std::fs::rename(&kept, &built).context("putting target/release/sluice back")?;
            }
            moved?;
            shipped
        }
    };
    let pkg = sluice::cli::package::build(std::path::Path::new("."), &binary, out)?;
    println!("{} ({:.1} MiB): {}", pkg.path.display(), pkg.size as f64 / 1048576.0, pkg.entries.join(", "));
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "devtools")]
fn upstream(role: &str, text: &str) -> anyhow::Result<sluice::devtools::router::Upstream> {
    let Some((version, url)) = text.split_once('=') else { bail!("--{role}: expected VERSION=URL, got '{text}'") };
    if !url.starts_with("http://") && !url.starts_with("https://") {
        bail!("--{role}: '{url}' is not an http(s) URL");
    }
    Ok(sluice::devtools::router::Upstream { name: role.to_string(), version: version.to_string(), url: url.to_string() })
}

#[cfg(feature = "devtools")]
async fn router(listen: SocketAddr, admin: Option<SocketAddr>, stable: &str, canary: &str) -> anyhow::Result<ExitCode> {
    init_logging("info");
    let admin = admin.unwrap_or_else(|| {
        let port = if listen.port() == 0 { 0 } else { listen.port().checked_add(1000).unwrap_or(0) };
        SocketAddr::from(([127, 0, 0, 1], port))
    });
    let router = sluice::devtools::router::Router::new(upstream("stable", stable)?, upstream("canary", canary)?);
    let at = router.serve(listen, admin).await.with_context(|| format!("--listen {listen}, --admin {admin}"))?;
    println!("router: traffic at {}, admin API at {} (a spec's router url; metrics at /metrics)", at.traffic_url(), at.admin_url());
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "devtools")]
async fn load(url: &str, rps: u32) -> anyhow::Result<ExitCode> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("--url {url}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        anyhow::bail!("--url {url}: not an http(s) URL");
    }
    let load = sluice::devtools::load::Load::start(url, rps, 4);
    println!("sending {rps} requests a second to {} (Ctrl-C to stop)", safe::for_terminal(url));
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    let report = load.stop().await;
    let count = |m: &std::collections::BTreeMap<String, u64>| m.iter().map(|(v, n)| format!("{v} {n}")).collect::<Vec<_>>().join(", ");
    // The version names come from the upstreams' answers: outside text, defused for the terminal.
    let line = format!("{} requests; answered: {}; failed: {}", report.total(), count(&report.ok), count(&report.failed));
    println!("{}", safe::for_terminal(&line));
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "devtools")]
async fn sample_api(version: &str, listen: SocketAddr, errors_per_mille: u32, latency_ms: u64) -> anyhow::Result<ExitCode> {
    use std::sync::atomic::{AtomicU32, AtomicU64};
    init_logging("info");
    let fault = sluice::devtools::sample_app::Fault {
        errors_per_mille: AtomicU32::new(errors_per_mille),
        extra_latency_ms: AtomicU64::new(latency_ms),
    };
    let (at, _) = sluice::devtools::sample_app::serve(version, std::sync::Arc::new(fault), listen)
        .await
        .with_context(|| format!("--listen {listen}"))?;
    println!("sample API {} at http://{at}", safe::for_terminal(version));
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    Ok(ExitCode::SUCCESS)
}

/// A point in time from the command line: RFC 3339, or a duration ago (`90m`).
fn point_in_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let ago = spec::parse_duration_ms(text).map_err(|e| format!("'{text}' is neither an RFC 3339 time nor a duration ago: {e}"))?;
    let ago = chrono::TimeDelta::milliseconds(i64::try_from(ago).map_err(|_| format!("'{text}' is too long ago"))?);
    Ok(chrono::Utc::now() - ago)
}

async fn replay(
    file: &std::path::Path,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let (spec, plan) = spec::load(&text, Format::from_path(file), &sluice::ports::registry::names())
        .map_err(|p| anyhow::anyhow!("{}: {p}", file.display()))?;
    let env = sluice::ports::env::AdapterEnv::new(PathBuf::from(".sluice"), String::new());
    // Replay calls the providers with this machine's credentials: the same rules as a deployment's.
    let refused = sluice::ports::registry::refusals(&serde_json::to_value(&spec)?, &spec, &env);
    if !refused.is_empty() {
        anyhow::bail!("{}: {}", file.display(), spec::Problems::new(refused));
    }
    let report = sluice::shell::replay::replay(&plan, &spec.target, &env, from, to).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", sluice::shell::replay::text(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn validate(files: &[PathBuf], fill_env: Option<&str>) -> anyhow::Result<ExitCode> {
    let names = sluice::ports::registry::names();
    let mut ok = true;
    for file in files {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let parsed = spec::parse_document(&text, Format::from_path(file)).and_then(|mut doc| {
            if let Some(names) = fill_env {
                spec::placeholders::fill_only(&mut doc, &|name| std::env::var(name).ok(), &spec::placeholders::Names::parse(names))?;
            }
            Ok(doc)
        });
        let checked = parsed.map_err(|p| p.to_string()).and_then(|doc| {
            if sluice::domain::release::spec::is_release(&doc) {
                let (release, plans) = sluice::domain::release::spec::validate(&doc, &names).map_err(|p| p.to_string())?;
                let waves: Vec<String> = release
                    .waves
                    .iter()
                    .zip(&plans)
                    .map(|(w, p)| format!("{} [{}]: {}", w.name, w.targets.len(), p.first().map(|p| p.summary()).unwrap_or_default()))
                    .collect();
                Ok(format!("release {} {}: {}", release.name, release.version, waves.join(" ⇒ ")))
            } else {
                let (spec, plan) = spec::validate(&doc, &names).map_err(|p| p.to_string())?;
                let t = &spec.target;
                Ok(format!("{} {} → {} ({})", t.name, t.stable.version, t.canary.version, plan.summary()))
            }
        });
        match checked {
            Ok(line) => println!("{}: ok: {line}", file.display()),
            Err(problems) => {
                ok = false;
                let lines: Vec<&str> = problems.lines().collect();
                println!("{}: {} problem{}", file.display(), lines.len(), if lines.len() == 1 { "" } else { "s" });
                for p in lines {
                    println!("  {p}");
                }
            }
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
