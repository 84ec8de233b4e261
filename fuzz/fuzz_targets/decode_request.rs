//! `POST /v1/events` decoding: `[content type, flags, body…]` through
//! `shiplog_ingest::decode::decode_request` (see `harness::decode_input` for the layout).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shiplog_fuzz::harness::check_decode_request(data));
