#!/bin/sh
# The before/after table of instructions per call (docs/performance.md), regenerated in one command:
#
#   benchmarks/compare.sh [BEFORE] [AFTER]
#
# BEFORE and AFTER are each a commit of this repository or a directory holding an azureml_chat package.
# Defaults: BEFORE = 13a37b0 (the code before the pipeline rebuild), AFTER = this working tree as it is.
# A commit is exported with `git archive` into a temporary directory (no git state changes: no checkout,
# no worktree) and deleted at the end. Counts, with the same JSON codec on both sides of every ratio:
# the network loop (c=64, chat completions and /score), the in-process loop, and per chunk of a stream,
# each with orjson and with orjson blocked (--core). About 25 minutes on a 2-core machine; needs valgrind.
# The table is printed and written to benchmarks/results/compare.md (the counts to compare.json).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
before=${1:-13a37b0}
after=${2:-$repo}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

package() {  # package SIDE COMMIT-OR-DIR: print the directory holding azureml_chat
    if [ -d "$2/azureml_chat" ]; then
        (cd "$2" && pwd)
    else
        sha=$(git -C "$repo" rev-parse --short "$2^{commit}")
        mkdir -p "$tmp/$1"
        git -C "$repo" archive "$sha" azureml_chat | tar -x -C "$tmp/$1"
        echo "$sha" > "$tmp/$1/.bench-commit"
        echo "$tmp/$1"
    fi
}

before_dir=$(package before "$before")
after_dir=$(package after "$after")
mkdir -p "$here/results"
python3 "$here/instructions.py" --sdk-path "$after_dir" --compare "$before_dir" --out "$here/results/compare.md"
