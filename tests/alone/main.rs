//! Tests that must not share their process with other tests: they read the
//! process-wide counters (`sysmanage_node::metrics::COUNTERS`) as exact
//! deltas, count the process's live heap bytes ([`live_heap_bytes`]), or
//! need most of the process's file descriptors. They are a crate
//! of their own (no other crate's tests run in this process), and each holds
//! [`ALONE`] while it runs (`smuggling`: while each of its cases runs), so
//! that under `cargo test` they run one at a time.

#[path = "../support/mod.rs"]
mod support;

#[path = "../support/raw_backend.rs"]
mod raw_backend;
#[path = "../support/strict_h1.rs"]
mod strict_h1;

mod idle_tunnels;
mod smuggling;
mod store_memory;
mod store_writer;
mod tls_metrics;
mod upgrade;
mod websocket_scale;

/// Held by a test of this crate for as long as nothing else may run.
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Live heap bytes of this process: allocations minus frees, counted by
/// [`CountingAllocator`] (`store_memory` reads it; the tests of this crate
/// run one at a time, so the count is the running test's).
pub fn live_heap_bytes() -> i64 {
    LIVE.load(std::sync::atomic::Ordering::Relaxed)
}

static LIVE: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// The system allocator, counting live bytes.
struct CountingAllocator;

// SAFETY: every call is forwarded to `System` unchanged; the counter is
// only arithmetic beside it.
unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size() as i64, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// A session of pool `agents` on server `app1`, written by node `lb1` at
/// `now_ms`, valid for an hour (the store tests write these).
pub fn agent_session(key: String, now_ms: u64) -> sysmanage_node::sessions::SessionRecord {
    sysmanage_node::sessions::SessionRecord {
        key,
        pool: "agents".into(),
        server: "app1".into(),
        expires_at_ms: now_ms + 3_600_000,
        version: sysmanage_node::sessions::Hlc::from_parts(now_ms, 0),
        origin: "lb1".into(),
        tombstone: false,
    }
}
