//! Turning `nix print-dev-env --json` into the variables a process gets.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};

use runner_core::OsEnv;

use serde::{Deserialize, Serialize};

use crate::NixError;

/// Variables Nix itself never applies from a dev shell, plus those that describe the
/// builder rather than the shell.
pub const IGNORED: &[&str] = &[
    "BASHOPTS",
    "HOME",
    "NIX_BUILD_TOP",
    "NIX_ENFORCE_PURITY",
    "NIX_LOG_FD",
    "NIX_REMOTE",
    "PPID",
    "SHELLOPTS",
    "SSL_CERT_FILE",
    "TEMP",
    "TEMPDIR",
    "TERM",
    "TMP",
    "TMPDIR",
    "TZ",
    "UID",
    "SHELL",
    "PWD",
    "OLDPWD",
    "SHLVL",
    "out",
    "outputs",
    "name",
    "src",
    "_",
];

#[derive(Debug, Deserialize)]
struct PrintDevEnv {
    variables: BTreeMap<String, DevVar>,
    #[serde(default, rename = "bashFunctions")]
    bash_functions: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct DevVar {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    value: serde_json::Value,
}

/// What a dev shell adds to the host environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellEnv {
    /// Variables the shell sets (its exported scalars and what its shellHook exports),
    /// except `PATH`.
    pub vars: BTreeMap<String, String>,
    /// The shell's `PATH` entries, which go before the host's.
    pub path: String,
}

impl ShellEnv {
    /// The full environment of a process: `host`, then the shell's variables, with the
    /// shell's `PATH` in front of the host's.
    ///
    /// The host's variables keep their bytes, UTF-8 or not.
    pub fn over(&self, host: &OsEnv) -> OsEnv {
        let mut env = host.clone();
        for (k, v) in &self.vars {
            env.insert(k.into(), v.into());
        }
        let path = match host.get(OsStr::new("PATH")).filter(|p| !p.is_empty()) {
            Some(host_path) if !self.path.is_empty() => {
                let mut path = OsString::from(&self.path);
                path.push(":");
                path.push(host_path);
                path
            }
            Some(host_path) => host_path.clone(),
            None => self.path.clone().into(),
        };
        env.insert("PATH".into(), path);
        env
    }

