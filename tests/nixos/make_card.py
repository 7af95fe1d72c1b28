"""Build the NixOS VM tests' camera card at build time: a partitioned FAT32 image with real
JPEGs (EXIF written by exiftool), made by the same code as the Debian VM test's cards
(tests/vm/card.py), and expected.json: what the library, the catalog and Immich must get.

    python3 make_card.py TESTS_DIR OUT_DIR
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, sys.argv[1])

from vm.card import build, photo

LABEL = "EOS_DIGITAL"
SHOTS = [
    ("DCIM/100CANON/IMG_0001.JPG", "2024:06:01 09:15:03"),
    ("DCIM/100CANON/IMG_0002.JPG", "2024:06:01 09:16:40"),
    ("DCIM/100CANON/IMG_0003.JPG", "2024:06:01 17:02:11"),
]


def main() -> None:
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        specs = [photo(rel, when, seed) for seed, (rel, when) in enumerate(SHOTS, 1)]
        card = build(Path(work) / "card.img", specs, size_mb=64, label=LABEL,
                     volume_id="1a2b3c4d")
        shutil.copyfile(card.image, out / "card.img")
    expected = {
        "label": card.label,
        "uuid": card.uuid,
        "album": f"{LABEL} 2024-06-01",
        "files": [{"name": Path(f.relpath).name, "library_path": f.library_path,
                   "sha1": f.sha1, "size": f.size} for f in card.files],
    }
    (out / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")


if __name__ == "__main__":
    main()
