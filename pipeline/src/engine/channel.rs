//! The channel from the feeder to one worker, which wakes the worker when it sends.
//!
//! A worker with nothing to do parks its thread (timely's `step_or_park`) rather than
//! polling its channel: on two cores a polling worker takes a core from the HTTP threads and
//! the journal for as long as any epoch is in flight. Timely unparks a worker when another
//! worker sends it data or progress; [`FeedTx::send`] unparks it when the feeder sends.

use std::sync::mpsc::{self, Receiver, SendError, SyncSender};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;

/// The feeder's end.
pub(super) struct FeedTx<T> {
    /// `None` only while dropping (see `Drop`).
    tx: Option<SyncSender<T>>,
    worker: Arc<OnceLock<Thread>>,
}

/// The worker's end; [`FeedRx::register`] names the thread to unpark.
pub(super) struct FeedRx<T> {
    pub rx: Receiver<T>,
    worker: Arc<OnceLock<Thread>>,
}

/// A channel of `capacity` messages to one worker.
pub(super) fn feed_channel<T>(capacity: usize) -> (FeedTx<T>, FeedRx<T>) {
    let (tx, rx) = mpsc::sync_channel(capacity);
    let worker = Arc::new(OnceLock::new());
    (
        FeedTx {
            tx: Some(tx),
            worker: worker.clone(),
        },
        FeedRx { rx, worker },
    )
}

impl<T> FeedTx<T> {
    /// Sends `msg` (blocking while the channel is full) and wakes the worker. A worker that
    /// registers after this send still reads the channel before it first parks, and one
    /// unparked before it parks returns from the park at once (the thread's token).
    pub fn send(&self, msg: T) -> Result<(), SendError<T>> {
        let sent = self.tx.as_ref().expect("taken only in drop").send(msg);
        self.unpark();
        sent
    }

    fn unpark(&self) {
        if let Some(t) = self.worker.get() {
            t.unpark();
        }
    }
}

impl<T> Drop for FeedTx<T> {
    /// The worker learns of the closed channel at once rather than at its park's timeout.
    /// The sender goes first: woken while it still existed, the worker would find the
    /// channel merely empty and park again.
    fn drop(&mut self) {
        drop(self.tx.take());
        self.unpark();
    }
}

impl<T> FeedRx<T> {
    /// Called on the worker's own thread before it first parks.
    pub fn register(&self) {
        let _ = self.worker.set(std::thread::current());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::TryRecvError;
    use std::time::{Duration, Instant};

    /// Parks like a worker (with a timeout far beyond any scheduling delay) until a message
    /// or the channel's end: what woke it, and whether a park ran out instead of being
    /// woken.
    fn parked_worker(rx: FeedRx<u32>) -> std::thread::JoinHandle<(Vec<u32>, bool)> {
        std::thread::spawn(move || {
            rx.register();
            let (mut got, mut timed_out) = (Vec::new(), false);
            loop {
                match rx.rx.try_recv() {
                    Ok(m) => got.push(m),
                    Err(TryRecvError::Disconnected) => return (got, timed_out),
                    Err(TryRecvError::Empty) => {
                        let t = Instant::now();
                        std::thread::park_timeout(Duration::from_secs(30));
                        timed_out |= t.elapsed() >= Duration::from_secs(30);
                    }
                }
            }
        })
    }

    #[test]
    fn a_send_and_the_senders_drop_wake_a_parked_worker() {
        let (tx, rx) = feed_channel(4);
        let worker = parked_worker(rx);
        for m in 0..3 {
            // Let the worker reach its park between sends.
            std::thread::sleep(Duration::from_millis(20));
            tx.send(m).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
        drop(tx);
        let (got, timed_out) = worker.join().unwrap();
        assert_eq!(got, vec![0, 1, 2]);
        assert!(!timed_out, "a park ran out: a wake-up was lost");
    }

    #[test]
    fn a_send_before_the_worker_registers_is_still_read() {
        let (tx, rx) = feed_channel(4);
        tx.send(7).unwrap();
        let worker = parked_worker(rx);
        std::thread::sleep(Duration::from_millis(20));
        drop(tx);
        assert_eq!(worker.join().unwrap(), (vec![7], false));
    }
}
