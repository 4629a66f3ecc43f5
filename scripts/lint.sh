#!/usr/bin/env bash
# make lint: clang-format check on every tracked C file, then cppcheck over
# the sources with the build's compile database.
set -euo pipefail
build=${1:-build}
files=$(git ls-files '*.c' '*.h')
bad=0
for f in $files; do
  if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
    echo "lint: clang-format would change $f"
    bad=1
  fi
done
[ "$bad" -eq 0 ] || { echo "lint: run 'make format'"; exit 1; }
echo "lint: clang-format clean ($(echo "$files" | wc -w) files)"
cppcheck --quiet --error-exitcode=1 --enable=warning,portability,performance \
  --inline-suppr --suppress=missingIncludeSystem --std=c11 \
  --project="$build/compile_commands.json" -i "$build" -i build-san \
  --suppress='*:/usr/include/*'
echo "lint: cppcheck clean"
