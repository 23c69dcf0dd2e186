#!/bin/sh
# Installs the sluice CLI from a release of Sluice: picks the archive built
# for this machine, checks it against the release's SHA256SUMS and puts
# `sluice` in place in one move, so a failed or refused download leaves
# nothing behind and an installed sluice untouched.
#
#   curl -fsSL https://github.com/OWNER/REPO/releases/download/vX.Y.Z/install.sh | sh
#
# The release workflow (.github/workflows/release.yml) writes its repository
# and version into the copy it publishes. Settings (all optional there):
#   SLUICE_VERSION       another version (X.Y.Z)
#   SLUICE_INSTALL_DIR   where sluice goes (default ~/.local/bin)
#   SLUICE_RELEASE_URL   the releases' download base (default
#                        https://github.com/OWNER/REPO/releases/download);
#                        a release is SLUICE_RELEASE_URL/vX.Y.Z/<file>
#   SLUICE_DOWNLOAD_SECONDS  how long one download may take (default 300; a
#                        server that hangs or sends more than 200 MiB fails it)
set -eu

repository="__SLUICE_REPOSITORY__"
version="${SLUICE_VERSION:-__SLUICE_VERSION__}"
version="${version#v}"
install_dir="${SLUICE_INSTALL_DIR:-${HOME:?HOME is not set}/.local/bin}"

fail() {
  echo "install.sh: $*" >&2
  exit 1
}

case "$version" in
  __SLUICE_*) fail "no version: set SLUICE_VERSION (this copy was not published by a release)" ;;
esac
case "${SLUICE_RELEASE_URL:-}$repository" in
  __SLUICE_*) fail "no release location: set SLUICE_RELEASE_URL (this copy was not published by a release)" ;;
esac
base="${SLUICE_RELEASE_URL:-https://github.com/$repository/releases/download}"

os=$(uname -s)
arch=$(uname -m)
case "$os" in
  Linux) os=unknown-linux-gnu ;;
  Darwin) os=apple-darwin ;;
  *) fail "no release is built for $os (on Windows, use install.ps1); build from source: cargo install --locked --path ." ;;
esac
case "$arch" in
  x86_64 | amd64) arch=x86_64 ;;
  aarch64 | arm64) arch=aarch64 ;;
  *) fail "no release is built for $arch; build from source: cargo install --locked --path ." ;;
esac
archive="sluice-$version-$arch-$os.tar.gz"

tmp=$(mktemp -d)
staged="$install_dir/.sluice-install.$$"
trap 'rm -rf "$tmp"; rm -f "$staged"' EXIT
trap 'exit 1' INT TERM

fetch() {
  # Redirects (GitHub's to its download host) only over HTTPS.
  if command -v curl >/dev/null 2>&1; then
    curl --fail --silent --show-error --location --proto-redir =https --connect-timeout 20 --max-time "${SLUICE_DOWNLOAD_SECONDS:-300}" --max-filesize 209715200 --output "$2" "$1"
  elif command -v wget >/dev/null 2>&1; then
    wget --quiet --timeout=20 --tries=1 --output-document "$2" "$1"
  else
    fail "neither curl nor wget is installed"
  fi || fail "could not download $1"
}

sha256() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | cut -d ' ' -f 1
  elif command -v shasum >/dev/null 2>&1; then
    shasum -a 256 "$1" | cut -d ' ' -f 1
  else
    fail "neither sha256sum nor shasum is installed to check the download"
  fi
}

echo "install.sh: sluice $version for $arch-$os from $base/v$version"
fetch "$base/v$version/$archive" "$tmp/$archive"
fetch "$base/v$version/SHA256SUMS" "$tmp/SHA256SUMS"
expected=$(awk -v f="$archive" '$2 == f || $2 == "*" f { print $1 }' "$tmp/SHA256SUMS")
[ -n "$expected" ] || fail "SHA256SUMS lists no $archive; nothing installed"
actual=$(sha256 "$tmp/$archive")
[ "$expected" = "$actual" ] || fail "$archive does not match SHA256SUMS (expected $expected, got $actual); nothing installed"

mkdir "$tmp/x"
tar -xzf "$tmp/$archive" -C "$tmp/x" || fail "$archive is not a readable archive; nothing installed"
[ -f "$tmp/x/sluice" ] || fail "$archive holds no sluice executable; nothing installed"
mkdir -p "$install_dir"
cp "$tmp/x/sluice" "$staged"
chmod 755 "$staged"
mv -f "$staged" "$install_dir/sluice"
echo "install.sh: installed $("$install_dir/sluice" --version) at $install_dir/sluice"
case ":$PATH:" in
  *":$install_dir:"*) ;;
  *) echo "install.sh: $install_dir is not on PATH; add it: export PATH=\"$install_dir:\$PATH\"" ;;
esac
