#!/usr/bin/env bash
# The main job of `make run` (grows with the project).
set -euo pipefail
B=${1:-build}
"$B/tq" types
"$B/tq" distortion --dim 128 --n 20000
