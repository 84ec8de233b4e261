//! Admission control for `POST /v1/events`: a budget of request bytes in flight.
//!
//! Every ingest request reserves, before its body is read, the memory it may hold until it
//! is answered: its body (the `Content-Length`, or the body limit when no length is sent)
//! twice over, for the body and the log records built from it. A gzip body reserves its
//! decompressed size as well, once it is known (decompression itself stops at the body
//! limit). When the budget is spent the request is answered with 503 and `Retry-After`;
//! its body is read and discarded a chunk at a time first (a client still sending would
//! otherwise see a reset, not the answer), never held: under a flood, memory stays bounded
//! by the budget instead of growing with the number of clients, and the log's append queue
//! (fed only by admitted requests) is bounded by it too.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Default budget of request bytes in flight: 256 MiB.
pub const DEFAULT_MAX_INFLIGHT_BYTES: usize = 256 << 20;

pub struct Admission {
    budget: std::sync::Arc<Semaphore>,
    capacity: usize,
    /// Requests answered 503 because the budget was spent.
    pub shed: AtomicU64,
}

/// Bytes reserved by an admitted request, released when dropped.
pub struct Reservation {
    _permit: Option<OwnedSemaphorePermit>,
}

impl Admission {
    /// A budget of `capacity` bytes (at least one maximal request is always admitted).
    pub fn new(capacity: usize) -> Admission {
        let capacity = capacity.clamp(1, u32::MAX as usize);
        Admission {
            budget: std::sync::Arc::new(Semaphore::new(capacity)),
            capacity,
            shed: AtomicU64::new(0),
        }
    }

    /// The bytes a request reserves: twice its body (as announced, else `body_limit`).
    pub fn cost(content_length: Option<u64>, body_limit: usize) -> usize {
        let body = match content_length {
            Some(n) => (n.min(body_limit as u64)) as usize,
            None => body_limit,
        };
        body.max(1).saturating_mul(2)
    }

    /// Reserves `bytes` (capped at the whole budget) or refuses at once.
    pub fn try_admit(&self, bytes: usize) -> Option<Reservation> {
        let n = bytes.min(self.capacity) as u32;
        match self.budget.clone().try_acquire_many_owned(n) {
            Ok(p) => Some(Reservation { _permit: Some(p) }),
            Err(_) => {
                self.shed.fetch_add(1, Relaxed);
                None
            }
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes currently reserved.
    pub fn in_flight(&self) -> usize {
        self.capacity - self.budget.available_permits()
    }
}

impl Default for Admission {
    fn default() -> Self {
        Admission::new(DEFAULT_MAX_INFLIGHT_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_spent_and_returned() {
        let a = Admission::new(1000);
        let r1 = a.try_admit(600).unwrap();
        assert_eq!(a.in_flight(), 600);
        assert!(a.try_admit(600).is_none());
        assert_eq!(a.shed.load(Relaxed), 1);
        let r2 = a.try_admit(400).unwrap();
        assert!(a.try_admit(1).is_none());
        drop(r1);
        drop(r2);
        assert_eq!(a.in_flight(), 0);
        // A request larger than the whole budget still gets in when nothing else is.
        let big = a.try_admit(5000).unwrap();
        assert_eq!(a.in_flight(), 1000);
        drop(big);
    }

    #[test]
    fn cost_uses_the_announced_length() {
        assert_eq!(Admission::cost(Some(100), 1 << 20), 200);
        assert_eq!(Admission::cost(None, 1 << 20), 2 << 20);
        assert_eq!(Admission::cost(Some(u64::MAX), 1 << 20), 2 << 20);
        assert_eq!(Admission::cost(Some(0), 1 << 20), 2);
    }
}
