//! SQLite requests read on a connection their thread keeps, not on one
//! checked out of the pool and returned for every request.
//!
//! SQLite reader connections are cheap and only ever used by one request at
//! a time, so a thread needs no more than one. The pool's checkout and return
//! each take r2d2's mutex, which ~20 blocking threads on two cores contend
//! for: a thread that finds it held spins with `sched_yield` (parking_lot),
//! and under load such a yield stood in the run queue for 1-4 ms (`perf
//! trace`: about 1,500 of them a second during otp_login). Without it, 95%
//! fewer yields and otp_token +8% over five interleaved pairs
//! (docs/performance.md). Threads serving requests are bounded (the blocking
//! pool), and so are these connections; writes still go through the writer
//! thread.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use diesel::r2d2::ManageConnection;

use super::{DbError, DbResult, Manager, Slot};

thread_local! {
    /// This thread's reader connection while no request uses it, with the
    /// id of the `Readers` it came from (tests run several servers in one
    /// process).
    static KEPT: RefCell<Option<(u64, Box<Slot>)>> = const { RefCell::new(None) };
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Opens and keeps the reader connections of one database.
#[derive(Clone)]
pub(super) struct Readers {
    id: u64,
    manager: Arc<Manager>,
}

impl Readers {
    pub(super) fn new(manager: Manager) -> Readers {
        Readers {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            manager: Arc::new(manager),
        }
    }

    /// This thread's connection (tested first if it has been idle, as the
    /// pool tests its own), or a new one.
    pub(super) fn take(&self) -> DbResult<Box<Slot>> {
        let kept = KEPT.try_with(|k| k.borrow_mut().take()).ok().flatten();
        if let Some((id, mut slot)) = kept {
            if id == self.id && self.manager.is_valid(&mut slot).is_ok() {
                return Ok(slot);
            }
        }
        self.manager
            .connect()
            .map(Box::new)
            .map_err(|e| DbError::Unavailable(e.to_string()))
    }

    /// Keeps a connection that still works for this thread's next request.
    pub(super) fn keep(&self, slot: Box<Slot>) {
        if !slot.broken {
            let id = self.id;
            // A thread being torn down has nothing to keep it for.
            let _ = KEPT.try_with(move |k| *k.borrow_mut() = Some((id, slot)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::connection::SimpleConnection;
    use std::time::Duration;

    fn readers_for(path: &str) -> Readers {
        let url = super::super::DbUrl::parse(&format!("sqlite://{path}")).expect("url");
        Readers::new(Manager {
            url,
            lock_wait: Duration::from_secs(1),
        })
    }

    /// Whether `slot` is the connection that `mark` was run on: temporary
    /// tables belong to one connection.
    fn marked(slot: &mut Slot) -> bool {
        slot.inner.batch_execute("SELECT * FROM temp.mark").is_ok()
    }

    fn mark(slot: &mut Slot) {
        slot.inner
            .batch_execute("CREATE TEMP TABLE mark (x INTEGER)")
            .expect("temp table");
    }

    #[test]
    fn a_thread_gets_back_the_connection_it_kept_and_no_other_thread_does() {
        let path = std::env::temp_dir().join(format!(
            "phonekey-readers-{}-{}.db",
            std::process::id(),
            crate::secrets::random_hex(6)
        ));
        let path = path.to_string_lossy().to_string();
        let readers = readers_for(&path);
        let other_db = readers_for(&path);

        let mut slot = readers.take().expect("open");
        mark(&mut slot);
        readers.keep(slot);
        let mut again = readers.take().expect("kept");
        assert!(
            marked(&mut again),
            "the kept connection was not handed back"
        );
        readers.keep(again);

        // Another thread has a connection of its own.
        let elsewhere = readers.clone();
        let other_thread = std::thread::spawn(move || {
            let mut slot = elsewhere.take().expect("open");
            marked(&mut slot)
        })
        .join()
        .expect("thread");
        assert!(!other_thread, "another thread got this thread's connection");

        // Another database's readers never get it, and do not keep it
        // for this one either.
        let mut foreign = other_db.take().expect("open");
        assert!(
            !marked(&mut foreign),
            "another pool got this thread's connection"
        );
        other_db.keep(foreign);
        let mut fresh = readers.take().expect("open");
        assert!(
            !marked(&mut fresh),
            "a connection kept for another pool came back"
        );

        // A connection found broken is not kept.
        mark(&mut fresh);
        fresh.broken = true;
        readers.keep(fresh);
        let mut after = readers.take().expect("open");
        assert!(!marked(&mut after), "a broken connection was kept");
        drop(after);

        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    }
}
