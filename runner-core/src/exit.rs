//! Publishing a process's end to any number of waiters: the mechanism behind every
//! backend's idempotent, cancel-safe `wait`.

use tokio::sync::watch;

use crate::{Error, ExitStatus, Result};

type Outcome<E> = Option<std::result::Result<ExitStatus, E>>;

/// The sending half: a backend's supervisor publishes the outcome once. `E` says why
/// an end could not be observed (a backend's own failure type; a message by default).
#[derive(Debug)]
pub struct ExitPublisher<E = String>(watch::Sender<Outcome<E>>);

/// The receiving half: clone it freely; every clone sees the same outcome.
#[derive(Debug, Clone)]
pub struct ExitWatch<E = String>(watch::Receiver<Outcome<E>>);

/// A new publisher/watch pair.
pub fn exit_channel<E>() -> (ExitPublisher<E>, ExitWatch<E>) {
    let (tx, rx) = watch::channel(None);
    (ExitPublisher(tx), ExitWatch(rx))
}

impl<E> ExitPublisher<E> {
    /// Publishes how the process ended, or why we could not observe it.
    pub fn publish(self, outcome: std::result::Result<ExitStatus, E>) {
        let _ = self.0.send(Some(outcome));
    }
}

impl<E: Clone> ExitWatch<E> {
    /// True once an outcome was published.
    pub fn is_finished(&self) -> bool {
        self.0.borrow().is_some()
    }

    /// The exit status, if the process ended and it could be observed.
    pub fn try_status(&self) -> Option<ExitStatus> {
        match &*self.0.borrow() {
            Some(Ok(s)) => Some(*s),
            _ => None,
        }
    }

    /// Waits for the outcome. Any number of callers, before or after the end, get the
    /// same answer; dropping the future changes nothing. An unobservable end is an
    /// `Err(why)`.
    pub async fn wait(&self) -> Result<std::result::Result<ExitStatus, E>> {
        let mut rx = self.0.clone();
        let gone = || {
            Error::io(
                "observe the process",
                std::io::Error::other("its supervisor ended without a status"),
            )
        };
        let outcome = rx.wait_for(|s| s.is_some()).await.map_err(|_| gone())?;
        outcome.clone().ok_or_else(gone)
    }
}

/// Runs every future concurrently (as tasks) and returns the first error, after all
/// have finished. How environments stop all their processes at once.
pub async fn join_all_first_error<F>(futures: impl IntoIterator<Item = F>) -> Result<()>
where
    F: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for f in futures {
        set.spawn(f);
    }
    let mut first = None;
    while let Some(r) = set.join_next().await {
        if let Ok(Err(e)) = r {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn many_waiters_one_answer() {
        let (tx, rx) = exit_channel::<String>();
        assert!(!rx.is_finished());
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let rx = rx.clone();
                tokio::spawn(async move { rx.wait().await.unwrap() })
            })
            .collect();
        tx.publish(Ok(ExitStatus::Exited(2)));
        for w in waiters {
            assert_eq!(w.await.unwrap(), Ok(ExitStatus::Exited(2)));
        }
        assert_eq!(rx.try_status(), Some(ExitStatus::Exited(2)));
        assert_eq!(rx.wait().await.unwrap(), Ok(ExitStatus::Exited(2)));
    }

    #[tokio::test]
    async fn a_dropped_publisher_is_an_error_not_a_hang() {
        let (tx, rx) = exit_channel::<String>();
        drop(tx);
        assert!(rx.wait().await.is_err());
    }
}
