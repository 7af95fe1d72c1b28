# The type of a secret file option: an absolute path given as a string, so the secret is read
# at run time (LoadCredential=) and never copied into the world-readable Nix store, which a
# path literal (./key) would be.
lib:
lib.types.nullOr (
  lib.types.strMatching "/.*"
  // {
    description = "absolute path (a string, not a Nix path literal)";
  }
)
