# The few pkgs attributes the module uses, as plain values the tests can look into.
{
  lib,
  cudaSupport ? false,
}:
let
  drv = name: {
    type = "derivation";
    inherit name;
    pname = name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };
  # TOML has no null: the type rejects it, so a null leaking into settings fails the tests.
  tomlValue =
    with lib.types;
    oneOf [
      bool
      int
      float
      str
      (attrsOf tomlValue)
      (listOf tomlValue)
    ];
in
{
  inherit drv;
  photo-ingest = drv "photo-ingest";
  config = { inherit cudaSupport; };
  formats.toml = _: {
    type = tomlValue;
    generate = name: value: {
      tomlFile = name;
      inherit value;
    };
  };
  writeTextDir = path: text: { inherit path text; };
}
