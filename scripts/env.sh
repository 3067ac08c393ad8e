# Sourced by the scripts that run Python (test.sh, bench.sh, report.sh, edit.sh): builds, once,
# the virtual environments they run in, and picks the ComfyUI they run against.
#
#   take_host_option "$@"   sets HOST from "--host HOST" (anywhere) and ARGS to the other arguments.
#   use_host HOST     HOST is a ComfyUI version (one of PINNED_HOSTS, or any with a snapshot in
#                     ../shared/hosts), "none" (no ComfyUI: only the pure-torch tests run), or ""
#                     (look it up: COMFYUI_PATH, the ComfyUI whose custom_nodes/ holds the pack,
#                     ~/ComfyUI). Sets PYTHON, and exports COMFYUI_PATH (or PROMPT_EDIT_NO_COMFYUI=1).
#   host_root VERSION prints the root of that ComfyUI under ~/.cache/comfyui-hosts/VERSION/, made
#                     on first use: extracted from the snapshot in ../shared/hosts where there is
#                     one, else cloned (tag vVERSION, shallow) from PROMPT_EDIT_COMFYUI_GIT
#                     (default: ComfyUI's GitHub repository).
#
# .venv holds torch and everything the pack and its tests need. Each snapshot host gets its own
# .venv-VERSION with that host's requirements.txt (the hosts pin different frontends); it sees
# .venv's packages through a .pth file, so torch (5 GB) is installed once, and pip installs into
# the host's venv only what the host needs beyond them.

PACK_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOSTS_DIR="${PROMPT_EDIT_HOSTS:-$PACK_ROOT/../shared/hosts}"
# The ComfyUI versions the pack is tested on (the oldest supported and the newest; nodes/host.py's
# OLDEST_TESTED and NEWEST_TESTED): what `--host VERSION` may fetch when ../shared/hosts is absent.
PINNED_HOSTS="0.3.64 0.33.0"

_digest() {  # files...: a hash of them and of the install recipe (the two functions that install;
  # not all of this file, so that editing the rest of it reinstalls nothing)
  { cat "$@"; declare -f _base_venv _host_venv; } | sha1sum | cut -c1-12
}

_stamp_ok() {  # venv, files...: true when the venv was built from exactly these files
  local venv="$1"; shift
  [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.installed" 2>/dev/null)" = "$(_digest "$@")" ]
}

_stamp() {
  local venv="$1"; shift
  _digest "$@" > "$venv/.installed"
}

_base_venv() {
  local venv="$PACK_ROOT/.venv"
  local files=("$PACK_ROOT/requirements.txt" "$PACK_ROOT/requirements-test.txt")
  _stamp_ok "$venv" "${files[@]}" && return 0
  echo "setting up $venv (torch, the pack's and the tests' requirements)" >&2
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  # These three install together from the machine's local index (torchaudio: comfy/sd.py imports it).
  "$venv/bin/pip" install -q torch==2.14.1 torchvision==0.29.1 torchaudio==2.11.1 >&2
  "$venv/bin/pip" install -q -r "$PACK_ROOT/requirements.txt" -r "$PACK_ROOT/requirements-test.txt" >&2
  _stamp "$venv" "${files[@]}"
}

_host_venv() {  # venv, ComfyUI root: a venv with that ComfyUI's own requirements over .venv
  local venv="$1" root="$2"
  local files=("$root/requirements.txt" "$PACK_ROOT/requirements.txt" "$PACK_ROOT/requirements-test.txt")
  _stamp_ok "$venv" "${files[@]}" && return 0
  echo "setting up $venv (requirements of $root)" >&2
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  local site base_site
  site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
  base_site="$("$PACK_ROOT/.venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
  echo "$base_site" > "$site/_prompt_edit_base.pth"
  "$venv/bin/pip" install -q -r "$root/requirements.txt" >&2
  _stamp "$venv" "${files[@]}"
}

_lookup_comfyui() {  # the default lookup, as scripts/comfy_cli.py does it
  local candidate
  for candidate in "${COMFYUI_PATH:-}" "$(dirname "$(dirname "$PACK_ROOT")")" "$HOME/ComfyUI"; do
    [ -n "$candidate" ] || continue
    if [ "$candidate" = "$(dirname "$(dirname "$PACK_ROOT")")" ] && [ "$(basename "$(dirname "$PACK_ROOT")")" != custom_nodes ]; then
      continue
    fi
    if [ -f "$candidate/nodes.py" ] && [ -d "$candidate/comfy" ]; then
      echo "$candidate"
      return 0
    fi
  done
}

_snapshot_versions() {
  ls "$HOSTS_DIR" 2>/dev/null | sed -n 's/^ComfyUI-v\(.*\)\.tar\.gz$/\1/p' | tr '\n' ' '
}

