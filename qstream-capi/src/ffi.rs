//! Argument helpers shared by the exports: NULL checks, UTF-8 text, slices, versioned
//! params structs and output buffers. Every helper turns a bad argument into a [`Fail`].

use std::ffi::{c_char, CStr};
use std::path::PathBuf;

use crate::status::{CResult, Fail, QS_STATUS_BUFFER_TOO_SMALL, QS_STATUS_INVALID_UTF8};

/// Borrow `len` bytes of UTF-8 text. NULL is allowed only when `len == 0` (→ "").
///
/// # Safety
/// `p` must point to `len` readable bytes that stay valid for `'a`.
pub unsafe fn text<'a>(p: *const c_char, len: usize, what: &str) -> CResult<&'a str> {
    if len == 0 {
        return Ok("");
    }
    if p.is_null() {
        return Err(Fail::null(what));
    }
    // SAFETY: non-null and the caller guarantees `len` readable bytes.
    let bytes = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) };
    std::str::from_utf8(bytes).map_err(|e| {
        Fail::new(
            QS_STATUS_INVALID_UTF8,
            format!("{what} is not valid UTF-8: {e}"),
        )
    })
}

/// Borrow a required NUL-terminated UTF-8 string.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string valid for `'a`.
pub unsafe fn cstr<'a>(p: *const c_char, what: &str) -> CResult<&'a str> {
    if p.is_null() {
        return Err(Fail::null(what));
    }
    // SAFETY: non-null and NUL-terminated per the caller's contract.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str().map_err(|e| {
        Fail::new(
            QS_STATUS_INVALID_UTF8,
            format!("{what} is not valid UTF-8: {e}"),
        )
    })
}

/// A required NUL-terminated path (any bytes on Unix).
///
/// # Safety
/// As [`cstr`].
pub unsafe fn path(p: *const c_char, what: &str) -> CResult<PathBuf> {
    if p.is_null() {
        return Err(Fail::null(what));
    }
    // SAFETY: non-null and NUL-terminated per the caller's contract.
    let c = unsafe { CStr::from_ptr(p) };
    if c.is_empty() {
        return Err(Fail::invalid(format!("{what} is empty")));
    }
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(PathBuf::from(std::ffi::OsStr::from_bytes(c.to_bytes())))
    }
    #[cfg(not(unix))]
    {
        c.to_str().map(PathBuf::from).map_err(|e| {
            Fail::new(
                QS_STATUS_INVALID_UTF8,
                format!("{what} is not valid UTF-8: {e}"),
            )
        })
    }
}

/// Borrow `n` elements. NULL is allowed only when `n == 0`.
///
/// # Safety
/// `p` must point to `n` valid, initialised `T` that stay valid for `'a`.
pub unsafe fn slice<'a, T>(p: *const T, n: usize, what: &str) -> CResult<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Fail::null(what));
    }
    // SAFETY: non-null and the caller guarantees `n` elements.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

/// A required output pointer.
///
/// # Safety
/// `p` must be NULL or valid for writes of `T` for `'a`.
pub unsafe fn out<'a, T>(p: *mut T, what: &str) -> CResult<&'a mut T> {
    // SAFETY: the caller's contract; NULL is rejected.
    unsafe { p.as_mut() }.ok_or_else(|| Fail::null(what))
}

/// Params structs that start with `uint32_t struct_size`.
///
/// # Safety
/// Implementors are `#[repr(C)]`, start with a `u32` size field and are valid for any
/// prefix of a published version ([`Versioned::sizes`]) copied over a default value.
pub unsafe trait Versioned: Copy {
    /// The library's default value (its `struct_size` is `size_of::<Self>()`).
    fn default_value() -> Self;

    /// `sizeof` of every published version of the struct, oldest first; the last is
    /// `size_of::<Self>()`. A `struct_size` is accepted only when it is one of these, so a
    /// size that ends inside a field (half a pointer, half a function pointer) is refused.
    fn sizes() -> &'static [usize];
}

/// Check a caller's `struct_size` against the published versions of `T`.
fn check_size<T: Versioned>(size: usize, what: &str) -> CResult {
    let sizes = T::sizes();
    debug_assert_eq!(sizes.last(), Some(&std::mem::size_of::<T>()));
    if sizes.contains(&size) {
        return Ok(());
    }
    let list: Vec<String> = sizes.iter().map(|s| s.to_string()).collect();
    Err(Fail::invalid(format!(
        "{what}->struct_size is {size}, this library accepts {} (the sizes of the published \
         versions; initialise the struct with the matching *_default_params())",
        list.join(" or ")
    )))
}

/// Read a caller's params struct: the first `struct_size` bytes over the defaults, so
/// older callers (an earlier published version) get defaults for the newer fields.
///
/// # Safety
/// `p` must be NULL or point to at least `struct_size` readable bytes (`struct_size` being
/// the struct's first field).
pub unsafe fn params<T: Versioned>(p: *const T, what: &str) -> CResult<T> {
    if p.is_null() {
        return Err(Fail::null(what));
    }
    // SAFETY: every params struct starts with a u32 `struct_size`.
    let size = unsafe { p.cast::<u32>().read_unaligned() } as usize;
    check_size::<T>(size, what)?;
    let mut v = T::default_value();
    // SAFETY: `size` bytes are readable at `p` (caller) and writable in `v` (size ≤ full);
    // `size` is the size of a published version, so the copy ends on a field boundary and
    // every field is either the caller's or the default.
    unsafe {
        std::ptr::copy_nonoverlapping(p.cast::<u8>(), (&mut v as *mut T).cast::<u8>(), size);
    }
    Ok(v)
}

