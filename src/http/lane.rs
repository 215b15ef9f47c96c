//! MySQL: threads of their own for the requests whose statements are all
//! batched in the common case: introspection and getcode, and the token
//! requests, verifycodes and sign-ups whose batched write did not settle
//! them (the common case awaits its batches on the HTTP worker instead,
//! which spares two hand-offs and a thread: `oauth::detached`,
//! `db::awaited`). Such a
//! request spends its time waiting for its batch and holds no pooled
//! connection meanwhile (`db::Conn` takes one only for a statement that is
//! not batched), so many more can wait than the pool has connections, and
//! the more wait, the fuller each batch. On actix's blocking pool they would
//! crowd out the other requests: giving that pool four times the threads
//! made refresh 38-49% faster but otp_token and otp_login 13-19% slower.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

pub struct Lane {
    jobs: Sender<Job>,
}

impl Lane {
    /// Starts `threads` threads; `None` if not one could be started.
    pub fn start(threads: usize) -> Option<Lane> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let mut started = 0;
        for i in 0..threads {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("batched-requests-{i}"))
                .spawn(move || serve(&queue));
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::warn!(error = %e, "could not start a batched-requests thread"),
            }
        }
        (started > 0).then_some(Lane { jobs })
    }

    /// Runs `job` on a lane thread; false if the lane has stopped.
    pub fn run(&self, job: Job) -> bool {
        self.jobs.send(job).is_ok()
    }
}

fn serve(queue: &Mutex<Receiver<Job>>) {
    loop {
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        // A panicking request is answered 500 (its reply is dropped); the
        // thread goes on serving.
        if catch_unwind(AssertUnwindSafe(job)).is_err() {
            tracing::error!("a request panicked on the batched-requests lane");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_panicking_request_leaves_the_lane_serving() {
        let lane = Lane::start(1).expect("a lane thread");
        assert!(lane.run(Box::new(|| panic!("a request that panics"))));
        let (done, answered) = mpsc::channel();
        assert!(lane.run(Box::new(move || {
            let _ = done.send(42);
        })));
        assert_eq!(answered.recv_timeout(Duration::from_secs(5)), Ok(42));
    }
}
