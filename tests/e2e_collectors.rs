//! End-to-end tests of the collectors (emit, flush, migrate, probe) against the real binary.
