//! Images: presence checks and pulls with progress.

use futures_util::StreamExt;

use crate::engine::Found;
use crate::{DockerError, Engine, EngineError};

/// What one layer of a pull is doing, in the order a layer goes through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum LayerPhase {
    /// Announced, not started ("Pulling fs layer", "Waiting").
    Waiting,
    /// Bytes arriving.
    Downloading,
    /// Downloaded; the checksum is being verified.
    Verifying,
    /// Downloaded and verified, waiting to be extracted.
    Downloaded,
    /// Being unpacked into the engine's storage.
    Extracting,
    /// Done ("Pull complete").
    Complete,
    /// The engine already had it.
    AlreadyExists,
}

impl LayerPhase {
    /// The phase, as `docker pull` would say it (lower case).
    pub fn as_str(self) -> &'static str {
        match self {
            LayerPhase::Waiting => "waiting",
            LayerPhase::Downloading => "downloading",
            LayerPhase::Verifying => "verifying",
            LayerPhase::Downloaded => "downloaded",
            LayerPhase::Extracting => "extracting",
            LayerPhase::Complete => "complete",
            LayerPhase::AlreadyExists => "already exists",
        }
    }

    fn of(status: &str) -> Option<LayerPhase> {
        Some(match status {
            "Pulling fs layer" | "Waiting" => LayerPhase::Waiting,
            "Downloading" => LayerPhase::Downloading,
            "Verifying Checksum" => LayerPhase::Verifying,
            "Download complete" => LayerPhase::Downloaded,
            "Extracting" => LayerPhase::Extracting,
            "Pull complete" => LayerPhase::Complete,
            "Already exists" => LayerPhase::AlreadyExists,
            _ => return None,
        })
    }

    /// True once the layer needs nothing more.
    pub fn is_done(self) -> bool {
        matches!(self, LayerPhase::Complete | LayerPhase::AlreadyExists)
    }
}

/// One layer of a pull. Bytes never go backwards within a phase: the engine's
/// figures are kept as a high-water mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerProgress {
    /// The layer's short id, as the engine reports it.
    pub id: String,
    /// What it is doing.
    pub phase: LayerPhase,
    /// Bytes done in this phase (downloaded, or extracted).
    pub done: u64,
    /// The phase's total in bytes, once the engine has said it.
    pub total: Option<u64>,
    /// The layer's download size, once known (kept through the later phases).
    pub size: Option<u64>,
}

/// The state of a pull, reported after every message of the pull stream that
/// changed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullProgress {
    /// The layers, in the order the engine first named them.
    pub layers: Vec<LayerProgress>,
    /// The index in `layers` of the layer this message changed, if it was about one.
    pub changed: Option<usize>,
    /// True when the changed layer entered a new phase (not only more bytes).
    pub phase_changed: bool,
    /// The engine's last message not about a layer ("Pulling from …", "Digest: …").
    pub status: Option<String>,
}

impl PullProgress {
    /// Bytes downloaded over all layers, and the total of the layers whose size is
    /// known. Never decreases as the pull goes on.
    pub fn downloaded(&self) -> (u64, u64) {
        self.layers.iter().fold((0, 0), |(done, total), l| {
            let size = l.size.unwrap_or(0);
            let got = match l.phase {
                LayerPhase::Waiting => 0,
                LayerPhase::Downloading => l.done,
                LayerPhase::AlreadyExists => 0,
                _ => size,
            };
            (done + got, total + size)
        })
    }

    /// Applies one message of the pull stream; false when it changed nothing.
    fn apply(&mut self, id: Option<&str>, status: &str, bytes: Option<(u64, Option<u64>)>) -> bool {
        let (Some(id), Some(phase)) = (id, LayerPhase::of(status)) else {
            if status.is_empty() || self.status.as_deref() == Some(status) {
                return false;
            }
            self.status = Some(status.to_string());
            self.changed = None;
            self.phase_changed = false;
            return true;
        };
        let known = self.layers.iter().position(|l| l.id == id);
        let index = match known {
            Some(i) => i,
            None => {
                self.layers.push(LayerProgress {
                    id: id.to_string(),
                    phase,
                    done: 0,
                    total: None,
                    size: None,
                });
                self.layers.len() - 1
            }
        };
        let layer = &mut self.layers[index];
        let before = layer.clone();
        // A late "Downloading" after "Download complete" (the engine's messages are
        // not ordered across its goroutines) must not move the layer back.
        if phase > layer.phase {
            layer.phase = phase;
            layer.done = 0;
            layer.total = None;
        }
        if phase == layer.phase {
            if let Some((done, total)) = bytes {
                layer.done = layer.done.max(done);
                if let Some(total) = total.filter(|t| *t > 0) {
                    layer.total = Some(layer.total.map_or(total, |t| t.max(total)));
                    if phase == LayerPhase::Downloading {
                        layer.size = Some(layer.total.unwrap_or(total));
                    }
                }
            }
        }
        let changed = known.is_none() || *layer != before;
        self.phase_changed = known.is_none() || layer.phase != before.phase;
        self.changed = Some(index);
        changed
    }
}

/// True when `image` (a tag or a digest reference) is present in the engine.
pub async fn image_exists(engine: &Engine, image: &str) -> Result<bool, DockerError> {
    Ok(engine.inspect_image(image).await.found()?.is_some())
}

