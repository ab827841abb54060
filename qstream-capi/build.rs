//! Sets the shared library's SONAME / install name to the ABI version, so a host linked
//! against `libqstream.so` records `libqstream.so.<ABI>` and refuses an incompatible library.

/// Must equal `QS_ABI_VERSION` in `src/lib.rs` (a test checks it).
const ABI_VERSION: u32 = 0;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    match os.as_str() {
        "linux" | "android" | "freebsd" | "netbsd" | "openbsd" | "dragonfly" => {
            println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libqstream.so.{ABI_VERSION}");
        }
        "macos" | "ios" => {
            println!("cargo:rustc-cdylib-link-arg=-Wl,-install_name,@rpath/libqstream.{ABI_VERSION}.dylib");
        }
        _ => {}
    }
    println!("cargo:rustc-env=QS_BUILD_ABI_VERSION={ABI_VERSION}");
}
