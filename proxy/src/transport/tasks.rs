//! The proxy's connection tasks (and the upgraded connections spliced off
//! them): tracked, so that a drain waits for them, and ended all at once
//! when the grace period is over.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tokio_util::task::TaskTracker;

#[derive(Clone, Debug, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    kill: CancellationToken,
}

impl Tasks {
    /// Runs `task` until it ends or [`Tasks::kill`] is called.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(Killable {
            task,
            kill: self.kill.clone().cancelled_owned(),
        });
    }

    /// No more tasks are coming: [`Tasks::wait`] returns once the running ones end.
    pub fn close(&self) {
        self.tracker.close();
    }

    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }

    pub async fn wait(&self) {
        self.tracker.wait().await
    }

    /// Ends every task now (their connections are closed as they drop).
    pub fn kill(&self) {
        self.kill.cancel();
    }
}

pin_project_lite::pin_project! {
    /// A task that ends early when killed. A plain future rather than an
    /// `async` block around `select!`: that would hold the task twice
    /// (the captured future, and the one being polled), and a connection's
    /// task is most of what an idle connection costs.
    struct Killable<F> {
        #[pin]
        task: F,
        #[pin]
        kill: WaitForCancellationFutureOwned,
    }
}

impl<F: Future<Output = ()>> Future for Killable<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.task.poll(cx).is_ready() {
            return Poll::Ready(());
        }
        this.kill.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn killed_tasks_end_and_are_waited_for() {
        let tasks = Tasks::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn(async move {
            let _keep = tx;
            std::future::pending::<()>().await
        });
        tasks.close();
        assert_eq!(tasks.len(), 1);
        tasks.kill();
        tasks.wait().await;
        assert!(rx.await.is_err(), "the task was dropped");
        assert!(tasks.is_empty());
    }
}
