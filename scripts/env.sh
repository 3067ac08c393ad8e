# Sourced by the scripts that run Python (test.sh, bench.sh, report.sh, edit.sh): builds, once,
# the virtual environments they run in, and picks the ComfyUI they run against.
#
#   take_host_option "$@"   sets HOST from a leading "--host HOST" and ARGS to the rest.
#   use_host HOST     HOST is a version of a snapshot in ../shared/hosts (extracted on first use),
#                     "none" (no ComfyUI: only the pure-torch tests run), or "" (look it up:
#                     COMFYUI_PATH, the ComfyUI whose custom_nodes/ holds the pack, ~/ComfyUI).
#                     Sets PYTHON, and exports COMFYUI_PATH (or PROMPT_EDIT_NO_COMFYUI=1).
#
# .venv holds torch and everything the pack and its tests need. Each snapshot host gets its own
# .venv-VERSION with that host's requirements.txt (the hosts pin different frontends); it sees
# .venv's packages through a .pth file, so torch (5 GB) is installed once, and pip installs into
# the host's venv only what the host needs beyond them.

PACK_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HOSTS_DIR="${PROMPT_EDIT_HOSTS:-$PACK_ROOT/../shared/hosts}"

_stamp_ok() {  # venv, files...: true when the venv was built from exactly these files
  local venv="$1"; shift
  [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.installed" 2>/dev/null)" = "$(cat "$@" | sha1sum | cut -c1-12)" ]
}

_stamp() {
  local venv="$1"; shift
  cat "$@" | sha1sum | cut -c1-12 > "$venv/.installed"
}

_base_venv() {
  local venv="$PACK_ROOT/.venv"
  local files=("$PACK_ROOT/requirements.txt" "$PACK_ROOT/requirements-test.txt" "${BASH_SOURCE[0]}")
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
  local files=("$root/requirements.txt" "$PACK_ROOT/requirements.txt" "$PACK_ROOT/requirements-test.txt" "${BASH_SOURCE[0]}")
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

use_host() {
  local host="${1:-}" root
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
      if [ ! -f "$HOSTS_DIR/ComfyUI-v$host.tar.gz" ]; then
        echo "no ComfyUI $host snapshot in $HOSTS_DIR; have: $(ls "$HOSTS_DIR" 2>/dev/null | sed -n 's/^ComfyUI-v\(.*\)\.tar\.gz$/\1/p' | tr '\n' ' ')" >&2
        return 2
      fi
      root="$(bash "$HOSTS_DIR/extract.sh" "$host")"
      _host_venv "$PACK_ROOT/.venv-$host" "$root"
      PYTHON="$PACK_ROOT/.venv-$host/bin/python"
      export COMFYUI_PATH="$root"
      ;;
  esac
}

take_host_option() {
  HOST=""
  if [ "${1:-}" = "--host" ]; then
    HOST="${2:?--host needs a version of a snapshot in ../shared/hosts (e.g. 0.33.0), or none}"
    shift 2
  fi
  ARGS=("$@")
}
