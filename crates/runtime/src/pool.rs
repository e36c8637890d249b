//! Activation buffer pool: buffers are keyed by their (rounded) size and handed back when the
//! last tensor that uses them drops, so a forward pass reuses buffers within itself and
//! across passes. Weights are allocated outside the pool.
//!
//! **Ownership across recordings.** A pooled buffer remembers which recordings bound it
//! (each recording has a process-unique id). When it is released while some of those are
//! still open (not yet submitted or dropped), their recorded work has not reached the queue,
//! so the buffer is *pending* on them:
//! - the recording it is pending on may reuse it for its own GPU ops
//!   ([`Recorder::alloc`](crate::Recorder::alloc), which every op uses for its outputs): those
//!   ops are recorded, and so run, after the reads already recorded;
//! - any other taker gets another buffer: another recording (perhaps on another thread, whose
//!   submit may come first), a graph capture (whose replays may come first), a host upload
//!   (`queue.write_buffer` lands before any later-submitted work), or a plain
//!   [`Device::alloc`](crate::Device::alloc), which is attributed to no recording.
//!
//! A buffer handed to its pending recording keeps that pending list (its tensor's users start
//! with it), so it stays protected when it is released again unbound; binding it in another
//! recording, or writing it from the host, while that recording is open is refused.
//!
//! Once every recording a buffer is pending on has been submitted (or dropped), any later
//! use is queue-ordered after its reads, so it is free for everyone again. Submitting is
//! enough; no wait for the GPU is needed. This makes recordings opened at the same time on
//! one device, from any number of threads, correct by construction.

use std::collections::HashMap;

struct Free {
    buffer: wgpu::Buffer,
    /// Open recordings that bound this buffer when it was released.
    pending: Vec<u64>,
}

/// Who asks the pool for a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Taker {
    /// The host writes the buffer before any GPU use (an upload).
    Host,
    /// A GPU op of this (ordinary, not capturing) recording.
    Recording(u64),
    /// Attributed to no recording (`Device::alloc`, a capture): only buffers pending on
    /// nothing.
    Unattributed,
}

#[derive(Default)]
pub(crate) struct BufferPool {
    free: HashMap<u64, Vec<Free>>,
    free_bytes: u64,
    /// Recordings opened and not yet submitted or dropped, on any thread.
    open: Vec<u64>,
}

/// Recording ids, unique in the process.
static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

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
    /// A free buffer of `class` that `taker` may use (see the module doc), with the open
    /// recording it is still pending on (only ever the taker itself).
    pub(crate) fn take(&mut self, class: u64, taker: Taker) -> Option<(wgpu::Buffer, Option<u64>)> {
        let open = &self.open;
        let list = self.free.get_mut(&class)?;
        let pos = list.iter().rposition(|f| {
            f.pending
                .iter()
                .all(|p| !open.contains(p) || taker == Taker::Recording(*p))
        })?;
        self.free_bytes -= class;
        let f = list.swap_remove(pos);
        let pending = f.pending.into_iter().find(|p| open.contains(p));
        Some((f.buffer, pending))
    }
    /// Returns a buffer that the recordings `users` bound.
    pub(crate) fn give(&mut self, class: u64, buffer: wgpu::Buffer, users: &[u64]) {
        self.free_bytes += class;
        let pending = users
            .iter()
            .copied()
            .filter(|u| self.open.contains(u))
            .collect();
        self.free
            .entry(class)
            .or_default()
            .push(Free { buffer, pending });
    }
    /// Registers a new recording and returns its id.
    pub(crate) fn open_recording(&mut self) -> u64 {
        let id = NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.open.push(id);
        id
    }
    /// After a recording's submit (or drop): what was pending on it alone is free for all.
    pub(crate) fn close_recording(&mut self, id: u64) {
        self.open.retain(|&o| o != id);
        if self.open.is_empty() {
            self.free
                .values_mut()
                .flatten()
                .for_each(|f| f.pending.clear());
        }
    }
    /// Whether recording `id` is still open.
    pub(crate) fn is_open(&self, id: u64) -> bool {
        self.open.contains(&id)
    }
    pub(crate) fn open_recordings(&self) -> usize {
        self.open.len()
    }
    pub(crate) fn free_bytes(&self) -> u64 {
        self.free_bytes
    }
    /// Free buffers held.
    pub(crate) fn free_buffers(&self) -> usize {
        self.free.values().map(Vec::len).sum()
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
