//! The median of each function's interleaved samples (the `interleaved` lines of the datapath,
//! sniff and inspect benches).

use std::time::Duration;

/// Sorts each list of samples and returns its median, in order.
pub(crate) fn medians(times: &mut [Vec<Duration>]) -> Vec<Duration> {
    times
        .iter_mut()
        .map(|t| {
            t.sort();
            t[t.len() / 2]
        })
        .collect()
}
