//! The test flakes and helpers the nix suites share.
#![allow(dead_code)]

use std::path::PathBuf;

use runner_core::{CaptureSink, Error, ExitStatus, RunnerEnvironment};
use runner_nix::{check_nix_installed, NixEnvironment, NixError};

/// Skips (loudly) when nix is missing, unless engines are required.
pub fn nix_available() -> bool {
    runner_core::testing::engine_gate("nix", check_nix_installed())
}

pub struct Flake {
    pub tmp: tempfile::TempDir,
}

pub const SHELL: &str = r#"builtins.derivation {
      name = "test-shell";
      system = "SYSTEM";
      builder = "/bin/bash";
      outputs = [ "out" ];
      PATH = "TOOLS";
      GREETING = "GREETING_VALUE";
      MULTI = "line1\nline2=x";
      shellHook = "export HOOKED=yes; export HOOK_PATH_SEEN=$PATH";
    }"#;

impl Flake {
    pub fn new(greeting: &str) -> Flake {
        let tmp = tempfile::tempdir().unwrap();
        let f = Flake { tmp };
        std::fs::create_dir_all(f.dir()).unwrap();
        std::fs::create_dir_all(f.tools()).unwrap();
        std::fs::create_dir_all(f.tmp.path().join("state")).unwrap();
        for (name, body) in [
            ("mytool", "#!/bin/sh\necho shell-tool \"$@\"\n"),
            // Also on the host as /usr/bin/uname: the shell's must win.
            ("uname", "#!/bin/sh\necho shell-uname\n"),
        ] {
            let p = f.tools().join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
        }
        std::fs::write(
            f.tmp.path().join("registry.json"),
            r#"{"flakes":[],"version":2}"#,
        )
        .unwrap();
        f.write_shell(&SHELL.replace("GREETING_VALUE", greeting));
        f
    }

    pub fn dir(&self) -> PathBuf {
        self.tmp.path().join("flake")
    }

    pub fn tools(&self) -> PathBuf {
        self.tmp.path().join("tools")
    }

    pub fn cache(&self) -> PathBuf {
        self.tmp.path().join("cache")
    }

    pub fn write_shell(&self, shell: &str) {
        let system = format!("{}-linux", std::env::consts::ARCH);
        let shell = shell
            .replace("SYSTEM", &system)
            .replace("TOOLS", self.tools().to_str().unwrap());
        let flake = format!(
            "{{\n  outputs = {{ self }}: {{\n    devShells.{system}.default = {shell};\n  }};\n}}\n"
        );
        std::fs::write(self.dir().join("flake.nix"), flake).unwrap();
    }

    pub fn env(&self) -> NixEnvironment {
        let mut env = NixEnvironment::new(self.dir()).unwrap();
        env.with_nix_option("substituters", "")
            .with_nix_option(
                "flake-registry",
                self.tmp.path().join("registry.json").to_str().unwrap(),
            )
            .with_nix_option("sandbox", "false")
            .with_state_dir(self.tmp.path().join("state"));
        // No cache unless a test asks for one (the default is the user's).
        env.without_cache();
        env
    }

    pub fn cached_env(&self) -> NixEnvironment {
        let mut env = self.env();
        env.with_cache_dir(self.cache());
        env
    }

    pub fn records(&self) -> usize {
        std::fs::read_dir(self.tmp.path().join("state/runs"))
            .map(|rd| {
                rd.filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .ends_with(".json")
                })
                .count()
            })
            .unwrap_or(0)
    }
}

pub async fn output(env: &NixEnvironment, bin: &str, args: &[&str]) -> (ExitStatus, String) {
    let mut p = env.new_process(bin, args).await.unwrap();
    let cap = CaptureSink::new();
    p.with_output(cap.clone());
    let status = p.run().await.unwrap();
    (status, cap.stdout_string())
}

pub const PROBE: &str = "printf '%s|%s|%s|' \"$GREETING\" \"$HOOKED\" \"$MULTI\"; uname; mytool a";

pub fn nix_error(e: &Error) -> &NixError {
    match e {
        Error::Backend { source, .. } => source.downcast_ref::<NixError>().expect("a NixError"),
        other => panic!("expected a backend error, got {other:?}"),
    }
}
