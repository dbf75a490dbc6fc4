//! Is nix here, and how would one get it.

use std::path::PathBuf;

/// True when a `nix` binary is on `PATH`.
pub fn check_nix_installed() -> bool {
    nix_binary().is_some()
}

/// The `nix` binary on `PATH`, if any.
pub fn nix_binary() -> Option<PathBuf> {
    which::which("nix").ok()
}

/// True on the operating systems Nix supports (Linux and macOS).
pub fn is_nix_supported() -> bool {
    cfg!(any(target_os = "linux", target_os = "macos"))
}

/// The command that installs Nix on this operating system.
pub fn nix_install_command() -> &'static str {
    if cfg!(target_os = "macos") {
        "curl -L https://nixos.org/nix/install | sh"
    } else if std::path::Path::new("/etc/debian_version").exists() {
        "sudo apt-get install -y nix-bin"
    } else {
        "sh <(curl -L https://nixos.org/nix/install) --daemon"
    }
}
