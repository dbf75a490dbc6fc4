//! ARCHITECTURE.md stays true where it can be checked: every file path it names
//! (`crate/src/file.rs` in backticks) exists, and it stays a map (at most 8 KiB):
//! mechanism goes to module docs and `docs/design/`.

use crate::Result;

/// The most ARCHITECTURE.md may hold.
const MAP_LIMIT: usize = 8 * 1024;

/// Fails naming the paths ARCHITECTURE.md names that do not exist, or when it has
/// grown past [`MAP_LIMIT`].
pub(crate) fn check_architecture_paths() -> Result {
    let root = crate::root();
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md"))
        .map_err(|e| format!("failed to read ARCHITECTURE.md: {e}"))?;
    if text.len() > MAP_LIMIT {
        return Err(format!(
            "ARCHITECTURE.md is {} bytes, over its {MAP_LIMIT}: it is a map; move mechanism into module docs or docs/design/",
            text.len()
        ));
    }
    let missing: Vec<&str> = named_paths(&text)
        .into_iter()
        .filter(|p| !root.join(p).exists())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "ARCHITECTURE.md names paths that do not exist: {}",
        missing.join(", ")
    ))
}

/// The backticked spans of `text` that are paths inside the workspace: with a `/` and
/// a file extension, no spaces.
fn named_paths(text: &str) -> Vec<&str> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| {
            span.contains('/')
                && !span.contains(char::is_whitespace)
                && !span.starts_with('$')
                && span.rsplit('/').next().is_some_and(|f| f.contains('.'))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_backticked_file_paths_count() {
        let text = "a `runner-core/src/os/mod.rs` b `docs/design/` c `$RUNNER_STATE_DIR/runs` \
                    d `cargo xtask test` e `x/y.rs`";
        assert_eq!(named_paths(text), ["runner-core/src/os/mod.rs", "x/y.rs"]);
    }
}
