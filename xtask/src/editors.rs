//! The editors and language servers the editor suite (`runner-cli/tests/editors.rs`)
//! drives, from the registries users get them from:
//! - Debian's neovim, emacs-nox with elpa-eglot, clangd, gopls (and go, which gopls
//!   asks about every package), node and npm;
//! - npm's typescript-language-server (with typescript 5: 7 ships no `tsserver.js`)
//!   and bash-language-server, under `target/test-tools/npm`;
//! - PyPI's python-lsp-server and pytest-lsp in a venv, `target/test-tools/venv`
//!   (cattrs below 25: newer ones cannot read lsprotocol's unions, and every answer
//!   to `initialize` fails to parse);
//! - an image holding node and the npm servers at the paths they have here, so file
//!   URIs mean the same inside and out.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{apt, engines_required, find_on_path, on_path, root, run, Result};

/// The image of node and the npm language servers.
pub(crate) const NODE_IMAGE: &str = "runner-test/node:latest";

/// Where the npm and PyPI tools go (the suite reads `RUNNER_TEST_TOOLS`).
pub(crate) fn tools_dir() -> PathBuf {
    root().join("target/test-tools")
}

/// Installs what the editor suite needs, or says loudly why it will skip (fails
/// under `RUNNER_REQUIRE_ENGINES=1`).
pub(crate) fn provision_editors() -> Result {
    let why = match install() {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    if engines_required() {
        return Err(format!(
            "RUNNER_REQUIRE_ENGINES=1 but the editor suite cannot run: {why}"
        ));
    }
    eprintln!("xtask: WARNING: the editor suite will be SKIPPED: {why}");
    Ok(())
}

fn install() -> Result {
    let mut wanted = Vec::new();
    for (program, package) in [
        ("nvim", "neovim"),
        ("emacs", "emacs-nox"),
        ("clangd", "clangd"),
        ("gopls", "gopls"),
        ("go", "golang-go"),
        ("node", "nodejs"),
        ("npm", "npm"),
    ] {
        if !on_path(program) {
            wanted.push(package);
        }
    }
    if apt::installed_version("elpa-eglot").is_none() {
        wanted.push("elpa-eglot");
    }
    apt::install_as_root(&wanted)?;
    let tools = tools_dir();
    let npm = tools.join("npm");
    let modules = npm.join("node_modules");
    if !modules.join(".bin/typescript-language-server").exists()
        || !modules.join(".bin/bash-language-server").exists()
        || !modules.join("typescript/lib/tsserver.js").exists()
    {
        run(
            "npm install of typescript-language-server and bash-language-server",
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
                .arg("--prefix")
                .arg(&npm)
                .args([
                    "typescript@5",
                    "typescript-language-server@5",
                    "bash-language-server@5",
                ]),
        )?;
    }
    let venv = tools.join("venv");
    let python = venv.join("bin/python");
    let ready = Command::new(&python)
        .args(["-c", "import pylsp, pytest_lsp"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ready {
        let _ = std::fs::remove_dir_all(&venv);
        run(
            "python3 -m venv for the PyPI tools",
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
        )?;
        run(
            "pip install of python-lsp-server and pytest-lsp",
            Command::new(venv.join("bin/pip")).args([
                "install",
                "-q",
                "python-lsp-server",
                "pytest-lsp==1.0.*",
                "cattrs<25",
            ]),
        )?;
    }
    for (what, program, args) in [
        ("neovim", PathBuf::from("nvim"), &["--version"][..]),
        ("emacs", PathBuf::from("emacs"), &["--version"][..]),
        ("clangd", PathBuf::from("clangd"), &["--version"][..]),
        ("gopls", PathBuf::from("gopls"), &["version"][..]),
        ("node", PathBuf::from("node"), &["--version"][..]),
        (
            "typescript-language-server",
            modules.join(".bin/typescript-language-server"),
            &["--version"][..],
        ),
        (
            "bash-language-server",
            modules.join(".bin/bash-language-server"),
            &["--version"][..],
        ),
        ("pylsp", venv.join("bin/pylsp"), &["--version"][..]),
        (
            "pytest-lsp",
            venv.join("bin/pip"),
            &["show", "pytest-lsp"][..],
        ),
    ] {
        let out = Command::new(&program)
            .args(args)
            .output()
            .map_err(|e| format!("{what} ({}) does not run: {e}", program.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let first = text
            .lines()
            .find(|l| l.starts_with("Version") || !l.contains(':'))
            .or_else(|| text.lines().next())
            .unwrap_or("");
        if !out.status.success() {
            return Err(format!("{what} --version failed: {}", out.status));
        }
        eprintln!("xtask: {what}: {}", first.trim());
    }
    Ok(())
}

/// Builds [`NODE_IMAGE`] when the npm servers are installed: busybox, node and the
/// libraries it loads, `/usr/bin/env` (the servers' `#!/usr/bin/env node`), and the
/// npm tree at its path here.
pub(crate) fn build_node_image(busybox_root: &Path) -> Result {
    let npm = tools_dir().join("npm");
    if !npm.join("node_modules/.bin/bash-language-server").exists() {
        return Ok(());
    }
    let node = find_on_path("node")
        .and_then(|p| p.canonicalize().ok())
        .ok_or("node is not on PATH")?;
    let image = root().join("target/xtask-node-image");
    let _ = std::fs::remove_dir_all(&image);
    run(
        "copy of the busybox root for the node image",
        Command::new("cp").arg("-a").arg(busybox_root).arg(&image),
    )?;
    let ldd = Command::new("ldd")
        .arg(&node)
        .output()
        .map_err(|e| format!("failed to run ldd on node: {e}"))?;
    let libraries: Vec<PathBuf> = String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .collect();
    let copy_to_image = |from: &Path, to: &Path| -> Result {
        let inside = image.join(to.strip_prefix("/").unwrap_or(to));
        if let Some(dir) = inside.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("failed to create {}: {e}", dir.display()))?;
        }
        std::fs::copy(from, &inside)
            .map(|_| ())
            .map_err(|e| format!("failed to copy {} into the image: {e}", from.display()))
    };
    copy_to_image(&node, Path::new("/usr/bin/node"))?;
    for library in &libraries {
        copy_to_image(library, library)?;
    }
    let _ = std::os::unix::fs::symlink("/bin/busybox", image.join("usr/bin/env"));
    let inside = image.join(npm.strip_prefix("/").unwrap_or(&npm));
    if let Some(dir) = inside.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("failed to create {}: {e}", dir.display()))?;
    }
    run(
        "copy of the npm servers into the node image",
        Command::new("cp").arg("-a").arg(&npm).arg(&inside),
    )?;
    let script = format!(
        "tar -C '{}' -c . | docker import --change 'ENV PATH=/usr/bin:/bin' - {NODE_IMAGE} >/dev/null",
        image.display()
    );
    run(
        "docker import of the node image",
        Command::new("sh").args(["-c", &script]),
    )?;
    let _ = std::fs::remove_dir_all(&image);
    Ok(())
}