/// Check a caller's versioned output struct before any work: NULL is allowed (nothing will
/// be written), otherwise its `struct_size` must be a published size. Returns the size.
///
/// # Safety
/// `p` must be NULL or point to a readable struct whose first field is its size.
pub unsafe fn check_out<T: Versioned>(p: *mut T, what: &str) -> CResult<usize> {
    if p.is_null() {
        return Ok(0);
    }
    // SAFETY: `p` is non-null and starts with a u32 size field.
    let size = unsafe { p.cast::<u32>().read_unaligned() } as usize;
    check_size::<T>(size, what)?;
    Ok(size)
}

/// Write `value` into a caller's versioned output struct (only the first `struct_size`
/// bytes the caller declared, a published size). NULL `p` is allowed (nothing is written).
/// Call [`check_out`] before doing any work so that a bad size fails the call up front.
///
/// # Safety
/// `p` must be NULL or point to a writable struct whose first field is its size.
pub unsafe fn write_versioned<T: Versioned>(p: *mut T, mut value: T, what: &str) -> CResult {
    // SAFETY: caller contract.
    let size = unsafe { check_out(p, what) }?;
    if p.is_null() {
        return Ok(());
    }
    // SAFETY: `value` is a u32-prefixed repr(C) struct; keep the caller's size field.
    unsafe {
        (&mut value as *mut T)
            .cast::<u32>()
            .write_unaligned(size as u32)
    };
    // SAFETY: `size` (a published size ≤ size_of::<T>()) bytes are writable at `p` and
    // readable in `value`.
    unsafe {
        std::ptr::copy_nonoverlapping((&value as *const T).cast::<u8>(), p.cast::<u8>(), size)
    };
    Ok(())
}

/// Copy `s` plus a NUL into `(out, cap)`. On success `*out_len` = `s.len()` (without the
/// NUL); when `cap < s.len() + 1` returns `BUFFER_TOO_SMALL` with `*out_len` = the
/// capacity needed (`s.len() + 1`). `out` may be NULL when `cap == 0`.
///
/// # Safety
/// `out` must be NULL or valid for `cap` bytes of writes; `out_len` NULL or writable.
pub unsafe fn write_text(s: &str, out: *mut c_char, cap: usize, out_len: *mut usize) -> CResult {
    // SAFETY: caller contract.
    let out_len = unsafe { self::out(out_len, "out_len") }?;
    if cap > 0 && out.is_null() {
        return Err(Fail::null("out (with capacity > 0)"));
    }
    let need = s.len() + 1;
    if cap < need {
        *out_len = need;
        return Err(Fail::new(
            QS_STATUS_BUFFER_TOO_SMALL,
            format!("buffer holds {cap} bytes, {need} needed (text + NUL)"),
        ));
    }
    // SAFETY: `out` is valid for `cap ≥ need` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr(), out.cast::<u8>(), s.len());
        *out.add(s.len()) = 0;
    }
    *out_len = s.len();
    Ok(())
}

/// Copy `v` into `(out, cap)`; `BUFFER_TOO_SMALL` with `*out_len` = `v.len()` when it does
/// not fit. `out` may be NULL when `cap == 0`.
///
/// # Safety
/// `out` must be NULL or valid for `cap` elements of writes; `out_len` NULL or writable.
pub unsafe fn write_slice<T: Copy>(
    v: &[T],
    out: *mut T,
    cap: usize,
    out_len: *mut usize,
) -> CResult {
    // SAFETY: caller contract.
    let out_len = unsafe { self::out(out_len, "out_len") }?;
    if cap > 0 && out.is_null() {
        return Err(Fail::null("out (with capacity > 0)"));
    }
    *out_len = v.len();
    if cap < v.len() {
        return Err(Fail::new(
            QS_STATUS_BUFFER_TOO_SMALL,
            format!("buffer holds {cap} elements, {} needed", v.len()),
        ));
    }
    // SAFETY: `out` is valid for `cap ≥ v.len()` elements.
    unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), out, v.len()) };
    Ok(())
}

/// Intern a static name as a NUL-terminated C string (names are few and fixed).
pub fn static_cstr(s: &'static str) -> *const c_char {
    use std::collections::HashMap;
    use std::ffi::CString;
    use std::sync::Mutex;
    static NAMES: Mutex<Option<HashMap<&'static str, &'static CStr>>> = Mutex::new(None);
    let mut g = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    let map = g.get_or_insert_with(HashMap::new);
    map.entry(s)
        .or_insert_with(|| Box::leak(CString::new(s).unwrap_or_default().into_boxed_c_str()))
        .as_ptr()
}
