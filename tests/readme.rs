//! The README's examples, run against the built binary.
//!
//! - Terminal blocks (```` ```console ````, `$ sluice …` and what it prints)
//!   run through `trycmd`, with their output (`[..]` and `...` elide) and
//!   exit code (`? 1`).
//! - Every other command block carries `<!-- not run here: why -->`; a
//!   test named there (`tests/FILE.rs::NAME`) must exist.
//! - The local quick start, five long-running lines, runs as written here.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).expect("README.md")
}

#[test]
fn the_readme_terminal_examples_run_as_written() {
    let demo_dir = tempfile::tempdir().expect("tempdir");
    let data_dir = tempfile::tempdir().expect("tempdir");
    trycmd::TestCases::new()
        .register_bin("sluice", PathBuf::from(env!("CARGO_BIN_EXE_sluice")))
        .env("SLUICE_DEMO_DIR", demo_dir.path().display().to_string())
        .env("SLUICE_DATA_DIR", data_dir.path().display().to_string())
        .timeout(Duration::from_secs(120))
        .case("README.md");
}

/// A fenced block of the README: where it starts, its info string, its
/// lines, and the HTML comment right above it, if any.
struct Block {
    line: usize,
    info: String,
    body: Vec<String>,
    note: Option<String>,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut found = Vec::new();
    let mut lines = text.lines().enumerate().peekable();
    let mut previous = "";
    while let Some((n, line)) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            if !line.trim().is_empty() {
                previous = line;
            }
            continue;
        };
        let note = previous.trim().strip_prefix("<!--").and_then(|c| c.strip_suffix("-->")).map(|c| c.trim().to_string());
        let mut body = Vec::new();
        for (_, inner) in lines.by_ref() {
            if inner.starts_with("```") {
                break;
            }
            body.push(inner.to_string());
        }
        found.push(Block { line: n + 1, info: info.trim().to_string(), body, note });
        previous = "";
    }
    found
}

const SHELLS: [&str; 5] = ["sh", "bash", "shell", "console", "powershell"];

/// A command block either runs here (`console`) or says why not; a
/// `$ ` line outside a `console` block would look run and is not.
#[test]
fn every_command_block_in_the_readme_runs_or_says_why_not() {
    let text = readme();
    let all = blocks(&text);
    let mut problems = Vec::new();
    let mut not_run = Vec::new();
    let mut run = 0;
    for block in &all {
        let commands = SHELLS.contains(&block.info.as_str()) || block.body.iter().any(|l| l.starts_with("$ "));
        if !commands {
            continue;
        }
        if block.info == "console" {
            run += 1;
            if !block.body.first().is_some_and(|l| l.starts_with("$ sluice ")) {
                problems.push(format!("README.md:{}: a console block starts with `$ sluice …`", block.line));
            }
            continue;
        }
        let Some(why) = block.note.as_deref().and_then(|n| n.strip_prefix("not run here:")) else {
            problems.push(format!(
                "README.md:{}: a `{}` block that is not run says why just above it (`<!-- not run here: … -->`), or becomes a ```console block",
                block.line, block.info
            ));
            continue;
        };
        for named in tests_named(why) {
            if let Err(problem) = test_exists(&named) {
                problems.push(format!("README.md:{}: {problem}", block.line));
            }
        }
        not_run.push(format!("README.md:{} ({}): not run here:{why}", block.line, block.info));
    }
    // Printed, so a skipped block is never silent (`--nocapture` shows it on success too).
    println!("{run} README blocks run by trycmd; not run here, by name:\n{}", not_run.join("\n"));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(run >= 4, "the terminal examples are gone: {run} console blocks");
}

/// `tests/FILE.rs::NAME` references in a reason.
fn tests_named(why: &str) -> Vec<String> {
    why.split(|c: char| c.is_whitespace() || c == ',' || c == ';' || c == '(' || c == ')')
        .filter(|w| w.starts_with("tests/") && w.contains(".rs::"))
        .map(str::to_string)
        .collect()
}

fn test_exists(named: &str) -> Result<(), String> {
    let (file, name) = named.split_once("::").ok_or_else(|| format!("{named}: not FILE::NAME"))?;
    let source = std::fs::read_to_string(root().join(file)).map_err(|e| format!("{named}: {file}: {e}"))?;
    if source.contains(&format!("fn {name}(")) {
        Ok(())
    } else {
        Err(format!("{named}: {file} has no fn {name}"))
    }
}

#[test]
fn the_block_check_sees_a_silent_block_and_a_missing_test() {
    let text = "intro\n\n```sh\nsluice up\n```\n\n<!-- not run here: see tests/readme.rs::no_such_test -->\n```bash\nazd up\n```\n";
    let found = blocks(text);
    assert_eq!(found.len(), 2);
    assert_eq!((found[0].line, found[0].note.as_deref()), (3, None));
    let why = found[1].note.as_deref().and_then(|n| n.strip_prefix("not run here:")).expect("a reason");
    let named = tests_named(why);
    assert_eq!(named, ["tests/readme.rs::no_such_test"]);
    assert!(test_exists(&named[0]).is_err());
    assert!(test_exists("tests/readme.rs::the_block_check_sees_a_silent_block_and_a_missing_test").is_ok());
}

/// Children killed when the test ends, however it ends.
struct Processes(Vec<(String, Child)>);

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One line of the quick start: `cargo run --release -- ARGS  # comment`.
fn quick_start_args(line: &str) -> Vec<String> {
    let command = line.split(" #").next().unwrap_or(line).trim();
    let args = command.strip_prefix("cargo run --release -- ").unwrap_or_else(|| panic!("not a `cargo run --release --` line: {line}"));
    assert!(!args.contains(['"', '\'', '$', '\\', '|', '>', '&']), "the quick start is plain words; this test splits on spaces: {line}");
    args.split_whitespace().map(str::to_string).collect()
}

