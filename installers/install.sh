#!/usr/bin/env bash
# Installs media-converter on Linux or macOS: ffmpeg if missing, the binary built from this
# checkout, shell completions and the man page, and optionally a schedule (one crontab line
# or a systemd user timer). Running it again updates in place; --uninstall removes what it
# installed. See --help.
set -euo pipefail

readonly NAME=media-converter
# Marks the one crontab line this script owns, so a second run replaces it.
readonly CRON_TAG="# media-converter schedule (installers/install.sh)"

usage() {
  cat <<'EOF'
Usage: installers/install.sh [options]

Installs media-converter (and ffmpeg, if missing) for the current user.

Options:
  --prefix DIR            install under DIR (default: ~/.local): DIR/bin/media-converter,
                          DIR/share/{bash-completion,zsh,fish}/..., DIR/share/man/man1
  --binary FILE           install this already built binary instead of building one
  --cron "EXPR"           run nightly from cron: one crontab line, e.g. --cron "0 1 * * *"
  --systemd-timer         run from a systemd user timer instead (Linux)
  --on-calendar "SPEC"    when the timer fires (default: "*-*-* 01:00")
  --dir LIBRARY           the library a schedule converts (required with a schedule)
  --args "ARGS"           more media-converter arguments for the schedule,
                          e.g. --args "--type both --min-savings 15"
  --uninstall             remove what this script installed (with the same --prefix)
  -h, --help              show this help

Running it again is safe: files are replaced, and a schedule replaces the one this script
made before (cron line or timer, never both). ffmpeg and cargo come from the system's package
manager (apt-get, dnf, pacman, brew) and stay installed on --uninstall; the schedule's log
file is kept too.

Exit status: 0 done, 2 a usage or setup error (the message says what to do).
EOF
}

say() { printf '%s\n' "$*"; }
warn() { printf 'install.sh: warning: %s\n' "$*" >&2; }
die() {
  printf 'install.sh: %s\n' "$*" >&2
  exit 2
}

# --- options -----------------------------------------------------------------------------

prefix="$HOME/.local"
binary=""
source_binary=""
cron_expr=""
systemd_timer=false
on_calendar="*-*-* 01:00"
library=""
extra_args=""
uninstall=false

need_value() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (see --help)"; }

