{
  description = "photo-ingest: headless photo ingest server (camera card -> verified library -> PostgreSQL catalog -> Immich)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      # x86_64 servers and the Raspberry Pi.
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      vmTest = pkgs: file: pkgs.testers.runNixOSTest (import file { photoIngest = self; });
    in
    {
      overlays.default = final: _prev: {
        photo-ingest = final.callPackage ./nix/package.nix { };
      };

      packages = forAllSystems (pkgs: rec {
        photo-ingest = pkgs.callPackage ./nix/package.nix { };
        default = photo-ingest;
      });

      nixosModules.photo-ingest =
        { pkgs, ... }:
        {
          imports = [ ./nix/module.nix ];
          services.photo-ingest.package =
            lib.mkDefault
              self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };
      nixosModules.default = self.nixosModules.photo-ingest;

      checks = forAllSystems (
        pkgs:
        let
          eval = import ./tests/nix { inherit lib; };
        in
        {
          # The pytest suite in the build sandbox (PostgreSQL and exiftool from nixpkgs).
          package-tests = self.packages.${pkgs.stdenv.hostPlatform.system}.default.override {
            doCheck = true;
          };
          # tests/nix: the module evaluated with lib.evalModules, as tests/nix/run does.
          module-eval =
            if eval.failed == [ ] then
              pkgs.writeText "module-eval" "${toString eval.passed} of ${toString eval.total} passed\n"
            else
              throw "module evaluation tests failed: ${builtins.toJSON eval.failed}";
          # NixOS VM tests (tests/nixos/).
          vm-card = vmTest pkgs ./tests/nixos/card.nix;
          vm-immich = vmTest pkgs ./tests/nixos/immich.nix;
          vm-metrics = vmTest pkgs ./tests/nixos/metrics.nix;
        }
      );

      devShells = forAllSystems (pkgs: {
        # python -m pytest tests / photo-ingest from the source tree, with nixpkgs' libraries.
        default = pkgs.mkShell {
          packages = with pkgs; [
            (python3.withPackages (
              ps: with ps; [
                psycopg
                pyexiftool
                pyudev
                duckdb
                aiohttp
                prometheus-client
                watchdog
                setuptools
                pytest
                pytest-timeout
                hypothesis
                pyyaml
                pillow
                openapi-core
                mypy
              ]
            ))
            exiftool
            postgresql
            ruff
            nixfmt
          ];
          shellHook = ''
            export PYTHONPATH=$PWD/python/src''${PYTHONPATH:+:$PYTHONPATH}
          '';
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixfmt-tree);
    };
}
