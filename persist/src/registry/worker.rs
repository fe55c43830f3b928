//! The registry thread: it owns the SQLite connection and runs queued jobs with group
//! commit. It does not decide what a job does (see `store.rs`) nor how callers wait (see
//! `Reply` in `mod.rs`).
//!
//! Group commit: the thread takes every job already queued (up to `group_commit_max`), runs
//! them inside one transaction, each under its own savepoint, and commits once: one fsync of
//! SQLite's WAL for the whole group instead of one per call. Answers are sent only after the
//! commit, so a caller never hears "done" for a write that is not durable.
//!
//! | what happens                                   | the failing job gets | the group's other jobs            |
//! |------------------------------------------------|----------------------|-----------------------------------|
//! | a job fails, transaction still open            | its own error        | unaffected (savepoint rolled back) |
//! | a job fails and SQLite rolled the whole        | its own error        | earlier jobs: `not_committed`;    |
//! | transaction back (SQLITE_FULL, I/O error)      |                      | later ones: a new transaction     |
//! | `BEGIN` fails (lock held past busy timeout)    | that error, not run  | each retries `BEGIN` in turn      |
//! | `COMMIT` fails                                 | —                    | all: `not_committed`              |
//! | a job panics (a bug)                           | `Storage`, caught    | as "a job fails"                  |

use super::error::{from_sqlite, RegistryError};
use crossbeam::channel::Receiver;
use futures_channel::oneshot;
use rusqlite::Connection;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A unit of work for the registry thread.
pub(crate) trait Work: Send {
    /// Runs the job; its result is kept until [`Work::finish`].
    fn run(&mut self, conn: &Connection) -> Result<(), RegistryError>;
    /// Sends the answer: the job's own error if it failed, else the commit's outcome.
    fn finish(self: Box<Self>, committed: Result<(), RegistryError>);
}

pub(crate) enum Msg {
    Work(Box<dyn Work>),
    /// Finish what is queued before this, then stop.
    Shutdown,
}

/// A closure and the channel its answer goes back on.
pub(crate) struct Task<T, F> {
    work: Option<F>,
    result: Option<Result<T, RegistryError>>,
    answer: oneshot::Sender<Result<T, RegistryError>>,
    /// Counts failures nobody was waiting for (see [`unobserved_failure`]).
    unobserved: Arc<AtomicU64>,
}

impl<T, F> Task<T, F> {
    pub(crate) fn new(
        work: F,
        answer: oneshot::Sender<Result<T, RegistryError>>,
        unobserved: Arc<AtomicU64>,
    ) -> Self {
        Task {
            work: Some(work),
            result: None,
            answer,
            unobserved,
        }
    }
}

/// A call failed and its caller had already dropped the `Reply` (a fire-and-forget write:
/// a subscription, a cursor, an audit record). Never silent: counted and logged at `error`,
/// since whoever was told "done" (e.g. a client's `subscribed`) may lose that state at the
/// next restart.
pub(crate) fn unobserved_failure(counter: &AtomicU64, e: &RegistryError) {
    counter.fetch_add(1, Ordering::Relaxed);
    tracing::error!(target: "ringbearer_persist::registry", "registry write failed and was not stored: {e}");
}

impl<T, F> Work for Task<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, RegistryError> + Send,
{
    fn run(&mut self, conn: &Connection) -> Result<(), RegistryError> {
        let Some(work) = self.work.take() else {
            return Err(RegistryError::Storage("internal: job run twice".into()));
        };
        let result = catch_unwind(AssertUnwindSafe(|| work(conn))).unwrap_or_else(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(RegistryError::Storage(format!(
                "internal error: a registry job panicked: {why}"
            )))
        });
        let status = result.as_ref().map(|_| ()).map_err(Clone::clone);
        self.result = Some(result);
        status
    }

    fn finish(self: Box<Self>, committed: Result<(), RegistryError>) {
        let Task {
            result,
            answer,
            unobserved,
            ..
        } = *self;
        let answer_value = match (result, committed) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (_, Err(e)) => Err(e),
            (None, Ok(())) => Err(RegistryError::Storage("internal: job never ran".into())),
        };
        // The caller may have dropped its `Reply`: the work is done either way, and a
        // failure nobody hears of is logged here.
        if let Err(Err(e)) = answer.send(answer_value) {
            unobserved_failure(&unobserved, &e);
        }
    }
}

