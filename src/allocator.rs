//! The process's allocator: mimalloc, told to give freed memory back at once.
//!
//! Why: a daemon's heap rises at each full resync and must fall again after it.
//! glibc's malloc kept the pages the resync had touched (at 10 035 objects an idle
//! daemon held ~25 MB of live heap in ~100 MiB of RSS); mimalloc with its defaults
//! kept them for a second or more and committed arenas eagerly. Measured in
//! BENCHMARKS.md ("Where an idle daemon's memory goes").

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc v3's option numbers (`mi_option_e` in its mimalloc.h); the crate names
/// only v2's. The test below checks them against v3's defaults.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

/// Purges unused pages as soon as they are free, and commits arena memory only
/// when it is used. Called first thing in `main`.
pub(crate) fn tune() {
    // SAFETY: `mi_option_set` only stores a number in mimalloc's option table;
    // both options are read at each purge and arena allocation.
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
        libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_numbers_are_mimalloc_v3s() {
        // SAFETY: reads mimalloc's option table.
        let (purge_delay, eager) = unsafe {
            (
                libmimalloc_sys::mi_option_get(PURGE_DELAY),
                libmimalloc_sys::mi_option_get(ARENA_EAGER_COMMIT),
            )
        };
        // v3's defaults, as long as `tune` has not run in this process.
        assert_eq!((purge_delay, eager), (1000, 2));
        tune();
        // SAFETY: as above.
        let tuned = unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        assert_eq!(tuned, 0);
    }
}
