#!/usr/bin/env bash
# test_install.sh — the installed program and its package:
#   - `cmake --install BUILD --prefix P` puts P/bin/shardline (which runs: --version), the
#     manual page P/share/man/man1/shardline.1 (rendered by `man -l` and checked by groff with
#     all warnings on: none) and the Slurm template under P/share/shardline/slurm/;
#   - every option that `shardline run --help` lists appears in the rendered manual page, and
#     so does every command of `shardline --help`;
#   - `cpack -G DEB` in the build folder makes a .deb whose `dpkg-deb -c` lists the binary and
#     the manual page.
# Run: ctest -R test_install (needs SL_BINARY_DIR, the configured build folder).
set -uo pipefail

B=${SL_BINARY_DIR:?SL_BINARY_DIR: the build folder}
tmp=$(mktemp -d /tmp/sl-test_install-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0
check() { # check NAME COMMAND...: passes when COMMAND succeeds
  local name=$1
  shift
  if "$@"; then
    echo "ok: $name"
    passed=$((passed + 1))
  else
    echo "FAILED: $name"
    failed=$((failed + 1))
  fi
}
for tool in man groff cpack dpkg-deb; do
  if ! command -v "$tool" >/dev/null; then
    echo "skipped: $tool is not installed (scripts/install-deps.sh installs it)"
    exit 77
  fi
done

P=$tmp/prefix
check "cmake --install" cmake --install "$B" --prefix "$P"
check "bin/shardline installed" test -x "$P/bin/shardline"
version=$("$P/bin/shardline" --version 2>&1)
check "installed shardline --version: '$version'" grep -Eq '^shardline [0-9]+\.[0-9]+\.[0-9]+ ' <<<"$version"
page=$P/share/man/man1/shardline.1
check "manual page installed" test -s "$page"
check "Slurm template installed" test -s "$P/share/shardline/slurm/shardline.sbatch"
check "Slurm template is the source's" cmp -s "$P/share/shardline/slurm/shardline.sbatch" \
  "$(dirname "$0")/../slurm/shardline.sbatch"

LC_ALL=C MANWIDTH=200 man -l "$page" >"$tmp/man.txt" 2>"$tmp/man.err" </dev/null
check "man -l renders the page" test -s "$tmp/man.txt"
check "man -l says nothing on stderr" test ! -s "$tmp/man.err"
LC_ALL=C groff -man -Tascii -ww -z "$page" >"$tmp/groff.err" 2>&1
check "groff -ww: no warnings ($(head -c 300 "$tmp/groff.err"))" test ! -s "$tmp/groff.err"
check "the page names itself" grep -q '^NAME' "$tmp/man.txt"

# every option of `shardline run --help`, and every command of `shardline --help`
"$P/bin/shardline" run --help >"$tmp/help.txt" 2>&1
opts=$(grep -Eo '^  --[a-z0-9-]+' "$tmp/help.txt" | sed 's/^  //')
nopts=$(wc -w <<<"$opts")
check "run --help lists options ($nopts)" test "$nopts" -ge 20
missing=""
for o in $opts; do
  grep -qe "$o\b" "$tmp/man.txt" || missing="$missing $o"
done
check "every run option is in the manual page (missing:${missing:- none})" test -z "$missing"
"$P/bin/shardline" --help >"$tmp/usage.txt" 2>&1
cmds=$(sed -n '/^commands:/,/^$/p' "$tmp/usage.txt" | grep -Eo '^  [a-z-]+' | sed 's/^  //')
missing=""
for c in $cmds; do
  grep -qe "^ *$c\b" "$tmp/man.txt" || missing="$missing $c"
done
check "every command is in the manual page (missing:${missing:- none})" test -z "$missing"

# the Debian package
(cd "$B" && cpack -G DEB -B "$tmp/pkg" >"$tmp/cpack.log" 2>&1)
deb=$(ls "$tmp"/pkg/*.deb 2>/dev/null | head -n 1)
check "cpack -G DEB made a .deb ($(tail -n 2 "$tmp/cpack.log" | tr '\n' ' '))" test -n "$deb"
if [ -n "$deb" ]; then
  dpkg-deb -c "$deb" >"$tmp/deb.txt"
  check "the .deb holds usr/bin/shardline" grep -q ' \./usr/bin/shardline$' "$tmp/deb.txt"
  check "the .deb holds the manual page" grep -q ' \./usr/share/man/man1/shardline\.1$' "$tmp/deb.txt"
  check "the .deb's package name" test "$(dpkg-deb -f "$deb" Package)" = shardline
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
