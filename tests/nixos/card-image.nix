# The VM tests' camera card, built at build time by make_card.py (real JPEGs with EXIF, a
# partitioned FAT32 image, no loop devices) with the project's own card generator.
{
  lib,
  runCommand,
  python3,
  exiftool,
  dosfstools,
  mtools,
}:
let
  generator = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../vm/__init__.py
      ../vm/card.py
      ../support
    ];
  };
in
runCommand "photo-ingest-test-card"
  {
    nativeBuildInputs = [
      (python3.withPackages (ps: [ ps.pillow ]))
      exiftool
      dosfstools
      mtools
    ];
  }
  ''
    python3 ${./make_card.py} ${generator} $out
  ''
