//! Fuzz target: the controller's `aya.toml` parser and validation
//! (`Config::from_toml`, then `Config::validate`, as `aya serve` does).
//! Any text must give a configuration or a `ConfigError`, never a panic.
//! (Validation reads the `token_file`s and TLS files a configuration names;
//! the fuzzer runs it in its own working directory.)

use std::path::Path;

use aya_controller::config::Config;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(text) = std::str::from_utf8(data)
            && let Ok(mut config) = Config::from_toml(text, Path::new("aya.toml"))
        {
            let _ = config.validate();
        }
    });
}
