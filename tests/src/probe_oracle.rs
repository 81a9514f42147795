//! The oracle of the probe property test (`tests/tests/probe_properties.rs`) and of the
//! fuzz target (`fuzz/fuzz_targets/probe_request.rs`, which includes this file), written
//! from the design (§4) rather than from the code.

/// The default probe paths.
pub const PROBES: [&str; 3] = ["/livez", "/readyz", "/startupz"];

/// A probe path is one of the three probe paths, or one of them followed by
/// `/<check name>` (per-check paths, on by default), compared exactly or ignoring ASCII
/// case.
pub fn is_probe_path(path: &str, case_insensitive: bool) -> bool {
    PROBES.iter().any(|probe| {
        let Some(head) = path.get(..probe.len()) else {
            return false;
        };
        let same = if case_insensitive {
            head.eq_ignore_ascii_case(probe)
        } else {
            head == *probe
        };
        let rest = &path[probe.len()..];
        same && (rest.is_empty() || rest.strip_prefix('/').is_some_and(|name| !name.is_empty()))
    })
}
