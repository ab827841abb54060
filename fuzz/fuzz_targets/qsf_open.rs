//! Fuzz `QsfFile::open` (mmap and read modes), `verify()` and reading every tensor, for
//! version-2 and version-1 files. Any input must give `Ok` or `Err`, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qstream_core::format::{LoadOptions, QsfFile};

fuzz_target!(|data: &[u8]| {
    let path = std::env::temp_dir().join(format!("qstream-fuzz-qsf-{}.qsf", std::process::id()));
    std::fs::write(&path, data).unwrap();
    for use_mmap in [true, false] {
        let opts = LoadOptions {
            use_mmap,
            verify_checksums: false,
        };
        let Ok(f) = QsfFile::open(&path, &opts) else { continue };
        let verified = f.verify().is_ok();
        for i in 0..f.layers().len() {
            let _ = f.layer_tensors(i);
        }
        if verified {
            // a verified file must be fully readable
            let all = f.all_tensors().expect("verified file: all_tensors");
            for t in all.values() {
                t.to_f32().expect("verified file: dequantize");
            }
        }
    }
});