while [[ $# -gt 0 ]]; do
  case $1 in
    --prefix) need_value "$@"; prefix=$2; shift 2 ;;
    --prefix=*) prefix=${1#*=}; shift ;;
    --binary) need_value "$@"; binary=$2; shift 2 ;;
    --binary=*) binary=${1#*=}; shift ;;
    --cron) need_value "$@"; cron_expr=$2; shift 2 ;;
    --cron=*) cron_expr=${1#*=}; shift ;;
    --systemd-timer) systemd_timer=true; shift ;;
    --on-calendar) need_value "$@"; on_calendar=$2; shift 2 ;;
    --on-calendar=*) on_calendar=${1#*=}; shift ;;
    --dir) need_value "$@"; library=$2; shift 2 ;;
    --dir=*) library=${1#*=}; shift ;;
    --args) [[ $# -ge 2 ]] || die "--args needs a value"; extra_args=$2; shift 2 ;;
    --args=*) extra_args=${1#*=}; shift ;;
    --uninstall) uninstall=true; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option: $1 (see --help)" ;;
  esac
done

absolute() {
  case $1 in
    /*) printf '%s\n' "$1" ;;
    *) printf '%s/%s\n' "$PWD" "$1" ;;
  esac
}

[[ -n $prefix ]] || die "--prefix is empty"
prefix=$(absolute "${prefix%/}")
[[ -n $binary ]] && binary=$(absolute "$binary")

if [[ -n $cron_expr && $systemd_timer == true ]]; then
  die "choose one schedule: --cron or --systemd-timer"
fi
if [[ -n $cron_expr || $systemd_timer == true ]]; then
  [[ $uninstall == false ]] || die "--uninstall takes no schedule options"
  [[ -n $library ]] || die "a schedule needs --dir LIBRARY"
  library=$(absolute "${library%/}")
elif [[ -n $library || -n $extra_args ]]; then
  die "--dir and --args belong to a schedule: add --cron or --systemd-timer"
fi
if [[ -n $cron_expr ]]; then
  # Five fields or an @keyword; cron itself rejects the rest, but only after install.
  read -r -a fields <<<"$cron_expr"
  if ! [[ ${#fields[@]} -eq 5 || (${#fields[@]} -eq 1 && ${fields[0]} == @*) ]]; then
    die "--cron wants five fields (minute hour day month weekday) or @daily etc., got: $cron_expr"
  fi
fi

# A timer systemd cannot parse would never fire; its own parser judges, where there is one.
if [[ $systemd_timer == true ]] && command -v systemd-analyze >/dev/null \
  && ! systemd-analyze calendar "$on_calendar" >/dev/null 2>&1; then
  die "systemd does not understand --on-calendar \"$on_calendar\" (try \"*-*-* 01:00\")"
fi

# --- where things go ---------------------------------------------------------------------

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin_path="$prefix/bin/$NAME"
bash_completion="$prefix/share/bash-completion/completions/$NAME"
zsh_completion="$prefix/share/zsh/site-functions/_$NAME"
fish_completion="$prefix/share/fish/vendor_completions.d/$NAME.fish"
man_page="$prefix/share/man/man1/$NAME.1"
unit_dir="${XDG_CONFIG_HOME:-$HOME/.config}/systemd/user"
service_unit="$unit_dir/$NAME.service"
timer_unit="$unit_dir/$NAME.timer"
log_file="${XDG_STATE_HOME:-$HOME/.local/state}/$NAME/schedule.log"

# --- helpers -----------------------------------------------------------------------------

# Runs a command as root: directly when we are root, through sudo otherwise.
as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    die "this needs root: $*; run it as root or install sudo"
  fi
}

# Writes what a command prints to a file, through a temp file in the same directory and a
# rename: a scheduled run starting meanwhile sees the old file or the new one, never half of
# one, and a command that fails leaves the old file alone.
#   write_file DEST MODE COMMAND [ARGS...]
write_file() {
  local dest=$1 mode=$2 tmp
  shift 2
  mkdir -p "$(dirname "$dest")" || die "cannot create the directory of $dest"
  tmp=$(mktemp "$dest.XXXXXX") || die "cannot write in the directory of $dest"
  if ! "$@" >"$tmp"; then
    rm -f "$tmp"
    die "writing $dest: \`$*\` failed"
  fi
  if ! chmod "$mode" "$tmp" || ! mv -f "$tmp" "$dest"; then
    rm -f "$tmp"
    die "cannot write $dest"
  fi
}

remove_file() {
  if [[ -e $1 || -L $1 ]]; then
    rm -f "$1"
    say "removed $1"
  fi
}

# Quotes a word for sh: 'it'\''s'.
sh_quote() {
  local s=${1//\'/\'\\\'\'}
  printf "'%s'" "$s"
}

# Quotes a word for a systemd Exec line: double quotes, with \, " escaped, and % and $
# doubled so systemd does not expand them as specifiers or variables.
systemd_quote() {
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//%/%%}
  s=${s//\$/\$\$}
  printf '"%s"' "$s"
}

# PATH for scheduled runs: cron and systemd start with a minimal one that may not reach
# ffmpeg (Homebrew, /usr/local), so the directory ffmpeg was found in goes first.
schedule_path() {
  local path=/usr/local/bin:/usr/bin:/bin ffmpeg_dir
  if ffmpeg_dir=$(dirname "$(command -v ffmpeg)" 2>/dev/null) && [[ -n $ffmpeg_dir ]]; then
    case ":$path:" in
      *":$ffmpeg_dir:"*) ;;
      *) path="$ffmpeg_dir:$path" ;;
    esac
  fi
  printf '%s\n' "$path"
}

# --- ffmpeg ------------------------------------------------------------------------------

package_manager() {
  local pm
  for pm in apt-get dnf pacman brew; do
    if command -v "$pm" >/dev/null; then
      printf '%s\n' "$pm"
      return 0
    fi
  done
  return 1
}

ensure_ffmpeg() {
  if command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null; then
    say "ffmpeg: $(command -v ffmpeg)"
  else
    local pm
    pm=$(package_manager) || die "ffmpeg is not installed and no package manager was found \
(apt-get, dnf, pacman, brew); install ffmpeg with libx265 and run this again"
    say "installing ffmpeg with $pm"
    case $pm in
      apt-get)
        if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
          || ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg; then
          die "apt-get could not install ffmpeg (see above)"
        fi
        ;;
      dnf)
        # Fedora's own ffmpeg-free has no libx265; the full ffmpeg comes from RPM Fusion.
        as_root dnf install -y ffmpeg || die "dnf could not install ffmpeg; enable RPM Fusion \
(https://rpmfusion.org/Configuration) for an ffmpeg with libx265, then run this again"
        ;;
      pacman)
        as_root pacman -S --needed --noconfirm ffmpeg || die "pacman could not install ffmpeg"
        ;;
      # Homebrew refuses to run as root and needs no sudo.
      brew) brew install ffmpeg || die "brew could not install ffmpeg" ;;
    esac
    if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
      die "ffmpeg or ffprobe is still not on PATH after installing it with $pm"
    fi
  fi
  # Read whole, not piped into grep -q: with pipefail, grep's early exit would fail the pipe.
  local encoders
  encoders=$(ffmpeg -hide_banner -encoders 2>/dev/null) || encoders=""
  if [[ $encoders != *libx265* ]]; then
    warn "this ffmpeg has no libx265 encoder; only hardware encoders can be used"
  fi
}

# --- building ----------------------------------------------------------------------------

# major*1000+minor of a version like 1.85 or 1.85.0.
version_number() {
  local major minor
  IFS=. read -r major minor _ <<<"$1"
  printf '%d\n' $((10#${major:-0} * 1000 + 10#${minor:-0}))
}

rustup_hint() {
  printf 'install a current Rust toolchain with rustup (https://rustup.rs), open a new shell, \
and run this again'
}

ensure_cargo() {
  local required
  required=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$repo/Cargo.toml")
  if ! command -v cargo >/dev/null; then
    if command -v apt-get >/dev/null; then
      say "cargo not found: installing Debian's cargo"
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cargo \
        || die "apt-get could not install cargo; $(rustup_hint)"
      command -v cargo >/dev/null || die "cargo is still not on PATH; $(rustup_hint)"
    else
      die "cargo not found; $(rustup_hint)"
    fi
  fi
  local have
  have=$(rustc --version 2>/dev/null | awk '{print $2}') || have=""
  if [[ -z $have ]]; then
    die "rustc not found beside cargo; $(rustup_hint)"
  fi
  if [[ -n $required && $(version_number "$have") -lt $(version_number "$required") ]]; then
    die "rustc $have is older than the $required this needs (distribution packages often \
lag); $(rustup_hint)"
  fi
}

# Sets source_binary to the binary to install, building it unless --binary named one.
build_binary() {
  if [[ -n $binary ]]; then
    [[ -f $binary && -x $binary ]] || die "--binary $binary is not an executable file"
    source_binary=$binary
    return
  fi
  [[ -f $repo/Cargo.toml ]] || die "no Cargo.toml in $repo: run this from a checkout, or \
pass --binary FILE"
  ensure_cargo
  say "building: cargo build --release --locked (the first build takes a few minutes)"
  local messages
  # The JSON messages name the executable wherever the target directory is (CARGO_TARGET_DIR,
  # .cargo/config.toml); human-readable diagnostics still go to the terminal.
  messages=$(cd "$repo" && cargo build --release --locked --bin "$NAME" \
    --message-format=json-render-diagnostics) || die "cargo build failed (see above)"
  source_binary=$(printf '%s\n' "$messages" \
    | sed -n "s/.*\"executable\":\"\\([^\"]*\\/$NAME\\)\".*/\\1/p" | tail -n 1)
  [[ -n $source_binary && -x $source_binary ]] \
    || die "cargo build succeeded but named no $NAME binary"
}

# --- schedules ---------------------------------------------------------------------------

# Prints the current crontab, or nothing when there is none; fails on any other error rather
# than let an unreadable table be replaced by ours alone.
read_crontab() {
  local out
  if out=$(crontab -l 2>&1); then
    printf '%s\n' "$out"
  elif [[ $out == *"no crontab"* ]]; then
    return 0
  else
    die "cannot read the crontab: $out"
  fi
}

# Replaces this script's crontab line with $1 (removes it when empty), keeping every other
# line as it was.
set_cron_line() {
  local line=$1 current kept tmp
  current=$(read_crontab)
  kept=$(printf '%s\n' "$current" | grep -vF -- "$CRON_TAG" || true)
  if [[ -z $line ]]; then
    [[ $kept != "$current" ]] || return 0
    say "removed the crontab line"
  fi
  tmp=$(mktemp)
  {
    [[ -n $kept ]] && printf '%s\n' "$kept"
    [[ -n $line ]] && printf '%s\n' "$line"
  } >"$tmp"
  if ! crontab "$tmp"; then
    rm -f "$tmp"
    die "crontab refused the new table"
  fi
  rm -f "$tmp"
}

have_crontab() { command -v crontab >/dev/null; }

# Whether a systemd user manager is there to talk to (not in containers, or over plain su).
have_user_systemd() {
  command -v systemctl >/dev/null && systemctl --user show-environment >/dev/null 2>&1
}

install_cron() {
  have_crontab || die "crontab not found; install cron (Debian: apt-get install cron) or \
use --systemd-timer"
  mkdir -p "$(dirname "$log_file")"
  local command line
  command="PATH=$(sh_quote "$(schedule_path)") $(sh_quote "$bin_path") --dir $(sh_quote "$library")"
  [[ -n $extra_args ]] && command+=" $extra_args"
  command+=" >> $(sh_quote "$log_file") 2>&1"
  # cron turns an unescaped % into a newline.
  command=${command//%/\\%}
  line="$cron_expr $command $CRON_TAG"
  set_cron_line "$line"
  say "crontab: $line"
  say "log: $log_file"
  remove_timer
}

install_timer() {
  local exec_start
  exec_start="$(systemd_quote "$bin_path") --dir $(systemd_quote "$library")"
  if [[ -n $extra_args ]]; then
    local escaped=${extra_args//%/%%}
    exec_start+=" ${escaped//\$/\$\$}"
  fi
  write_file "$service_unit" 644 cat <<EOF
# Written by media-converter's installers/install.sh; --uninstall removes it.
[Unit]
Description=media-converter: shrink the library in $library
Documentation=man:$NAME(1)

[Service]
Type=oneshot
Environment="PATH=$(schedule_path)"
ExecStart=$exec_start
# Encoding is background work: leave the machine to its users.
Nice=10
IOSchedulingClass=idle
EOF
  write_file "$timer_unit" 644 cat <<EOF
# Written by media-converter's installers/install.sh; --uninstall removes it.
[Unit]
Description=Run media-converter on a schedule

[Timer]
OnCalendar=$on_calendar
# A machine that was off at the time runs it when it next starts.
Persistent=true

[Install]
WantedBy=timers.target
EOF
  say "wrote $service_unit"
  say "wrote $timer_unit"
  if have_user_systemd; then
    systemctl --user daemon-reload
    systemctl --user enable --now "$NAME.timer"
    say "enabled $NAME.timer (systemctl --user list-timers shows the next run)"
  else
    say "no systemd user manager here; to enable the timer, run in your login session:"
    say "  systemctl --user daemon-reload && systemctl --user enable --now $NAME.timer"
  fi
  say "user timers run only while you are logged in unless lingering is on:"
  say "  sudo loginctl enable-linger $(id -un)"
  say "its output goes to the journal: journalctl --user -u $NAME.service"
  if have_crontab; then
    set_cron_line ""
  fi
}

# Removes the timer units, if any (on --uninstall, or when cron takes over the schedule).
remove_timer() {
  [[ -e $timer_unit || -e $service_unit ]] || return 0
  if have_user_systemd; then
    systemctl --user disable --now "$NAME.timer" >/dev/null 2>&1 || true
  fi
  remove_file "$timer_unit"
  remove_file "$service_unit"
  if have_user_systemd; then
    systemctl --user daemon-reload || true
  fi
}

# --- install / uninstall -----------------------------------------------------------------

do_install() {
  ensure_ffmpeg
  build_binary
  write_file "$bin_path" 755 cat "$source_binary"
  say "installed $bin_path"
  # Generated by the installed binary itself, so they match the flags it accepts.
  write_file "$bash_completion" 644 "$bin_path" completions bash
  write_file "$zsh_completion" 644 "$bin_path" completions zsh
  write_file "$fish_completion" 644 "$bin_path" completions fish
  write_file "$man_page" 644 "$bin_path" man
  say "installed completions (bash, zsh, fish) and the man page under $prefix/share"

  if [[ -n $cron_expr ]]; then
    install_cron
  elif [[ $systemd_timer == true ]]; then
    install_timer
  fi

  case ":$PATH:" in
    *":$prefix/bin:"*) ;;
    *) say "note: $prefix/bin is not on PATH; add it in your shell's profile" ;;
  esac
  case $prefix in
    /usr | /usr/local) ;;
    *)
      say "note: zsh finds the completion once ~/.zshrc has, before compinit:"
      say "  fpath=($(dirname "$zsh_completion") \$fpath)"
      ;;
  esac
  say "done: $("$bin_path" --version)"
}

do_uninstall() {
  remove_file "$bin_path"
  remove_file "$bash_completion"
  remove_file "$zsh_completion"
  remove_file "$fish_completion"
  remove_file "$man_page"
  if have_crontab; then
    set_cron_line ""
  fi
  remove_timer
  if [[ -e $log_file ]]; then
    say "kept the schedule's log: $log_file"
  fi
  say "uninstalled; ffmpeg stays installed"
}

if [[ $uninstall == true ]]; then
  do_uninstall
else
  do_install
fi
