//! A counting global allocator: proves that the control loop allocates nothing per tick. Binaries
//! and tests install it with `#[global_allocator]`; calls made inside a third-party inference runtime
//! (tract allocates its tensors) are counted apart, so "the loop" means our code. Counts are per
//! thread, so tests running in parallel do not see each other's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static IN_RUNTIME: Cell<u32> = const { Cell::new(0) };
    static LOOP: Cell<u64> = const { Cell::new(0) };
    static RUNTIME: Cell<u64> = const { Cell::new(0) };
}

/// Counts every allocation (and reallocation) on top of the system allocator.
pub struct CountingAllocator;

fn count() {
    // `try_with` so that allocations during thread teardown are still served.
    let inside = IN_RUNTIME.try_with(|c| c.get() > 0).unwrap_or(false);
    let counter = if inside { &RUNTIME } else { &LOOP };
    let _ = counter.try_with(|c| c.set(c.get() + 1));
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Allocations this thread made outside inference runtimes so far.
pub fn loop_allocations() -> u64 {
    LOOP.with(Cell::get)
}

/// `f`'s result and the allocations it made on this thread outside inference runtimes.
pub fn allocations_in<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = loop_allocations();
    let r = f();
    (r, (loop_allocations() - before) as usize)
}

/// Allocations this thread made inside inference runtimes so far.
pub fn runtime_allocations() -> u64 {
    RUNTIME.with(Cell::get)
}

/// Marks the current thread as inside an inference runtime until dropped.
pub struct RuntimeScope(());

impl RuntimeScope {
    pub fn enter() -> RuntimeScope {
        IN_RUNTIME.with(|c| c.set(c.get() + 1));
        RuntimeScope(())
    }
}

impl Drop for RuntimeScope {
    fn drop(&mut self) {
        IN_RUNTIME.with(|c| c.set(c.get().saturating_sub(1)));
    }
}
