//! `sluice package`: the zip the Functions host deploys — `host.json` and
//! every function folder at the root (the `functions/` folder flattened), and
//! the Linux x86_64 executable named as `host.json` says: stripped, mode 0755
//! in a Unix zip entry, and needing no glibc newer than the oldest base the
//! Functions Linux images still use.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use zip::write::SimpleFileOptions;

use crate::host::HostSettings;

/// Why packaging failed.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The zip could not be written.
    #[error("zip: {0}")]
    Zip(#[from] zip::result::ZipError),
    /// The app is not laid out as expected.
    #[error("{0}")]
    Layout(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PackageError + '_ {
    move |source| PackageError::Io { path: path.display().to_string(), source }
}

/// The newest glibc the executable may need: 2.31, Debian 11 (bullseye),
/// which Functions Linux images still use (azure-functions-dotnet-worker
/// PR #2653: "some of our images still use Debian 11", a `GLIBC_2.34` binary
/// failed there; azure-functions-python-worker #1651: "built on Bullseye with
/// GLIBC 2.31").
pub const MAX_GLIBC: (u32, u32) = (2, 31);
/// The largest executable the package takes.
pub const MAX_EXECUTABLE_BYTES: u64 = 20 * 1024 * 1024;

/// The newest `GLIBC_x.y` symbol version an ELF executable requires (its
/// version names sit in the dynamic string table).
pub fn required_glibc(elf: &[u8]) -> Option<(u32, u32)> {
    let mut newest = None;
    for window in elf.windows(6).enumerate().filter(|(_, w)| *w == b"GLIBC_") {
        let rest = &elf[window.0 + 6..];
        let text: String = rest.iter().take(12).take_while(|b| b.is_ascii_digit() || **b == b'.').map(|b| *b as char).collect();
        let mut parts = text.split('.').filter_map(|p| p.parse::<u32>().ok());
        if let (Some(major), Some(minor)) = (parts.next(), parts.next()) {
            newest = newest.max(Some((major, minor)));
        }
    }
    newest
}

/// The executable without symbols and debug information (`strip`, binutils).
fn stripped(binary: &Path) -> Result<Vec<u8>, PackageError> {
    let tmp = tempfile::tempdir().map_err(io(binary))?;
    let out = tmp.path().join("sluice");
    let status = std::process::Command::new("strip")
        .arg("--strip-all")
        .arg("-o")
        .arg(&out)
        .arg(binary)
        .status()
        .map_err(|e| PackageError::Layout(format!("cannot run strip (binutils): {e}")))?;
    if !status.success() {
        return Err(PackageError::Layout(format!("strip failed on {}", binary.display())));
    }
    std::fs::read(&out).map_err(io(&out))
}

/// What went into a package.
#[derive(Debug, Clone, PartialEq)]
pub struct Package {
    /// The zip file.
    pub path: PathBuf,
    /// Entry names, in order.
    pub entries: Vec<String>,
    /// Bytes.
    pub size: u64,
}

/// Writes `out_dir/sluice-functionapp.zip` from the app at `root` and the executable `binary`.
pub fn build(root: &Path, binary: &Path, out_dir: &Path) -> Result<Package, PackageError> {
    let host_json_path = root.join("host.json");
    let host_json = std::fs::read_to_string(&host_json_path).map_err(io(&host_json_path))?;
    let settings = HostSettings::parse(&host_json).map_err(|e| PackageError::Layout(e.to_string()))?;
    let exe_name = settings.executable.trim_start_matches("./").to_string();
    if exe_name.is_empty() || exe_name.contains('/') {
        return Err(PackageError::Layout(format!(
            "host.json: defaultExecutablePath '{}' must be a file name at the app root",
            settings.executable
        )));
    }
    let functions_dir = root.join("functions");
    let mut functions: Vec<PathBuf> = std::fs::read_dir(&functions_dir)
        .map_err(io(&functions_dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("function.json").is_file())
        .collect();
    functions.sort();
    if functions.is_empty() {
        return Err(PackageError::Layout(format!("{}: no function folders", functions_dir.display())));
    }
    std::fs::create_dir_all(out_dir).map_err(io(out_dir))?;
    let path = out_dir.join("sluice-functionapp.zip");
    let file = File::create(&path).map_err(io(&path))?;
    let mut zip = zip::ZipWriter::new(file);
    let text = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated).unix_permissions(0o644);
    let exe = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated).unix_permissions(0o755);
    let mut entries = Vec::new();
    zip.start_file("host.json", text)?;
    zip.write_all(host_json.as_bytes()).map_err(io(&host_json_path))?;
    entries.push("host.json".to_string());
    for dir in &functions {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let fj = dir.join("function.json");
        let content = std::fs::read(&fj).map_err(io(&fj))?;
        let entry = format!("{name}/function.json");
        zip.start_file(entry.as_str(), text)?;
        zip.write_all(&content).map_err(io(&fj))?;
        entries.push(entry);
    }
    let mut head = Vec::new();
    File::open(binary).map_err(io(binary))?.take(64).read_to_end(&mut head).map_err(io(binary))?;
    // ELF, 64-bit, little-endian, machine x86-64: what Linux Functions plans run.
    if head.get(..4) != Some(b"\x7fELF") || head.get(4) != Some(&2) || head.get(18..20) != Some(&[0x3e, 0x00]) {
        return Err(PackageError::Layout(format!("{} is not a Linux x86_64 executable", binary.display())));
    }
    let bytes = stripped(binary)?;
    if let Some((major, minor)) = required_glibc(&bytes).filter(|v| *v > MAX_GLIBC) {
        return Err(PackageError::Layout(format!(
            "{} needs GLIBC_{major}.{minor}, newer than the {}.{} of the oldest Functions Linux image; build it with `sluice package` (zig, scripts/zigcc)",
            binary.display(),
            MAX_GLIBC.0,
            MAX_GLIBC.1
        )));
    }
    if bytes.len() as u64 > MAX_EXECUTABLE_BYTES {
        return Err(PackageError::Layout(format!(
            "the executable is {} bytes stripped; the package allows {MAX_EXECUTABLE_BYTES}",
            bytes.len()
        )));
    }
    zip.start_file(exe_name.as_str(), exe)?;
    zip.write_all(&bytes).map_err(io(binary))?;
    entries.push(exe_name);
    zip.finish()?;
    let size = std::fs::metadata(&path).map_err(io(&path))?.len();
    Ok(Package { path, entries, size })
}
