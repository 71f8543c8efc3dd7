#!/usr/bin/env bash
# Fetch exactly one commit of a git repository into a folder, without its history.
#
#   scripts/fetch_commit.sh URL COMMIT DIR
#
# The worker we replace cloned ComfyUI and its node packs at whatever their HEAD was, so every
# rebuild could pick up an upstream regression. COMMIT is a commit sha: 40 hex characters
# (fetched alone), or an abbreviated sha of at least 7 (resolved from the history, and the full
# sha printed so it can be pinned). A branch or tag name is refused: those move.
set -euo pipefail

if (($# != 3)); then
    echo "usage: $0 URL COMMIT DIR" >&2
    exit 2
fi
url="$1" commit="$2" dir="$3"
if ! [[ "$commit" =~ ^[0-9a-f]{7,40}$ ]]; then
    echo "fetch_commit: '$commit' is not a commit sha; pin $url to a commit, not a branch or tag" >&2
    exit 2
fi

mkdir -p "$dir"
git -C "$dir" init --quiet
if ((${#commit} == 40)); then
    git -C "$dir" fetch --quiet --depth 1 "$url" "$commit"
    git -C "$dir" -c advice.detachedHead=false checkout --quiet --detach FETCH_HEAD
else
    # A server only hands out full shas: take the history without file contents, then resolve.
    git -C "$dir" fetch --quiet --filter=blob:none "$url" '+refs/heads/*:refs/remotes/origin/*'
    git -C "$dir" -c advice.detachedHead=false checkout --quiet --detach "$commit"
fi
actual="$(git -C "$dir" rev-parse HEAD)"
if [[ "$actual" != "$commit"* ]]; then
    echo "fetch_commit: $url gave $actual instead of $commit" >&2
    exit 1
fi
echo "fetch_commit: $url at $actual"
# The history is not needed at run time; the commit stays on record in the image.
rm -rf "${dir:?}/.git"
printf '%s %s\n' "$url" "$actual" >"$dir/.pinned-commit"
