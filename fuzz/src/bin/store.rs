//! Fuzz target: the controller's store loader. The input is written as
//! `aya.redb` in a temp data directory, which is then opened
//! (`Store::open_with`, as `aya serve` does), restored and scanned, and
//! checked read-only (`Store::check`, as `aya store check` does). Any file
//! must give an error naming it, or a usable store, never a panic.
//!
//! The store runs redb behind `catch_unwind` on purpose (a redb panic on a
//! damaged file becomes `StoreError`), so this target installs its own
//! panic hook: a panic raised in redb's code is left to that handler,
//! a panic anywhere else (Aya's code, std, other crates) aborts, which AFL
//! records as a crash.

use aya_controller::store::{OpenMode, Store};

fn abort_unless_redb(info: &std::panic::PanicHookInfo<'_>) {
    let in_redb = info.location().is_some_and(|l| l.file().contains("/redb-"));
    if !in_redb {
        eprintln!("{info}");
        std::process::abort();
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("a temp dir for the fuzz store");
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).expect("the fuzz data dir");
    let file = data_dir.join("aya.redb");
    std::panic::set_hook(Box::new(abort_unless_redb));
    afl::fuzz_nohook!(|data: &[u8]| {
        std::fs::write(&file, data).expect("the fuzz store file is written");
        let _ = Store::check(&file);
        if let Ok(store) = Store::open_with(&data_dir, OpenMode::Existing) {
            let _ = store.restore();
            let _ = store.scan(i64::MIN, |_, _, _| {});
        }
    });
}
