# Helpers sourced by the other scripts in this folder (not run on its own).

note() { printf '%s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# Run a command as root: directly when we are root, through sudo otherwise.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root to run: $* (install sudo or run it yourself)"
  fi
}

# apt-get install, refreshing the package lists once if the first attempt cannot find the package.
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* with your system's package manager"
  note "installing $* with apt-get"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null ||
    { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; } ||
    die "apt-get install $* failed"
}

# Install the front-end libraries from package-lock.json (chart.js for the dashboards). Settings serve
# them from node_modules, so both make run and make test need them.
npm_install() {
  if [ -f package.json ]; then
    if command -v npm >/dev/null 2>&1; then
      # npm ci wipes node_modules every time, so run it only when package.json or its lock changed.
      local stamp want
      stamp=node_modules/.npm-ci-stamp
      want=$(cat package.json package-lock.json 2>/dev/null | sha256sum | cut -d' ' -f1)
      if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        npm ci --no-audit --no-fund --loglevel=error
        echo "$want" >"$stamp"
      fi
    else
      note "npm not found: the front-end libraries in package.json (charts, journey designer) are not installed,"
      note "so those pages will not work. Install Node.js and npm (Debian: apt-get install -y npm) and run make run again."
    fi
  fi
}

# Build the journey designer (static/journeys/designer.jsx, React Flow) into static/journeys/build/ with the
# esbuild that npm_install put in node_modules. The output is not committed, so a fresh clone builds it
# here; esbuild takes well under a second, so it runs every time rather than guessing what changed.
designer_build() {
  if [ -x node_modules/.bin/esbuild ]; then
    npm run --silent build:designer || die "the journey designer's build failed (npm run build:designer)"
  else
    note "esbuild is not installed (no npm): the journey designer page will not work."
  fi
}

# Progress of a long, chatty command on one line: `cmd | progress_lines PATTERN LABEL [TOTAL]` counts the
# lines of cmd's output that match the awk regex PATTERN and shows "LABEL k[/TOTAL]: <the line's last
# word>", rewritten in place on a terminal (every tenth on a log file), then how many there were.
progress_lines() {
  local tty=0
  [ -t 2 ] && tty=1
  awk -v pat="$1" -v label="$2" -v total="${3:-}" -v tty="$tty" '
    function show(end) {
      count = k (total != "" ? "/" total : "")
      if (tty) printf "\r\033[K  %s %s%s", label, count, (end ? "" : ": " word) > "/dev/stderr"
      else if (end || k % 10 == 1) printf "  %s %s%s\n", label, count, (end ? "" : ": " word) > "/dev/stderr"
    }
    $0 ~ pat { k++; word = $2; sub(/\.\.\.$/, "", word); show(0); fflush("/dev/stderr") }
    END { if (k) { show(1); if (tty) printf "\n" > "/dev/stderr" } }
  '
}
