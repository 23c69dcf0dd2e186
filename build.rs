//! Stamps the commit Sluice is built from into `sluice --version`:
//! `SLUICE_COMMIT` (or `GITHUB_SHA`, as a release workflow has it), else
//! `git rev-parse`, else "unknown" (a source archive without Git).

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SLUICE_COMMIT");
    println!("cargo:rerun-if-env-changed=GITHUB_SHA");
    let from_git = || {
        let out = Command::new("git").args(["rev-parse", "HEAD"]).output().ok().filter(|o| o.status.success())?;
        let head = String::from_utf8(out.stdout).ok()?;
        // Rebuild when HEAD moves: HEAD itself, the refs (a folder: cargo
        // looks inside), the packed refs. Only what exists: a missing path
        // would rerun every build.
        for watched in [".git/HEAD", ".git/refs", ".git/packed-refs"] {
            if std::path::Path::new(watched).exists() {
                println!("cargo:rerun-if-changed={watched}");
            }
        }
        Some(head.trim().to_string())
    };
    let commit = std::env::var("SLUICE_COMMIT").ok().or_else(|| std::env::var("GITHUB_SHA").ok()).or_else(from_git);
    let commit: String = commit.unwrap_or_else(|| "unknown".into()).chars().filter(char::is_ascii_hexdigit).take(12).collect();
    let commit = if commit.is_empty() { "unknown".to_string() } else { commit };
    println!("cargo:rustc-env=SLUICE_COMMIT={commit}");
}
