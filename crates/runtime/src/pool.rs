//! Activation buffer pool: buffers are keyed by their (rounded) size and handed back when the
//! last tensor that uses them drops, so a forward pass reuses buffers within itself and
//! across passes. Weights are allocated outside the pool.
//!
//! A buffer released while a recording is open may still be read by that recording once it
//! is submitted. GPU ops recorded later are ordered after those reads, so they may reuse it;
//! a host upload (`queue.write_buffer`) lands before any recorded work and must not. Such
//! buffers are marked until every open recording has been submitted or dropped.

use std::collections::HashMap;

struct Free {
    buffer: wgpu::Buffer,
    /// Safe for a host write: released while no recording was open.
    host_ok: bool,
}

#[derive(Default)]
pub(crate) struct BufferPool {
    free: HashMap<u64, Vec<Free>>,
    free_bytes: u64,
    open_recordings: usize,
}

/// Buffers are rounded up so that nearby sizes share a class: to 256 bytes, and above
/// 1 MiB to 1/16 of the next power of two.
pub(crate) fn size_class(bytes: u64) -> u64 {
    let b = bytes.max(16);
    if b <= 1 << 20 {
        b.div_ceil(256) * 256
    } else {
        let step = b.next_power_of_two() / 16;
        b.div_ceil(step) * step
    }
}

impl BufferPool {
    /// A free buffer of `class`; for a host write, only one no pending recording reads.
    pub(crate) fn take(&mut self, class: u64, host_write: bool) -> Option<wgpu::Buffer> {
        let list = self.free.get_mut(&class)?;
        let pos = if host_write {
            list.iter().rposition(|f| f.host_ok)?
        } else {
            list.len().checked_sub(1)?
        };
        self.free_bytes -= class;
        Some(list.swap_remove(pos).buffer)
    }
    pub(crate) fn give(&mut self, class: u64, buffer: wgpu::Buffer) {
        self.free_bytes += class;
        let host_ok = self.open_recordings == 0;
        self.free
            .entry(class)
            .or_default()
            .push(Free { buffer, host_ok });
    }
    pub(crate) fn open_recording(&mut self) {
        self.open_recordings += 1;
    }
    /// After a recording's submit (or drop): with none left open, every free buffer is safe
    /// for host writes again (later writes are queue-ordered after that submit).
    pub(crate) fn close_recording(&mut self) {
        self.open_recordings = self.open_recordings.saturating_sub(1);
        if self.open_recordings == 0 {
            self.free
                .values_mut()
                .flatten()
                .for_each(|f| f.host_ok = true);
        }
    }
    pub(crate) fn open_recordings(&self) -> usize {
        self.open_recordings
    }
    pub(crate) fn free_bytes(&self) -> u64 {
        self.free_bytes
    }
    pub(crate) fn clear(&mut self) {
        self.free.clear();
        self.free_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_cover_the_request_and_stay_close() {
        for bytes in [
            0u64,
            1,
            255,
            256,
            257,
            4096,
            1 << 20,
            (1 << 20) + 1,
            3 << 22,
            123_456_789,
        ] {
            let c = size_class(bytes);
            assert!(c >= bytes && c >= 16, "{bytes} -> {c}");
            assert!(
                c as f64 <= (bytes.max(256) as f64) * 1.13 + 256.0,
                "{bytes} -> {c}"
            );
        }
    }
}
