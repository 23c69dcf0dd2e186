//! `sluice package`: the zip the Functions host deploys — `host.json` and
//! every function folder at the root (the `functions/` folder flattened), and
//! the Linux x86_64 executable named as `host.json` says.

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
    let mut bytes = Vec::new();
    File::open(binary).map_err(io(binary))?.read_to_end(&mut bytes).map_err(io(binary))?;
    // ELF, 64-bit, little-endian, machine x86-64: what Linux Functions plans run.
    if bytes.get(..4) != Some(b"\x7fELF") || bytes.get(4) != Some(&2) || bytes.get(18..20) != Some(&[0x3e, 0x00]) {
        return Err(PackageError::Layout(format!("{} is not a Linux x86_64 executable", binary.display())));
    }
    zip.start_file(exe_name.as_str(), exe)?;
    zip.write_all(&bytes).map_err(io(binary))?;
    entries.push(exe_name);
    zip.finish()?;
    let size = std::fs::metadata(&path).map_err(io(&path))?.len();
    Ok(Package { path, entries, size })
}
