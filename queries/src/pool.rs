//! Where SQL runs, and how many queries may run at once.
//!
//! Queries run on a runtime of their own, never on the threads that answer ingestion. Its
//! threads run at a lower scheduling priority (nice 10 on Linux), so that on a small
//! machine a CPU-bound query takes what ingestion leaves rather than the other way round,
//! and they have large stacks, so that a plan as deep as [`crate::shape`] admits cannot
//! overflow them (DataFusion plans, optimizes and evaluates recursively). DataFusion's own
//! tasks are spawned on the runtime that runs the query, so they stay here too.
//!
//! Admission bounds how many queries run per org and in all: past either, a query is
//! refused at once (429) instead of queueing behind work it cannot see.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use crate::SqlError;

/// Stack of each SQL thread: virtual memory, touched only as deep as a plan goes.
const STACK_BYTES: usize = 256 << 20;

/// The SQL threads.
pub struct SqlPool {
    rt: Option<tokio::runtime::Runtime>,
}

/// Lowers the calling thread's scheduling priority (Linux keeps a nice value per thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority only reads its arguments; a failure leaves the priority as it was.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}

impl SqlPool {
    pub fn new(threads: usize) -> std::io::Result<SqlPool> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .max_blocking_threads(8)
            .thread_name("sql")
            .thread_stack_size(STACK_BYTES)
            .on_thread_start(lower_priority)
            .enable_all()
            .build()?;
        Ok(SqlPool { rt: Some(rt) })
    }

    /// Runs `f` on the SQL threads. Dropping the answer cancels the work at its next await
    /// point (a timed-out query, or a client that went away).
    pub fn spawn<F>(&self, f: F) -> Running<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let rt = self.rt.as_ref().expect("the pool runs until dropped");
        Running(rt.spawn(f))
    }
}

impl Drop for SqlPool {
    fn drop(&mut self) {
        // A runtime may not block its dropper inside another runtime; queries still running
        // are abandoned with it.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Work on the SQL threads, aborted when dropped.
pub struct Running<T>(tokio::task::JoinHandle<T>);

impl<T> Future for Running<T> {
    type Output = Result<T, SqlError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.map_err(|e| SqlError::Internal(format!("the query's task ended: {e}"))))
    }
}

impl<T> Drop for Running<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Counts running queries per org and in all.
pub struct Admission {
    per_org: usize,
    total: usize,
    running: Mutex<(usize, HashMap<u64, usize>)>,
}

/// A running query's place; gives it back when dropped (with the query's task, so a
/// timed-out query keeps its place until its work has really stopped).
pub struct Ticket {
    admission: Arc<Admission>,
    org: u64,
}

impl Admission {
    pub fn new(per_org: usize, total: usize) -> Arc<Admission> {
        Arc::new(Admission {
            per_org: per_org.max(1),
            total: total.max(1),
            running: Mutex::new((0, HashMap::new())),
        })
    }

    pub fn enter(self: &Arc<Self>, org: u64) -> Result<Ticket, SqlError> {
        let mut g = self.running.lock().unwrap();
        let (total, by_org) = &mut *g;
        let mine = by_org.get(&org).copied().unwrap_or(0);
        if mine >= self.per_org {
            return Err(SqlError::Busy(format!(
                "this organization already runs {mine} SQL queries, the most it may run at once"
            )));
        }
        if *total >= self.total {
            return Err(SqlError::Busy(format!(
                "the server already runs {total} SQL queries, the most it runs at once"
            )));
        }
        *total += 1;
        *by_org.entry(org).or_default() += 1;
        Ok(Ticket {
            admission: self.clone(),
            org,
        })
    }

    /// Queries running now for `org`.
    pub fn running(&self, org: u64) -> usize {
        self.running
            .lock()
            .unwrap()
            .1
            .get(&org)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut g = self.admission.running.lock().unwrap();
        let (total, by_org) = &mut *g;
        *total -= 1;
        if let Some(n) = by_org.get_mut(&self.org) {
            *n -= 1;
            if *n == 0 {
                by_org.remove(&self.org);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_bounds_each_org_and_the_total() {
        let a = Admission::new(2, 3);
        let t1 = a.enter(1).unwrap();
        let _t2 = a.enter(1).unwrap();
        assert!(matches!(a.enter(1), Err(SqlError::Busy(_))));
        let _t3 = a.enter(2).unwrap();
        assert!(
            matches!(a.enter(3), Err(SqlError::Busy(_))),
            "total reached"
        );
        drop(t1);
        assert_eq!(a.running(1), 1);
        let _t4 = a.enter(3).unwrap();
    }

    #[test]
    fn dropping_running_work_aborts_it() {
        let pool = SqlPool::new(1).unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let running = pool.spawn(async move {
            let _tx = tx; // dropped when the task is
            std::future::pending::<()>().await
        });
        drop(running);
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(5)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected),
            "the task ended and dropped its sender"
        );
    }
}
