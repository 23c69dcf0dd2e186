# Installs the sluice CLI on Windows from a release of Sluice: downloads the
# x86_64 Windows archive, checks it against the release's SHA256SUMS and
# puts sluice.exe in place in one move (a refused download leaves nothing
# behind and an installed sluice untouched).
#
#   irm https://github.com/OWNER/REPO/releases/download/vX.Y.Z/install.ps1 | iex
#
# The release workflow writes its repository and version into the copy it
# publishes. Settings (environment variables, optional there):
#   SLUICE_VERSION, SLUICE_INSTALL_DIR (default %LOCALAPPDATA%\sluice\bin),
#   SLUICE_RELEASE_URL (default https://github.com/OWNER/REPO/releases/download).
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version Latest

$repository = '__SLUICE_REPOSITORY__'
$version = if ($env:SLUICE_VERSION) { $env:SLUICE_VERSION } else { '__SLUICE_VERSION__' }
$version = $version.TrimStart('v')
if ($version.StartsWith('__SLUICE_')) { throw 'install.ps1: no version: set SLUICE_VERSION (this copy was not published by a release)' }
$base = if ($env:SLUICE_RELEASE_URL) { $env:SLUICE_RELEASE_URL } else { "https://github.com/$repository/releases/download" }
if ($base.Contains('__SLUICE_')) { throw 'install.ps1: no release location: set SLUICE_RELEASE_URL' }
$installDir = if ($env:SLUICE_INSTALL_DIR) { $env:SLUICE_INSTALL_DIR } else { Join-Path $env:LOCALAPPDATA 'sluice\bin' }

$arch = [System.Runtime.InteropServices.RuntimeInformation]::OSArchitecture
if ($arch -ne [System.Runtime.InteropServices.Architecture]::X64) {
    throw "install.ps1: no Windows release is built for $arch; build from source: cargo install --locked --path ."
}
$archive = "sluice-$version-x86_64-pc-windows-msvc.zip"
$tmp = Join-Path ([System.IO.Path]::GetTempPath()) ("sluice-install-" + [guid]::NewGuid())
New-Item -ItemType Directory -Path $tmp | Out-Null
$staged = $null
try {
    Write-Host "install.ps1: sluice $version for x86_64 Windows from $base/v$version"
    Invoke-WebRequest -UseBasicParsing -Uri "$base/v$version/$archive" -OutFile (Join-Path $tmp $archive)
    Invoke-WebRequest -UseBasicParsing -Uri "$base/v$version/SHA256SUMS" -OutFile (Join-Path $tmp 'SHA256SUMS')
    $expected = $null
    foreach ($line in Get-Content (Join-Path $tmp 'SHA256SUMS')) {
        $fields = $line -split '\s+', 2
        if ($fields.Count -eq 2 -and $fields[1].TrimStart('*') -eq $archive) { $expected = $fields[0].ToLowerInvariant() }
    }
    if (-not $expected) { throw "install.ps1: SHA256SUMS lists no $archive; nothing installed" }
    $actual = (Get-FileHash -Algorithm SHA256 (Join-Path $tmp $archive)).Hash.ToLowerInvariant()
    if ($actual -ne $expected) {
        throw "install.ps1: $archive does not match SHA256SUMS (expected $expected, got $actual); nothing installed"
    }
    Expand-Archive -Path (Join-Path $tmp $archive) -DestinationPath (Join-Path $tmp 'x')
    $exe = Join-Path $tmp 'x\sluice.exe'
    if (-not (Test-Path $exe)) { throw "install.ps1: $archive holds no sluice.exe; nothing installed" }
    New-Item -ItemType Directory -Force -Path $installDir | Out-Null
    $staged = Join-Path $installDir ".sluice-install-$PID.exe"
    Copy-Item $exe $staged
    Move-Item -Force $staged (Join-Path $installDir 'sluice.exe')
    $staged = $null
    Write-Host "install.ps1: installed $(& (Join-Path $installDir 'sluice.exe') --version) at $installDir\sluice.exe"
    if (-not (($env:PATH -split ';') -contains $installDir)) {
        Write-Host "install.ps1: $installDir is not on PATH; add it in Settings, or for this session: `$env:PATH = `"$installDir;`$env:PATH`""
    }
} finally {
    Remove-Item -Recurse -Force $tmp -ErrorAction SilentlyContinue
    if ($staged) { Remove-Item -Force $staged -ErrorAction SilentlyContinue }
}
