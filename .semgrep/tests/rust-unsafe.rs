// Rule test for rust-no-unsafe (semgrep --test).
fn bad(p: *const u8) -> u8 {
    // ruleid: rust-no-unsafe
    let v = unsafe { *p };
    // ruleid: rust-no-unsafe
    unsafe {
        std::env::set_var("X", "1");
    }
    v
}

// ruleid: rust-no-unsafe
unsafe fn raw(p: *const u8) -> u8 {
    0
}

struct Handle(*mut u8);
// ruleid: rust-no-unsafe
unsafe impl Send for Handle {}

// ruleid: rust-no-unsafe
#[unsafe(no_mangle)]
pub extern "C" fn exported() {}

fn fine(v: &[u8]) -> Option<u8> {
    // ok: rust-no-unsafe
    let first = v.first().copied();
    // ok: rust-no-unsafe
    let unsafe_count = 0;
    first
}