host_root() {  # VERSION: print the root of that ComfyUI (extracted or cloned on first use)
  local version="$1"
  if [ -f "$HOSTS_DIR/ComfyUI-v$version.tar.gz" ]; then
    bash "$HOSTS_DIR/extract.sh" "$version"
  else
    clone_host "$version"
  fi
}

clone_host() {  # VERSION: clone tag vVERSION where extract.sh would put the snapshot; print its root
  local version="$1"
  local url="${PROMPT_EDIT_COMFYUI_GIT:-https://github.com/comfyanonymous/ComfyUI.git}"
  local dest="${XDG_CACHE_HOME:-$HOME/.cache}/comfyui-hosts/$version"
  local root="$dest/ComfyUI" partial="$dest/ComfyUI.partial" log
  # The same marker as extract.sh: a finished copy, however it got there, is reused.
  if [ -f "$root/.extracted" ]; then
    echo "$root"
    return 0
  fi
  if ! command -v git >/dev/null; then
    echo "--host $version: no snapshot in $HOSTS_DIR and git is not installed to clone ComfyUI; install git, or put ComfyUI-v$version.tar.gz in $HOSTS_DIR (PROMPT_EDIT_HOSTS)" >&2
    return 2
  fi
  mkdir -p "$dest" || { echo "--host $version: cannot create $dest; make the cache folder writable (XDG_CACHE_HOME)" >&2; return 2; }
  echo "fetching ComfyUI $version: git clone --depth 1 --branch v$version $url" >&2
  # Cloned beside the final place and renamed when complete, so that a failed or interrupted
  # clone never looks like a ComfyUI to the next run.
  rm -rf "$partial"
  if ! log="$(GIT_TERMINAL_PROMPT=0 git -c advice.detachedHead=false clone -q --depth 1 --branch "v$version" "$url" "$partial" 2>&1)"; then
    rm -rf "$partial"
    echo "--host $version: cannot clone tag v$version of $url ($(echo "$log" | tail -n 1)); check the network or the version, set PROMPT_EDIT_COMFYUI_GIT to a ComfyUI repository you can reach, or put ComfyUI-v$version.tar.gz in $HOSTS_DIR (PROMPT_EDIT_HOSTS)" >&2
    return 2
  fi
  if [ ! -f "$partial/nodes.py" ] || [ ! -d "$partial/comfy" ]; then
    rm -rf "$partial"
    echo "--host $version: tag v$version of $url is not a ComfyUI (no nodes.py and comfy/); point PROMPT_EDIT_COMFYUI_GIT at ComfyUI's repository" >&2
    return 2
  fi
  rm -rf "$root"
  mv "$partial" "$root"
  touch "$root/.extracted"
  echo "$root"
}

use_host() {
  local host="${1:-}" root
  case "$host" in
    ""|none) ;;
    *)  # checked before any venv is built
      if [ ! -f "$HOSTS_DIR/ComfyUI-v$host.tar.gz" ] && [[ " $PINNED_HOSTS " != *" $host "* ]]; then
        echo "--host $host: not a ComfyUI version the pack is tested on; use one of: $PINNED_HOSTS$( [ -n "$(_snapshot_versions)" ] && echo " (snapshots in $HOSTS_DIR: $(_snapshot_versions))"), or none" >&2
        return 2
      fi
      ;;
  esac
  _base_venv
  case "$host" in
    none)
      export PROMPT_EDIT_NO_COMFYUI=1
      unset COMFYUI_PATH
      PYTHON="$PACK_ROOT/.venv/bin/python"
      ;;
    "")
      root="$(_lookup_comfyui)"
      PYTHON="$PACK_ROOT/.venv/bin/python"
      if [ -n "$root" ]; then
        _host_venv "$PACK_ROOT/.venv-local" "$root"
        PYTHON="$PACK_ROOT/.venv-local/bin/python"
        export COMFYUI_PATH="$root"
      fi
      ;;
    *)
      root="$(host_root "$host")" || return 2
      _host_venv "$PACK_ROOT/.venv-$host" "$root"
      PYTHON="$PACK_ROOT/.venv-$host/bin/python"
      export COMFYUI_PATH="$root"
      ;;
  esac
}

take_host_option() {  # "--host VERSION" or "--host=VERSION", anywhere: HOST; the other arguments: ARGS
  HOST=""
  ARGS=()
  while [ $# -gt 0 ]; do
    case "$1" in
      --host|--host=*)
        if [ "$1" = --host ]; then HOST="${2:-}"; shift $(( $# > 1 ? 2 : 1 )); else HOST="${1#--host=}"; shift; fi
        if [ -z "$HOST" ] || [[ "$HOST" == -* ]]; then
          echo "--host needs a ComfyUI version ($PINNED_HOSTS) or none, e.g. --host 0.33.0" >&2
          return 2
        fi
        ;;
      *) ARGS+=("$1"); shift ;;
    esac
  done
}
