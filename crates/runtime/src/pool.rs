//! Activation buffer pool: buffers are keyed by their (rounded) size and handed back when the
//! last tensor that uses them drops, so a forward pass reuses buffers within itself and
//! across passes. Weights are allocated outside the pool.

use std::collections::HashMap;

#[derive(Default)]
pub(crate) struct BufferPool {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    free_bytes: u64,
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
    pub(crate) fn take(&mut self, class: u64) -> Option<wgpu::Buffer> {
        let b = self.free.get_mut(&class)?.pop()?;
        self.free_bytes -= class;
        Some(b)
    }
    pub(crate) fn give(&mut self, class: u64, buffer: wgpu::Buffer) {
        self.free_bytes += class;
        self.free.entry(class).or_default().push(buffer);
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
