#!/usr/bin/env bash
# The action's install step: the sluice CLI from a release of Sluice,
# checked against the release's SHA256SUMS, never compiled.
#
#   which            prints version= and url= (the release to install) for
#                    $GITHUB_OUTPUT
#   install DIR      installs that release's sluice into DIR (unless it is
#                    there already, from the cache) and puts DIR on PATH
#
# Used from the Sluice repository (`uses: OWNER/sluice/examples/pipelines/
# github/actions/sluice@vX.Y.Z`) the action knows both from where the runner
# checked it out: $GITHUB_ACTION_PATH is …/_actions/OWNER/REPO/REF/….
# A copy kept in your own repository is told: SLUICE_VERSION and
# SLUICE_RELEASE_URL (the inputs sluice-version and release-url).
set -euo pipefail

version="${SLUICE_VERSION:-}"
url="${SLUICE_RELEASE_URL:-}"
if [[ "${GITHUB_ACTION_PATH:-}" =~ /_actions/([^/]+)/([^/]+)/([^/]+)/ ]]; then
  url="${url:-https://github.com/${BASH_REMATCH[1]}/${BASH_REMATCH[2]}/releases/download}"
  version="${version:-${BASH_REMATCH[3]}}"
fi
version="${version#v}"
if [[ ! "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+ ]] || [ -z "$url" ]; then
  echo "::error::which sluice to install is unknown (version '$version', releases '$url'): use the action as OWNER/sluice/examples/pipelines/github/actions/sluice@vX.Y.Z, or set its inputs sluice-version and release-url"
  exit 1
fi

case "${1:-}" in
  which)
    echo "version=$version"
    echo "url=$url"
    ;;
  install)
    dir="${2:?install DIR}"
    if [ ! -x "$dir/sluice" ]; then
      tmp=$(mktemp -d)
      trap 'rm -rf "$tmp"' EXIT
      for file in install.sh SHA256SUMS; do
        curl --fail --silent --show-error --location --proto-redir =https --connect-timeout 20 --max-time "${SLUICE_DOWNLOAD_SECONDS:-300}" --max-filesize 209715200 --output "$tmp/$file" "$url/v$version/$file"
      done
      expected=$(awk '$2 == "install.sh" || $2 == "*install.sh" { print $1 }' "$tmp/SHA256SUMS")
      actual=$(sha256sum "$tmp/install.sh" | cut -d ' ' -f 1)
      if [ -z "$expected" ] || [ "$expected" != "$actual" ]; then
        echo "::error::install.sh of v$version does not match the release's SHA256SUMS"
        exit 1
      fi
      SLUICE_VERSION="$version" SLUICE_RELEASE_URL="$url" SLUICE_INSTALL_DIR="$dir" sh "$tmp/install.sh"
    fi
    echo "$dir" >> "$GITHUB_PATH"
    ;;
  *)
    echo "usage: install-cli.sh which | install DIR" >&2
    exit 2
    ;;
esac