/// The thread's body: runs groups until `Shutdown` or until every `Registry` handle is
/// gone, then closes the connection (which checkpoints SQLite's WAL into the main file).
pub(crate) fn run(
    conn: Connection,
    rx: Receiver<Msg>,
    group_commit_max: usize,
) -> Result<(), RegistryError> {
    let mut group: Vec<Box<dyn Work>> = Vec::with_capacity(group_commit_max);
    let mut stop = false;
    while !stop {
        match rx.recv() {
            Ok(Msg::Work(w)) => group.push(w),
            Ok(Msg::Shutdown) | Err(_) => break,
        }
        while group.len() < group_commit_max {
            match rx.try_recv() {
                Ok(Msg::Work(w)) => group.push(w),
                Ok(Msg::Shutdown) => {
                    stop = true;
                    break;
                }
                Err(_) => break,
            }
        }
        commit_group(&conn, &mut group);
    }
    // Jobs that raced `close()` into the queue are dropped with `rx`: their callers get
    // `Closed`.
    drop(rx);
    // Refreshes the query planner's statistics where SQLite thinks it pays (cheap; advised
    // before closing a long-lived connection).
    let _ = conn.execute_batch("PRAGMA optimize");
    conn.close().map_err(|(_, e)| from_sqlite(e))
}

fn exec(conn: &Connection, sql: &str) -> Result<(), RegistryError> {
    conn.execute_batch(sql).map_err(from_sqlite)
}

/// Rolls back what is open and tells every job that ran in it that it was not stored.
fn abandon(conn: &Connection, ran: &mut Vec<Box<dyn Work>>, cause: &RegistryError) {
    if !conn.is_autocommit() {
        let _ = exec(conn, "ROLLBACK");
    }
    for w in ran.drain(..) {
        w.finish(Err(RegistryError::not_committed(cause)));
    }
}

