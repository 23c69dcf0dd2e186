//! The `sluice` command line: validate specs now; hosts and client verbs
//! join as their layers land.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use sluice::spec::{self, Format};

#[derive(Parser)]
#[command(name = "sluice", version, about = "Progressive delivery for Azure: phased rollouts with analysis, approvals and automatic rollback")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check rollout specs: every problem with its path, or a one-line plan.
    Validate {
        /// Spec files (JSON, or YAML by extension).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the JSON Schema of the rollout spec.
    Schema,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::Validate { files } => validate(&files),
        Cmd::Schema => {
            println!("{}", serde_json::to_string_pretty(&spec::json_schema())?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn validate(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let names = sluice::providers::names();
    let mut ok = true;
    for file in files {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        match spec::load(&text, Format::from_path(file), &names) {
            Ok((spec, plan)) => println!(
                "{}: ok: {} {} → {} ({})",
                file.display(),
                spec.target.name,
                spec.target.stable.version,
                spec.target.canary.version,
                plan.summary()
            ),
            Err(problems) => {
                ok = false;
                println!("{}: {} problem{}", file.display(), problems.len(), if problems.len() == 1 { "" } else { "s" });
                for p in problems.iter() {
                    println!("  {p}");
                }
            }
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