fn quick_start() -> Vec<Vec<String>> {
    let text = readme();
    let block = blocks(&text)
        .into_iter()
        .find(|b| b.note.as_deref().is_some_and(|n| n.contains("the_local_quick_start_runs_as_written")))
        .expect("the quick start block names this test");
    block.body.iter().filter(|l| !l.trim().is_empty()).map(|l| quick_start_args(l)).collect()
}

/// Where a long-running line listens: `--listen`, the router's admin
/// (`--listen` + 1000 by default), `up`'s port (7071 by default).
fn listens_on(args: &[String]) -> Vec<SocketAddr> {
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1));
    let mut addrs = Vec::new();
    if let Some(listen) = value("--listen") {
        let addr: SocketAddr = listen.parse().expect("--listen is an address");
        addrs.push(addr);
        if args[0] == "router" && value("--admin").is_none() {
            addrs.push(SocketAddr::new(addr.ip(), addr.port() + 1000));
        }
    }
    if args[0] == "up" {
        let port = value("--port").map_or(7071, |p| p.parse().expect("--port"));
        addrs.push(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    addrs
}

fn sluice(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.current_dir(root())
        .env("SLUICE_DATA_DIR", dir)
        .env("LOGNAME", "reader")
        .env_remove("USER")
        .env_remove("SLUICE_USER")
        .env_remove("SLUICE_URL")
        .env_remove("SLUICE_LOCAL_TOKEN");
    cmd
}

fn wait_listening(addr: SocketAddr, what: &str, processes: &mut Processes) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        for (name, child) in &mut processes.0 {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("`{name}` exited ({status}) before {what} listened on {addr}");
            }
        }
        assert!(Instant::now() < deadline, "{what} does not listen on {addr} after 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The local quick start, as the README writes it and on its ports: the
/// rollout passes its analysis on the README's load, waits at its gate,
/// the approve line `watch` prints works (with a name for NAME), and a
/// full promotion with no gate left ends it: `watch` exits 0.
#[test]
fn the_local_quick_start_runs_as_written() {
    let lines = quick_start();
    let (watch, long_running) = lines.split_last().expect("lines");
    assert_eq!(watch[..1], ["start".to_string()], "the quick start ends with `start … --watch`");
    assert!(watch.contains(&"--watch".to_string()));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut processes = Processes(Vec::new());
    for args in long_running {
        let log = std::fs::File::create(dir.path().join(format!("{}.log", processes.0.len()))).expect("log");
        let child = sluice(dir.path())
            .args(args)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("sluice {}: {e}", args.join(" ")));
        processes.0.push((args.join(" "), child));
        for addr in listens_on(args) {
            wait_listening(addr, &args.join(" "), &mut processes);
        }
    }
    let mut watching = sluice(dir.path()).args(watch).stdout(Stdio::piped()).spawn().expect("sluice start --watch");
    let stdout = watching.stdout.take().expect("stdout");
    let (sent, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sent.send(line).is_err() {
                break;
            }
        }
    });
    let mut transcript = Vec::new();
    let next_line = |within: Duration, transcript: &mut Vec<String>| match seen.recv_timeout(within) {
        Ok(line) => {
            transcript.push(line.clone());
            Some(line)
        }
        Err(_) => None,
    };
    // The analysis takes three 30 s measurements; the first waits an interval.
    let deadline = Instant::now() + Duration::from_secs(240);
    let hint = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = next_line(left, &mut transcript)
            .unwrap_or_else(|| panic!("no approval gate within 240 s; watch printed:\n{}", transcript.join("\n")));
        assert!(
            !line.contains("RollingBack") && !line.contains("Paused"),
            "the quick start did not pass its analysis:\n{}",
            transcript.join("\n")
        );
        if line.contains("waiting for approval") {
            break line;
        }
    };
    let printed: Vec<String> = hint.split('`').nth(1).expect("a command in backticks").split_whitespace().map(str::to_string).collect();
    assert_eq!(printed[..2], ["sluice".to_string(), "approve".to_string()], "{hint}");
    assert_eq!(printed[printed.len() - 2..], ["--as".to_string(), "NAME".to_string()], "{hint}");
    let id = printed[2].clone();
    let mut approve = printed[1..].to_vec();
    *approve.last_mut().expect("NAME") = "reviewer".into();
    let approved = sluice(dir.path()).args(&approve).output().expect("sluice approve");
    assert!(approved.status.success(), "{}", String::from_utf8_lossy(&approved.stderr));
    // After the gate: 50 %, a 5 minute pause. `promote --full` has no gate left, so it promotes.
    let promoted = sluice(dir.path()).args(["promote", &id, "--full", "--as", "reviewer"]).output().expect("sluice promote");
    assert!(promoted.status.success(), "{}", String::from_utf8_lossy(&promoted.stderr));
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = watching.try_wait().expect("watch") {
            break status;
        }
        assert!(Instant::now() < deadline, "watch did not end after the promotion:\n{}", transcript.join("\n"));
        while next_line(Duration::from_millis(100), &mut transcript).is_some() {}
    };
    while next_line(Duration::from_millis(100), &mut transcript).is_some() {}
    assert_eq!(status.code(), Some(0), "watch ends on Succeeded:\n{}", transcript.join("\n"));
    assert!(transcript.iter().any(|l| l.contains("Succeeded")), "{}", transcript.join("\n"));
}
