"""The guest image: Debian 12 with systemd, udev, PostgreSQL, exiftool and photo-ingest.

Built in two layers, both cached under <repo>/.cache/vm/ (never committed):

- base-<key>/   debootstrap minbase of bookworm from the Debian mirror apt uses on this host,
                made small and quiet by guest/setup-base.sh, plus its kernel and a small
                initrd. Keyed by the package list and setup-base.sh: rebuilt rarely (~4 min).
- image-<key>/  a copy of the base with photo-ingest installed from wheels built on the host
                the way docs/install.md tells a Debian user (guest/setup-image.sh), the test
                agent, as an ext4 disk image (mkfs.ext4 -d: no loop mounts). Keyed by the
                base key, the files that go into it (image.py, guest/) and the wheels'
                contents (~1 min).

Needs root (debootstrap, chroot) and the host packages in HOST_PACKAGES.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
GUEST = HERE / "guest"
CACHE = Path(os.environ.get("PHOTO_INGEST_VM_CACHE", ROOT / ".cache" / "vm"))
SUITE = "bookworm"

# What the guest needs: an init and udev, a kernel, the product's runtime (python3-venv for
# the venv, exiftool, PostgreSQL) and the tools the tests use in the guest.
PACKAGES = ("systemd-sysv", "udev", "linux-image-amd64", "kmod", "initramfs-tools", "python3",
            "python3-venv", "libimage-exiftool-perl", "postgresql", "dosfstools",
            "util-linux")
# Debian packages the host needs for building and booting: command -> package.
HOST_PACKAGES = {"debootstrap": "debootstrap", "qemu-system-x86_64": "qemu-system-x86",
                 "qemu-img": "qemu-utils", "mkfs.vfat": "dosfstools", "mcopy": "mtools",
                 "mkfs.ext4": "e2fsprogs"}

Log = Callable[[str], None]


@dataclass(frozen=True)
class Image:
    key: str
    kernel: Path
    initrd: Path
    rootfs: Path           # ext4, the whole disk (no partition table): root=/dev/vda
    build_seconds: float   # 0.0 when it came from the cache


def log_stderr(message: str) -> None:
    print(f"[vm {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def missing_host_packages() -> list[str]:
    return sorted({pkg for cmd, pkg in HOST_PACKAGES.items() if shutil.which(cmd) is None})


def install_host_packages(log: Log = log_stderr) -> None:
    """apt-get install what the harness needs on the host (a fresh CI machine has none)."""
    missing = missing_host_packages()
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(f"missing host packages {' '.join(missing)} (apt-get install them)")
    log(f"installing host packages: {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                   check=True, env=env, capture_output=True)


def mirror() -> str:
    """The Debian mirror apt uses on this host ($PHOTO_INGEST_VM_MIRROR overrides)."""
    if os.environ.get("PHOTO_INGEST_VM_MIRROR"):
        return os.environ["PHOTO_INGEST_VM_MIRROR"]
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":  # deb822 stanzas
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.M))
                if SUITE in fields.get("Suites", "").split() and \
                        "main" in fields.get("Components", "").split():
                    return fields["URIs"].split()[0]
        else:
            for line in text.splitlines():
                words = re.sub(r"\[.*?\]", "", line).split()
                if len(words) >= 4 and words[0] == "deb" and words[2] == SUITE \
                        and "main" in words[3:]:
                    return words[1]
    return "http://deb.debian.org/debian"


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def base_key() -> str:
    return _digest(SUITE.encode(), " ".join(PACKAGES).encode(),
                   (GUEST / "setup-base.sh").read_bytes())


def harness_files() -> list[Path]:
    """The harness files that shape the image (the scenarios run against it, not in it)."""
    return [HERE / "image.py", *sorted(p for p in GUEST.iterdir() if p.is_file())]


def wheels_digest(wheel_dir: Path) -> str:
    """The wheels' contents (names and bytes of their members, not zip timestamps)."""
    parts = []
    for wheel in sorted(wheel_dir.glob("*.whl")):
        with zipfile.ZipFile(wheel) as z:
            members = sorted(z.namelist())
            parts.append(wheel.name.encode())
            parts += [m.encode() + hashlib.sha256(z.read(m)).digest() for m in members]
    return _digest(*parts)


