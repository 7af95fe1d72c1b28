# The photo-ingest application, with its units and udev rule installed for NixOS
# (systemd.packages / services.udev.packages) and its Grafana dashboard and alert rules under
# share/. The check phase runs the project's pytest suite (real PostgreSQL and exiftool from
# nixpkgs); it is off by default and on in the flake's checks.<system>.package-tests.
{
  lib,
  python3Packages,
  exiftool,
  util-linux,
  postgresql,
  doCheck ? false,
}:
let
  pyproject = lib.importTOML ../python/pyproject.toml;
in
python3Packages.buildPythonApplication {
  pname = "photo-ingest";
  inherit (pyproject.project) version;
  pyproject = true;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../python
      ../tests
    ];
  };
  sourceRoot = "source/python";

  build-system = [ python3Packages.setuptools ];
  # psycopg from nixpkgs uses nixpkgs' libpq (the pip `binary` extra is for pip users).
  dependencies = with python3Packages; [
    psycopg
    pyexiftool
    pyudev
    duckdb
    aiohttp
    prometheus-client
    watchdog
  ];

  # exiftool reads the metadata; mount, umount and blkid handle the card.
  makeWrapperArgs = [
    "--prefix PATH : ${
      lib.makeBinPath [
        exiftool
        util-linux
      ]
    }"
  ];

  postInstall = ''
    site=$out/${python3Packages.python.sitePackages}/photo_ingest
    mkdir -p $out/lib/systemd/system
    for unit in $site/systemd/*.service $site/systemd/*.timer; do
      substitute "$unit" "$out/lib/systemd/system/$(basename "$unit")" \
        --replace-quiet "@bindir@" "$out/bin"
    done
    if grep -rl "@bindir@" $out/lib/systemd/system; then
      echo "a unit still names @bindir@" >&2
      exit 1
    fi
    install -Dm644 $site/systemd/90-photo-ingest.rules $out/lib/udev/rules.d/90-photo-ingest.rules
    install -Dm644 $site/dashboards/photo-ingest.json $out/share/photo-ingest/grafana/photo-ingest.json
    install -Dm644 $site/dashboards/alerts.yml $out/share/photo-ingest/prometheus/alerts.yml
  '';

  pythonImportsCheck = [ "photo_ingest" ];

  inherit doCheck;
  nativeCheckInputs = with python3Packages; [
    pytestCheckHook
    pytest-timeout
    pyyaml
    pillow
    openapi-core
    hypothesis
    exiftool
    util-linux
    postgresql
  ];
  # The suite lives beside python/; its conftest starts a throwaway PostgreSQL.
  preCheck = ''
    cd ..
    export HOME=$TMPDIR
  '';
  pytestFlags = [
    "-m"
    "not vm"
    "-p"
    "no:cacheprovider"
  ];
  enabledTestPaths = [ "tests" ];
  disabledTestPaths = [
    "tests/test_lint.py" # ruff and mypy: the development shell's job
    "tests/test_vm.py" # boots a Debian guest with qemu
    "tests/test_fake_immich.py" # runs the official Immich CLI from npm
    "tests/test_nix.py" # needs Nix itself
    # FUSE cards (mfusepy, fusefat, exfat-fuse): no /dev/fuse in the build sandbox
    "tests/test_faults_card.py"
    "tests/test_hostile_filesystems.py"
  ];

  meta = {
    description = "Headless photo ingest server: verified one-pass card copy, PostgreSQL catalog, Immich sync";
    homepage = "https://github.com/photo-ingest/photo-ingest";
    license = lib.licenses.mit;
    mainProgram = "photo-ingest";
    platforms = lib.platforms.linux;
  };
}