/// Runs `group` in as few transactions as failures allow (one when none fail); see the
/// table in the module comment.
fn commit_group(conn: &Connection, group: &mut Vec<Box<dyn Work>>) {
    let mut ran: Vec<Box<dyn Work>> = Vec::with_capacity(group.len());
    let mut open = false;
    for mut w in group.drain(..) {
        if !open {
            if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
                w.finish(Err(e));
                continue;
            }
            open = true;
        }
        if let Err(e) = exec(conn, "SAVEPOINT job") {
            abandon(conn, &mut ran, &e);
            open = false;
            w.finish(Err(e));
            continue;
        }
        match w.run(conn) {
            Ok(()) => match exec(conn, "RELEASE job") {
                Ok(()) => ran.push(w),
                Err(e) => {
                    abandon(conn, &mut ran, &e);
                    open = false;
                    w.finish(Err(e));
                }
            },
            Err(e) => {
                if conn.is_autocommit() {
                    // SQLite rolled the whole transaction back (it may on SQLITE_FULL,
                    // SQLITE_IOERR, SQLITE_NOMEM): earlier jobs of the group are gone too.
                    abandon(conn, &mut ran, &e);
                    open = false;
                } else if let Err(e2) = exec(conn, "ROLLBACK TO job; RELEASE job") {
                    abandon(conn, &mut ran, &e2);
                    open = false;
                }
                // Carries its own error.
                w.finish(Ok(()));
            }
        }
    }
    if open {
        match exec(conn, "COMMIT") {
            Ok(()) => ran.drain(..).for_each(|w| w.finish(Ok(()))),
            Err(e) => abandon(conn, &mut ran, &e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    type Answer = oneshot::Receiver<Result<(), RegistryError>>;

    fn job(
        group: &mut Vec<Box<dyn Work>>,
        f: impl FnOnce(&Connection) -> Result<(), RegistryError> + Send + 'static,
    ) -> Answer {
        let (tx, rx) = oneshot::channel();
        group.push(Box::new(Task::new(f, tx, Arc::default())));
        rx
    }

    fn insert(v: i64) -> impl FnOnce(&Connection) -> Result<(), RegistryError> + Send {
        move |c| {
            c.execute("INSERT INTO t (v) VALUES (?1)", [v])
                .map(|_| ())
                .map_err(from_sqlite)
        }
    }

    fn setup() -> Connection {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "PRAGMA foreign_keys = ON;
             CREATE TABLE p (id INTEGER PRIMARY KEY);
             CREATE TABLE t (v INTEGER NOT NULL, p INTEGER REFERENCES p (id));",
        )
        .unwrap();
        c
    }

    fn stored(c: &Connection) -> Vec<i64> {
        let mut s = c.prepare("SELECT v FROM t ORDER BY v").unwrap();
        let rows = s.query_map([], |r| r.get(0)).unwrap();
        rows.map(Result::unwrap).collect()
    }

    fn answer(rx: Answer) -> Result<(), RegistryError> {
        block_on(rx).unwrap()
    }

    #[test]
    fn a_failed_job_rolls_back_alone() {
        let c = setup();
        let mut g = Vec::new();
        let a = job(&mut g, insert(1));
        let b = job(&mut g, |c| {
            insert(2)(c)?;
            Err(RegistryError::Invalid("refused after writing".into()))
        });
        let d = job(&mut g, insert(3));
        commit_group(&c, &mut g);
        assert_eq!(answer(a), Ok(()));
        assert!(matches!(answer(b), Err(RegistryError::Invalid(_))));
        assert_eq!(answer(d), Ok(()));
        assert_eq!(stored(&c), [1, 3]);
        assert!(c.is_autocommit());
    }

    #[test]
    fn a_transaction_rolled_back_by_sqlite_fails_the_jobs_before_it() {
        let c = setup();
        let mut g = Vec::new();
        let a = job(&mut g, insert(1));
        // What SQLite does on some SQLITE_FULL / SQLITE_IOERR: the whole transaction goes.
        let b = job(&mut g, |c| {
            c.execute_batch("ROLLBACK").map_err(from_sqlite)?;
            Err(RegistryError::Storage("disk full (simulated)".into()))
        });
        let d = job(&mut g, insert(3));
        commit_group(&c, &mut g);
        assert!(matches!(answer(a), Err(RegistryError::Storage(m)) if m.contains("not stored")));
        assert!(matches!(answer(b), Err(RegistryError::Storage(m)) if m.contains("simulated")));
        assert_eq!(answer(d), Ok(()), "a later job gets a new transaction");
        assert_eq!(stored(&c), [3]);
    }

    #[test]
    fn a_failed_commit_fails_every_job_of_the_group() {
        let c = setup();
        let mut g = Vec::new();
        let a = job(&mut g, insert(1));
        // A deferred foreign key is checked only at COMMIT, which then fails.
        let b = job(&mut g, |c| {
            c.execute_batch("PRAGMA defer_foreign_keys = ON; INSERT INTO t (v, p) VALUES (2, 99);")
                .map_err(from_sqlite)
        });
        commit_group(&c, &mut g);
        assert!(matches!(answer(a), Err(RegistryError::Storage(m)) if m.contains("not stored")));
        assert!(answer(b).is_err());
        assert!(stored(&c).is_empty());
        assert!(c.is_autocommit(), "rolled back, nothing left open");
    }

    #[test]
    fn a_panicking_job_is_an_error_not_a_dead_thread() {
        let c = setup();
        let mut g = Vec::new();
        let a = job(&mut g, insert(1));
        let b = job(&mut g, |_| panic!("bug in a job"));
        let d = job(&mut g, insert(3));
        commit_group(&c, &mut g);
        assert_eq!(answer(a), Ok(()));
        assert!(matches!(answer(b), Err(RegistryError::Storage(m)) if m.contains("bug in a job")));
        assert_eq!(answer(d), Ok(()));
        assert_eq!(stored(&c), [1, 3]);
    }
}
