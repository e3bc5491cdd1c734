//! Feeds arbitrary bytes to the native header reader: it must answer, never panic, and
//! never read more than its cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media_converter::header::{self, MAX_HEADER_BYTES};

fuzz_target!(|data: &[u8]| {
    if let Ok((_, read)) = header::read_bytes_counted(data) {
        assert!(read <= MAX_HEADER_BYTES);
        assert!(read <= data.len() as u64);
    }
});
