# The filesystems the packaged 90-photo-ingest.rules accepts (its ENV{ID_FS_TYPE} list).
[
  "vfat"
  "exfat"
  "ntfs"
  "ntfs3"
  "ext4"
  "ext3"
  "ext2"
  "hfsplus"
  "btrfs"
  "xfs"
]