    /// Derives what the shell added from the environment a probe captured after
    /// running the shellHook over `host`.
    pub fn from_capture(host: &OsEnv, captured: &BTreeMap<String, String>) -> Self {
        let vars = captured
            .iter()
            .filter(|(k, v)| {
                k.as_str() != "PATH"
                    && !IGNORED.contains(&k.as_str())
                    // The probe's own group token, not the shell's.
                    && k.as_str() != runner_native::GROUP_TOKEN_VAR
                    && host.get(OsStr::new(k.as_str())).map(|h| h.as_os_str())
                        != Some(OsStr::new(v.as_str()))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let full = captured.get("PATH").cloned().unwrap_or_default();
        let host_path = host.get(OsStr::new("PATH")).and_then(|p| p.to_str());
        let path = match host_path.filter(|p| !p.is_empty()) {
            Some(host_path) if full == host_path => String::new(),
            Some(host_path) => full
                .strip_suffix(host_path)
                .map(|p| p.trim_end_matches(':').to_string())
                .unwrap_or(full),
            None => full,
        };
        ShellEnv { vars, path }
    }
}

/// The parts of `print-dev-env --json` a probe needs.
#[derive(Debug, Clone, Default)]
pub struct DevShell {
    /// Exported scalar variables, minus [`IGNORED`].
    pub exported: BTreeMap<String, String>,
    /// Bash functions the shell defines (its hook may call them).
    pub functions: BTreeMap<String, String>,
}

impl DevShell {
    /// Parses `nix print-dev-env --json` output.
    pub fn parse(json: &[u8]) -> Result<DevShell, NixError> {
        let dev: PrintDevEnv =
            serde_json::from_slice(json).map_err(|e| NixError::Parse(e.to_string()))?;
        let exported = dev
            .variables
            .into_iter()
            .filter(|(k, v)| v.kind == "exported" && !IGNORED.contains(&k.as_str()))
            .filter_map(|(k, v)| match v.value {
                serde_json::Value::String(s) => Some((k, s)),
                _ => None,
            })
            .collect();
        Ok(DevShell {
            exported,
            functions: dev.bash_functions,
        })
    }

    /// The environment the probe starts from: host, the shell's scalars, the shell's
    /// `PATH` first.
    pub fn probe_env(&self, host: &OsEnv) -> OsEnv {
        let mut vars = self.exported.clone();
        let path = vars.remove("PATH").unwrap_or_default();
        ShellEnv { vars, path }.over(host)
    }

    /// A bash script that defines the shell's functions, runs its shellHook and prints
    /// every exported variable as `KEY=VALUE\0`.
    pub fn probe_script(&self) -> String {
        let mut script = String::new();
        for (name, body) in &self.functions {
            script.push_str(&format!("{name} ()\n{{\n{body}\n}}\n"));
        }
        script.push_str("eval \"${shellHook:-}\" >&2\n");
        script.push_str(
            "for __runner_v in $(compgen -e); do printf '%s=%s\\0' \"$__runner_v\" \"${!__runner_v}\"; done\n",
        );
        script
    }
}

/// Parses `KEY=VALUE\0` records.
pub fn parse_nul_env(bytes: &[u8]) -> BTreeMap<String, String> {
    bytes
        .split(|b| *b == 0)
        .filter_map(|rec| {
            let s = std::str::from_utf8(rec).ok()?;
            let (k, v) = s.split_once('=')?;
            (!k.is_empty()).then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn os(pairs: &[(&str, &str)]) -> OsEnv {
        pairs.iter().map(|(k, v)| (k.into(), v.into())).collect()
    }

    #[test]
    fn parses_only_exported_scalars_and_skips_the_ignore_list() {
        let json = br#"{"bashFunctions":{"hello":"echo hi"},"variables":{
            "GREETING":{"type":"exported","value":"hi"},
            "HOME":{"type":"exported","value":"/homeless-shelter"},
            "TMPDIR":{"type":"exported","value":"/tmp/x"},
            "LOCAL":{"type":"var","value":"no"},
            "ARR":{"type":"array","value":["a"]},
            "PATH":{"type":"exported","value":"/shell/bin"}}}"#;
        let dev = DevShell::parse(json).unwrap();
        assert_eq!(
            dev.exported,
            map(&[("GREETING", "hi"), ("PATH", "/shell/bin")])
        );
        assert_eq!(dev.functions["hello"], "echo hi");
        let env = dev.probe_env(&os(&[("PATH", "/usr/bin"), ("HOME", "/root")]));
        assert_eq!(env[OsStr::new("PATH")], "/shell/bin:/usr/bin");
        assert_eq!(env[OsStr::new("HOME")], "/root");
        assert!(matches!(DevShell::parse(b"{"), Err(NixError::Parse(_))));
    }

    #[test]
    fn capture_keeps_what_the_shell_added() {
        let host = os(&[("PATH", "/usr/bin"), ("HOME", "/root"), ("KEEP", "same")]);
        let captured = map(&[
            ("PATH", "/hook/bin:/shell/bin:/usr/bin"),
            ("HOME", "/root"),
            ("KEEP", "same"),
            ("HOOKED", "yes"),
            ("SHLVL", "1"),
            ("RUNNER_GROUP_TOKEN", "the-probe's"),
        ]);
        let shell = ShellEnv::from_capture(&host, &captured);
        assert_eq!(shell.vars, map(&[("HOOKED", "yes")]));
        assert_eq!(shell.path, "/hook/bin:/shell/bin");
        let mut later_host = os(&[("PATH", "/bin"), ("HOME", "/h")]);
        let odd: OsString = std::os::unix::ffi::OsStringExt::from_vec(b"\xff\xfe".to_vec());
        later_host.insert("ODD".into(), odd.clone());
        let env = shell.over(&later_host);
        assert_eq!(env[OsStr::new("PATH")], "/hook/bin:/shell/bin:/bin");
        assert_eq!(env[OsStr::new("HOOKED")], "yes");
        assert_eq!(env[OsStr::new("HOME")], "/h");
        assert_eq!(env[OsStr::new("ODD")], odd);
    }

    #[test]
    fn nul_records() {
        let env = parse_nul_env(b"A=1\0B=x=y\nz\0bad\0");
        assert_eq!(env, map(&[("A", "1"), ("B", "x=y\nz")]));
    }
}
