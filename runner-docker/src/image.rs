//! Images: presence checks and pulls with progress.

use std::collections::HashMap;

use bollard::query_parameters::CreateImageOptions;
use bollard::Docker;
use futures_util::StreamExt;

use crate::DockerError;

/// Pull progress, reported after every message of the pull stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PullProgress {
    /// The layer this message is about, if any.
    pub layer: Option<String>,
    /// The engine's status text ("Downloading", "Pull complete", ...).
    pub status: String,
    /// Bytes done and total of that layer, when known.
    pub layer_bytes: Option<(u64, u64)>,
    /// Bytes done and total over all layers seen so far.
    pub done: u64,
    /// See `done`.
    pub total: u64,
}

impl PullProgress {
    /// Overall percent, when a total is known.
    pub fn percent(&self) -> Option<f64> {
        (self.total > 0).then(|| self.done as f64 * 100.0 / self.total as f64)
    }
}

/// True when `image` (a tag or a digest reference) is present in the engine.
pub async fn image_exists(docker: &Docker, image: &str) -> Result<bool, DockerError> {
    match docker.inspect_image(image).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(DockerError::op("inspect an image")(e)),
    }
}

/// The image's id (`sha256:...`).
pub async fn image_id(docker: &Docker, image: &str) -> Result<String, DockerError> {
    let info = docker
        .inspect_image(image)
        .await
        .map_err(|e| DockerError::ImageUnavailable {
            image: image.to_string(),
            reason: None,
            source: Some(e.into()),
        })?;
    info.id.ok_or_else(|| DockerError::ImageUnavailable {
        image: image.to_string(),
        reason: Some("the engine reported no id".into()),
        source: None,
    })
}

/// Makes sure `image` is present (pulling it if needed) and returns its `ENV`.
pub(crate) async fn ensure_image_env(
    docker: &Docker,
    image: &str,
) -> Result<Vec<String>, DockerError> {
    let inspected = match docker.inspect_image(image).await {
        Ok(i) => i,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {
            get_image_if_not_present(docker, image, |_| {}).await?;
            docker
                .inspect_image(image)
                .await
                .map_err(|e| DockerError::ImageUnavailable {
                    image: image.to_string(),
                    reason: None,
                    source: Some(e.into()),
                })?
        }
        Err(e) => return Err(DockerError::op("inspect an image")(e)),
    };
    Ok(inspected.config.and_then(|c| c.env).unwrap_or_default())
}

/// Pulls `image` unless it is present, calling `progress` for every message. An
/// error in the pull stream is returned, never swallowed.
pub async fn get_image_if_not_present(
    docker: &Docker,
    image: &str,
    mut progress: impl FnMut(&PullProgress),
) -> Result<(), DockerError> {
    if image_exists(docker, image).await? {
        return Ok(());
    }
    let unavailable = |reason: Option<String>, source: Option<bollard::errors::Error>| {
        DockerError::ImageUnavailable {
            image: image.to_string(),
            reason,
            source: source.map(Into::into),
        }
    };
    let (from, tag) = match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') && !image.contains('@') => (repo, Some(tag)),
        _ => (image, None),
    };
    let options = CreateImageOptions {
        from_image: Some(from.to_string()),
        tag: tag.map(str::to_string),
        ..Default::default()
    };
    let mut layers: HashMap<String, (u64, u64)> = HashMap::new();
    let mut stream = docker.create_image(Some(options), None, None);
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| unavailable(None, Some(e)))?;
        if let Some(detail) = info.error_detail {
            return Err(unavailable(
                Some(detail.message.unwrap_or_else(|| "pull failed".into())),
                None,
            ));
        }
        let layer_bytes = info
            .progress_detail
            .as_ref()
            .and_then(|d| Some((d.current.unwrap_or(0).max(0) as u64, d.total?.max(0) as u64)));
        if let (Some(id), Some(bytes)) = (&info.id, layer_bytes) {
            layers.insert(id.clone(), bytes);
        }
        let (done, total) = layers
            .values()
            .fold((0, 0), |(d, t), (ld, lt)| (d + ld, t + lt));
        progress(&PullProgress {
            layer: info.id,
            status: info.status.unwrap_or_default(),
            layer_bytes,
            done,
            total,
        });
    }
    if image_exists(docker, image).await? {
        Ok(())
    } else {
        Err(unavailable(
            Some("the pull ended without the image".into()),
            None,
        ))
    }
}
