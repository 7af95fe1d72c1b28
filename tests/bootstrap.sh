# Sourced by tests/run and tests/demo: installs what they need on a fresh Debian machine.
# Idempotent and quick when everything is already there.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"

_apt() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "bootstrap: installing Debian packages: $*" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" \
    >/dev/null
}

missing=()
command -v exiftool >/dev/null || missing+=(libimage-exiftool-perl)
command -v initdb >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null \
  || missing+=(postgresql)
command -v runuser >/dev/null || missing+=(util-linux)
python3 -c "import venv, ensurepip" 2>/dev/null || missing+=(python3-venv)
command -v systemd-analyze >/dev/null || missing+=(systemd)  # unit checks
command -v npm >/dev/null || missing+=(npm)  # the official Immich CLI, for the fidelity test
command -v nix-instantiate >/dev/null || missing+=(nix-bin)  # tests/test_nix.py: .nix files parse, module evaluation
# the FUSE card of the fault scenarios (tests/faults/cardfs.py, through mfusepy)
command -v fusermount3 >/dev/null || missing+=(fuse3)
ldconfig -p 2>/dev/null | grep -q 'libfuse3\.so\.3 ' || missing+=(libfuse3-3)
command -v mkfs.xfs >/dev/null || missing+=(xfsprogs)  # the disk-full scenario on XFS
# the VM scenarios (tests/vm/): a Debian guest under qemu, cards made with mtools
for tool in qemu-system-x86:qemu-system-x86_64 debootstrap:debootstrap qemu-utils:qemu-img \
            dosfstools:mkfs.vfat mtools:mcopy; do
  command -v "${tool#*:}" >/dev/null || missing+=("${tool%%:*}")
done
# FAT and exFAT cards through FUSE (this kernel has neither module): tests/test_hostile_filesystems.py
for tool in fusefat:fusefat exfat-fuse:mount.exfat-fuse exfatprogs:mkfs.exfat fuse3:fusermount \
            mount:losetup; do
  command -v "${tool#*:}" >/dev/null || missing+=("${tool%%:*}")
done
if [ ${#missing[@]} -gt 0 ]; then _apt "${missing[@]}"; fi

stamp="$VENV/.photo-ingest-stamp"
want=$(cat "$ROOT/python/pyproject.toml" | sha1sum | cut -c1-40)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: preparing $VENV" >&2
  log="$(mktemp)"
  if ! { python3 -m venv "$VENV" && "$VENV/bin/pip" install --upgrade pip \
         && "$VENV/bin/pip" install -e "$ROOT/python[test,binary]"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "bootstrap: installing the Python packages failed (log above)" >&2
    exit 1
  fi
  rm -f "$log"
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
