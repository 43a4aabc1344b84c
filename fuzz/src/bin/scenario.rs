//! Fuzz target: the simulator's scenario TOML parser and validation
//! (`aya_sim::scenario::Scenario::parse`). Any text must give a scenario or
//! a `ScenarioError`, never a panic. Parsing reads no file (trace
//! workloads are loaded when the scenario runs, not here).

use std::path::Path;

use aya_sim::scenario::Scenario;

fn main() {
    afl::fuzz!(|data: &[u8]| {
        if let Ok(text) = std::str::from_utf8(data) {
            let _ = Scenario::parse(text, Path::new("scenarios/fuzz.toml"));
        }
    });
}