def build_wheels(dest: Path, log: Log = log_stderr) -> str:
    """Wheels of photo-ingest and its dependencies for the guest's Python 3.11."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    if sys.version_info[:2] != (3, 11):
        raise RuntimeError("the wheels must be built with Python 3.11 (Debian 12's Python)")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "-w", str(dest),
                             f"{ROOT / 'python'}[binary]"], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"pip wheel failed:\n{result.stdout}{result.stderr}")
    digest = wheels_digest(dest)
    log(f"wheels: {len(list(dest.glob('*.whl')))} files, digest {digest}")
    return digest


@contextmanager
def _locked() -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _run(argv: list[str], what: str, **kwargs: object) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)  # type: ignore
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}):\n"
                           f"{result.stdout[-4000:]}{result.stderr[-4000:]}")


def _kernel_version(root: Path) -> str:
    versions = sorted(p.name for p in (root / "usr/lib/modules").iterdir())
    if len(versions) != 1:
        raise RuntimeError(f"expected one kernel in the guest, found {versions}")
    return versions[0]


class GuestUnavailable(RuntimeError):
    """The guest's Debian packages cannot be had here (no mirror): an environment without
    the VM scenarios, not a failure of the product."""


def ensure_base(log: Log = log_stderr) -> Path:
    """The debootstrap tree (cached); its root is <dir>/root."""
    key = base_key()
    base = CACHE / f"base-{key}"
    if (base / "done").exists():
        return base
    work = CACHE / f"base-{key}.tmp"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    root = work / "root"
    url = mirror()
    log(f"debootstrap {SUITE} from {url} (a few minutes)")
    started = time.monotonic()
    debs = CACHE / "debs"
    debs.mkdir(exist_ok=True)
    try:
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
              f"--cache-dir={debs}", SUITE, str(root), url], "debootstrap")
    except RuntimeError as exc:
        raise GuestUnavailable(f"cannot build the guest from {url}: {exc}") from exc
    log(f"debootstrap done in {time.monotonic() - started:.0f}s")
    shutil.copy(GUEST / "setup-base.sh", root / "tmp/setup-base.sh")
    _run(["chroot", str(root), "/bin/sh", "/tmp/setup-base.sh", _kernel_version(root)],
         "setup-base.sh")
    (root / "tmp/setup-base.sh").unlink()
    (work / "done").write_text(f"{time.time()}\n")
    for old in CACHE.glob("base-*"):
        if old.is_dir() and old.name != work.name:
            shutil.rmtree(old, ignore_errors=True)
    work.rename(base)
    return base


def ensure_image(log: Log = log_stderr) -> Image:
    """The bootable image for the current source tree: from the cache, else built."""
    started = time.monotonic()
    with _locked():
        wheels = CACHE / "wheels"
        digest = build_wheels(wheels, log)
        base = ensure_base(log)
        key = _digest(base.name.encode(), digest.encode(),
                      *(p.name.encode() + p.read_bytes() for p in harness_files()))
        final = CACHE / f"image-{key}"
        if not (final / "done").exists():
            _build_image(base, wheels, final, log)
            seconds = time.monotonic() - started
            log(f"image {key} built in {seconds:.0f}s")
        else:
            seconds = 0.0
            os.utime(final)  # recently used: kept by _prune
            log(f"image {key} from the cache")
        return Image(key, final / "vmlinuz", final / "initrd", final / "rootfs.ext4", seconds)


def _build_image(base: Path, wheels: Path, final: Path, log: Log) -> None:
    work = final.with_name(final.name + ".tmp")
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    root = work / "root"
    log("copying the base tree")
    _run(["cp", "-a", "--reflink=auto", str(base / "root"), str(root)], "cp")
    shutil.copytree(wheels, root / "tmp/wheels")
    for path in GUEST.iterdir():
        if path.is_file():
            shutil.copy(path, root / "tmp" / path.name)
    log("installing photo-ingest in the guest tree")
    _run(["chroot", str(root), "/bin/sh", "/tmp/setup-image.sh"], "setup-image.sh",
         env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root"})
    shutil.rmtree(root / "tmp")
    (root / "tmp").mkdir(mode=0o1777)
    os.chmod(root / "tmp", 0o1777)
    kver = _kernel_version(root)
    shutil.copy(root / f"boot/vmlinuz-{kver}", work / "vmlinuz")
    shutil.copy(root / "boot/initrd.vm", work / "initrd")
    # Room for the library (the large-card scenario copies ~150 MB) and the catalog.
    used = int(subprocess.run(["du", "-sm", str(root)], capture_output=True, text=True,
                              check=True).stdout.split()[0])
    size_mb = used + 1024
    log(f"mkfs.ext4 -d ({used} MB of files in a {size_mb} MB disk)")
    _run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(root), str(work / "rootfs.ext4"),
          f"{size_mb}M"], "mkfs.ext4")
    shutil.rmtree(root)
    (work / "done").write_text(f"{time.time()}\n")
    work.rename(final)
    _prune(log)


KEEP_IMAGES = 3  # another run of the suite (another work tree state) may still boot one


def _prune(log: Log) -> None:
    """Remove all but the most recently used images, and unfinished builds (called with the
    cache locked, so no build is under way)."""
    for tmp in CACHE.glob("image-*.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)
    images = sorted((p for p in CACHE.glob("image-*") if p.is_dir()),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in images[KEEP_IMAGES:]:
        log(f"removing the old image {old.name}")
        shutil.rmtree(old, ignore_errors=True)
