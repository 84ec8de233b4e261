//! Event validation: any JSON value through `Event::from_json` (collector and internal
//! origins), `from_cloudevent` and `from_cloudevents_batch`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shiplog_fuzz::harness::check_event_json(data));