/// `image` as the engine describes it; one it does not have is
/// [`DockerError::ImageUnavailable`].
pub(crate) async fn inspect(
    engine: &Engine,
    image: &str,
) -> Result<bollard::models::ImageInspect, DockerError> {
    engine
        .inspect_image(image)
        .await
        .map_err(|e| DockerError::ImageUnavailable {
            image: image.to_string(),
            reason: None,
            source: Some(e.into_source()),
        })
}

/// The image's id (`sha256:...`).
pub async fn image_id(engine: &Engine, image: &str) -> Result<String, DockerError> {
    let info = inspect(engine, image).await?;
    info.id.ok_or_else(|| DockerError::ImageUnavailable {
        image: image.to_string(),
        reason: Some("the engine reported no id".into()),
        source: None,
    })
}

/// Makes sure `image` is present (pulling it if needed) and returns its `ENV`.
pub(crate) async fn ensure_image_env(
    engine: &Engine,
    image: &str,
) -> Result<Vec<String>, DockerError> {
    let inspected = match engine.inspect_image(image).await.found()? {
        Some(i) => i,
        None => {
            get_image_if_not_present(engine, image, |_| {}).await?;
            inspect(engine, image).await?
        }
    };
    Ok(inspected.config.and_then(|c| c.env).unwrap_or_default())
}

/// Pulls `image` unless it is present, with the user's credentials for its registry
/// (see [`crate::registry_of`]), calling `progress` whenever the pull's state changes.
/// An error in the pull stream is returned, never swallowed; a registry that refuses
/// is [`DockerError::Unauthorized`].
pub async fn get_image_if_not_present(
    engine: &Engine,
    image: &str,
    mut progress: impl FnMut(&PullProgress),
) -> Result<(), DockerError> {
    if image_exists(engine, image).await? {
        return Ok(());
    }
    let registry = crate::credentials::registry_of(image);
    let credentials = crate::credentials::credentials_for(&registry).await?;
    let had_credentials = credentials.is_some();
    let failed = |reason: String, source: Option<EngineError>| {
        if refused(&reason) {
            DockerError::Unauthorized {
                image: image.to_string(),
                registry: registry.clone(),
                had_credentials,
                reason,
            }
        } else {
            // The engine's words are either the reason or in the source, not both.
            DockerError::ImageUnavailable {
                image: image.to_string(),
                reason: (source.is_none() && !reason.is_empty()).then_some(reason),
                source,
            }
        }
    };
    tracing::info!(image, "pulling the image");
    let mut state = PullProgress::default();
    let mut stream = std::pin::pin!(engine.pull(image, credentials));
    while let Some(item) = stream.next().await {
        let info = match item {
            Ok(info) => info,
            // The engine answered with a refusal, up front or inside the stream:
            // its words decide which error.
            Err(e) if e.answered() || e.in_stream() => {
                let message = e.message();
                return Err(failed(message, Some(e.into_source())));
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(detail) = info.error_detail {
            return Err(failed(
                detail.message.unwrap_or_else(|| "pull failed".into()),
                None,
            ));
        }
        let bytes = info.progress_detail.as_ref().map(|d| {
            (
                d.current.unwrap_or(0).max(0) as u64,
                d.total.map(|t| t.max(0) as u64),
            )
        });
        if state.apply(
            info.id.as_deref(),
            info.status.as_deref().unwrap_or_default(),
            bytes,
        ) {
            progress(&state);
        }
    }
    if image_exists(engine, image).await? {
        Ok(())
    } else {
        Err(failed("the pull ended without the image".into(), None))
    }
}

/// True when the engine's words say the registry refused for want of credentials.
fn refused(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "no basic auth credentials",
        "unauthorized",
        "authentication required",
        "denied",
    ]
    .iter()
    .any(|w| m.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_bytes_and_phases_never_go_backwards() {
        let mut p = PullProgress::default();
        assert!(p.apply(Some("a"), "Pulling fs layer", None));
        assert!(p.apply(Some("b"), "Pulling fs layer", None));
        assert!(p.apply(Some("a"), "Downloading", Some((50, Some(100)))));
        assert!(p.phase_changed);
        assert!(p.apply(Some("a"), "Downloading", Some((90, Some(100)))));
        assert!(!p.phase_changed);
        // An out-of-order smaller figure changes nothing.
        assert!(!p.apply(Some("a"), "Downloading", Some((59, Some(100)))));
        assert_eq!(p.layers[0].done, 90);
        assert_eq!(p.downloaded(), (90, 100));
        assert!(p.apply(Some("a"), "Download complete", None));
        // A late "Downloading" after the download completed does not move it back.
        assert!(!p.apply(Some("a"), "Downloading", Some((95, Some(100)))));
        assert_eq!(p.layers[0].phase, LayerPhase::Downloaded);
        assert!(p.apply(Some("a"), "Extracting", Some((10, Some(100)))));
        assert_eq!((p.layers[0].done, p.layers[0].size), (10, Some(100)));
        assert_eq!(p.downloaded(), (100, 100));
        assert!(p.apply(Some("a"), "Pull complete", None));
        assert!(p.layers[0].phase.is_done());
        assert!(p.apply(None, "Digest: sha256:00", None));
        assert_eq!(p.changed, None);
        assert_eq!(p.layers[1].phase, LayerPhase::Waiting);
    }

    #[test]
    fn refusals_are_recognised() {
        assert!(refused(
            "Head \"http://127.0.0.1:5000/v2/x/manifests/latest\": no basic auth credentials"
        ));
        assert!(refused("unauthorized: authentication required"));
        assert!(!refused("manifest unknown"));
    }
}
