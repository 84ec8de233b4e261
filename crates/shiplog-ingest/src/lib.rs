//! The shiplog ingest path, below any transport: validated events in, durable log records
//! out, exactly once per `(source, id)`.
//!
//! Owns the decoding of a request body into validated events ([`decode`]: pure functions,
//! fuzzed), the [`Ingestor`] (dedup, append, wait for durability), the dedup index and its
//! snapshot file ([`dedup`]), the budget of request bytes in flight ([`admission`]), and
//! the counters the ingest path keeps ([`metrics`]). The HTTP server (`shiplog-web`), the
//! rules engine (which writes its decisions through the same [`Ingestor`]), the demo
//! generator and the benchmarks all use it; it knows nothing of HTTP.
//!
//! Guarantees:
//! - [`Ingestor::ingest`] returns only once every accepted event is durable in the log, so
//!   an acknowledgement built from its result is a durability promise;
//! - an event is stored once per `(source, id)` within the dedup window, across restarts
//!   (the index is restored from its snapshot or from the log at start), and a duplicate
//!   is never reported for an event the log does not hold.

pub mod admission;
pub mod decode;
pub mod dedup;
pub mod ingestor;
pub mod metrics;

pub use ingestor::{
    DedupRestore, IngestError, IngestOutcome, Ingestor, SnapshotRejected, SnapshotWritten,
};
pub use metrics::Metrics;
