//! What glibc's malloc keeps, for a process that runs for months. glibc
//! gives each thread that contends for the heap an arena of its own, up to
//! eight per core, and memory freed in one stays there: the blocking threads
//! that run the store's reads come and go, and the resident size climbs with
//! them (`sluice bench soak`, 30 minutes on the embedded store: 26 → 58 MiB
//! with the default, 23 → 31 MiB with two arenas). Freed pages between live
//! blocks stay resident too, so long-running hosts also trim every minute.
//!
//! The contracts, from the Linux man-pages: mallopt(3) — `M_ARENA_MAX` is a
//! hard limit on the arenas that can be created (glibc 2.15 and later), and
//! mallopt returns 1 on success, 0 on error; malloc_trim(3) — MT-Safe,
//! returns 1 if memory was released, and since glibc 2.8 frees memory in all
//! arenas and in all chunks with whole free pages (before, only the top of
//! the main arena).

/// The arenas Sluice asks for.
pub const ARENAS: i32 = 2;

/// What became of the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArenaLimit {
    /// Set to [`ARENAS`].
    Applied,
    /// `MALLOC_ARENA_MAX` (or a glibc tunable) was given; glibc applied it and so do we.
    LeftToEnvironment,
    /// glibc refused it, or this is not glibc.
    NotApplied,
}

/// Whether the environment already says how many arenas to keep.
pub fn chosen_by_environment(var: &dyn Fn(&str) -> Option<String>) -> bool {
    var("MALLOC_ARENA_MAX").is_some() || var("GLIBC_TUNABLES").is_some_and(|t| t.contains("glibc.malloc.arena_max"))
}

/// Limits the arenas; call before any thread starts (arenas already made stay).
pub fn limit_arenas() -> ArenaLimit {
    if chosen_by_environment(&|k| std::env::var(k).ok()) {
        return ArenaLimit::LeftToEnvironment;
    }
    if set_arena_max(ARENAS) {
        ArenaLimit::Applied
    } else {
        ArenaLimit::NotApplied
    }
}

/// How often a long-running host hands freed memory back.
pub const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Hands the pages of freed memory back to the system. Two arenas keep the
/// resident size from multiplying by threads, but glibc still returns
/// freed pages only from the top of each heap: on the Table store, whose
/// scrapes and sweeps allocate and free many states' JSON, `bench soak`
/// grew resident memory to 88 MiB while heaptrack counted a heap peak of
/// 27 MiB and 4 MiB live at the end. `malloc_trim(0)` releases the whole
/// free pages anywhere in every arena; true if it released any.
pub fn release_free_memory() -> bool {
    trim()
}

/// Releases freed memory every [`TRIM_EVERY`], on a blocking thread (it
/// walks the heaps under their locks), for as long as the runtime runs.
pub fn trim_periodically() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        let mut every = tokio::time::interval(TRIM_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            let _ = tokio::task::spawn_blocking(release_free_memory).await;
        }
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() -> bool {
    // SAFETY: malloc_trim takes a byte count and works on malloc's own
    // heaps under their locks; it returns 1 if memory was released.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_arena_max(arenas: i32) -> bool {
    // SAFETY: mallopt takes two integers and touches only malloc's own
    // parameters under its lock; it returns 1 on success, 0 on error.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_arenas: i32) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_decides_when_it_names_the_arenas() {
        let none = |_: &str| None;
        assert!(!chosen_by_environment(&none));
        let set = |k: &str| (k == "MALLOC_ARENA_MAX").then(|| "8".to_string());
        assert!(chosen_by_environment(&set));
        let tunable = |k: &str| (k == "GLIBC_TUNABLES").then(|| "glibc.malloc.arena_max=4:glibc.malloc.tcache_count=0".to_string());
        assert!(chosen_by_environment(&tunable));
        let other = |k: &str| (k == "GLIBC_TUNABLES").then(|| "glibc.malloc.tcache_count=0".to_string());
        assert!(!chosen_by_environment(&other));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_takes_the_limit() {
        assert!(set_arena_max(ARENAS));
    }

    /// Freed blocks between live ones are whole free pages no heap top can
    /// give back; the trim does (it answers whether it released any).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn the_trim_hands_back_freed_pages_between_live_blocks() {
        let mut blocks: Vec<Vec<u8>> = (0..4_000).map(|i| vec![(i % 251) as u8; 16 * 1024]).collect();
        let kept: Vec<Vec<u8>> = blocks.iter_mut().step_by(16).map(std::mem::take).collect();
        drop(blocks);
        assert!(release_free_memory(), "about 60 MiB freed between live blocks, and nothing released");
        assert_eq!(kept.len(), 250);
        assert!(kept.iter().enumerate().all(|(i, b)| b.len() == 16 * 1024 && b[0] == ((i * 16) % 251) as u8), "live blocks are untouched");
    }
}
