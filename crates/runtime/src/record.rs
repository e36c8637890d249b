//! Recording: a whole forward pass goes into one command encoder (one compute pass) and one
//! submit. Per-op parameters are written into a uniform arena — 64 KiB chunks with 256-byte
//! slots bound at dynamic offsets — so no buffer is created per dispatch.
//!
//! Two modes change this, both from [`DeviceOptions`](crate::DeviceOptions): `debug` submits
//! and waits after every op so an error names its op; `profile` times every dispatch (its own
//! pass with timestamp writes where supported, wall clock after a wait otherwise).

use std::time::Instant;

use crate::device::Device;
use crate::error::{shape_err, Result};
use crate::pipeline::PipelineKey;
use crate::profile::{OpInfo, OpTiming};
use crate::tensor::Tensor;

const CHUNK_BYTES: u64 = 64 * 1024;
const SLOT: usize = 256;
const MAX_TIMED_QUERIES: u32 = 4096;

struct Timestamps {
    set: wgpu::QuerySet,
    ops: Vec<OpInfo>,
}

/// Records dispatches for one submit.
pub struct Recorder<'d> {
    dev: &'d Device,
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    /// Uniform chunks in use and the bytes staged for each.
    chunks: Vec<(wgpu::Buffer, Vec<u8>)>,
    timestamps: Option<Timestamps>,
    wall: Vec<OpTiming>,
    pub(crate) label: &'static str,
    dispatches: usize,
    /// Capturing for a [`crate::graph::Graph`]: ops are kept, not encoded.
    pub(crate) capture: Option<crate::graph::Capture>,
    /// This recording's id in the pool's ownership tracking (see `pool`).
    id: u64,
}

/// Grid for `workgroups` one-dimensional groups, folded into y past the 65,535 limit.
/// Shaders recover the linear id as `wid.x + wid.y * nwg.x`.
pub fn grid_1d(workgroups: u32) -> [u32; 3] {
    const MAX: u32 = 65_535;
    if workgroups <= MAX {
        [workgroups.max(1), 1, 1]
    } else {
        let y = workgroups.div_ceil(MAX);
        [workgroups.div_ceil(y), y, 1]
    }
}

/// A grid must fit the device's per-dimension limit, and its invocations must be countable
/// in u32 (kernels form `group_index * WG + local index` in u32): an error naming the op,
/// never a wrapped index or a failed dispatch.
pub(crate) fn check_grid(op: &str, groups: [u32; 3], wg: u32, max_dim: u32) -> Result<()> {
    if let Some(d) = groups.iter().position(|&g| g > max_dim) {
        return Err(shape_err(
            "dispatch",
            format!(
                "{op}: {} workgroups along {} exceed the device's {max_dim} per dimension",
                groups[d],
                ["x", "y", "z"][d]
            ),
        ));
    }
    let invocations = groups.iter().map(|&g| g as u64).product::<u64>() * wg as u64;
    if invocations > u32::MAX as u64 {
        return Err(shape_err(
            "dispatch",
            format!("{op}: {invocations} invocations do not fit u32 indices (at most 2^32 - 1)"),
        ));
    }
    Ok(())
}

impl<'d> Recorder<'d> {
    /// Starts a recording.
    pub fn new(dev: &'d Device, label: &'static str) -> Self {
        Self::open(dev, label, None)
    }

    pub(crate) fn open(
        dev: &'d Device,
        label: &'static str,
        capture: Option<crate::graph::Capture>,
    ) -> Self {
        let id = dev
            .inner
            .pool
            .lock()
            .map(|mut p| p.open_recording())
            .unwrap_or(0);
        let timestamps = (dev.profiling() && dev.caps().timestamps).then(|| Timestamps {
            set: dev
                .inner
                .device
                .create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("spikescan profile"),
                    ty: wgpu::QueryType::Timestamp,
                    count: MAX_TIMED_QUERIES,
                }),
            ops: Vec::new(),
        });
        Self {
            dev,
            encoder: None,
            pass: None,
            chunks: Vec::new(),
            timestamps,
            wall: Vec::new(),
            label,
            dispatches: 0,
            capture,
            id,
        }
    }

    /// An uninitialised pooled tensor for this recording's ops to write (every op allocates
    /// its outputs here). It may reuse a buffer that this recording's earlier ops still read
    /// (their reads run first); so it is for this recording's GPU work only: binding it in
    /// another recording, or writing it from the host, while this one is open is refused
    /// when its buffer is such a one. For host data use [`Device::upload`]; for a tensor
    /// shared with other recordings, [`Device::alloc`].
    pub fn alloc(&self, shape: &[usize], dtype: crate::DType) -> Result<Tensor> {
        let taker = if self.capture.is_some() {
            crate::pool::Taker::Unattributed
        } else {
            crate::pool::Taker::Recording(self.id)
        };
        self.dev.alloc_for(shape, dtype, taker)
    }

    /// The device this recorder records for.
    pub fn device(&self) -> &'d Device {
        self.dev
    }

    /// Dispatches recorded so far.
    pub fn dispatch_count(&self) -> usize {
        self.dispatches
    }

    fn encoder(&mut self) -> &mut wgpu::CommandEncoder {
        let dev = self.dev;
        let label = self.label;
        self.encoder.get_or_insert_with(|| {
            dev.inner
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) })
        })
    }

    fn end_pass(&mut self) {
        self.pass = None;
    }

    /// Stages `params` in the arena; returns (chunk index, offset).
    fn stage_params(&mut self, params: &[u8]) -> Result<(usize, u32)> {
        if params.len() > SLOT {
            return Err(shape_err(
                "params",
                format!("{} bytes exceed a {SLOT}-byte slot", params.len()),
            ));
        }
        let need_new = self
            .chunks
            .last()
            .is_none_or(|(_, bytes)| bytes.len() + SLOT > CHUNK_BYTES as usize);
        if need_new {
            let reuse = self
                .dev
                .inner
                .uniform_chunks
                .lock()
                .ok()
                .and_then(|mut c| c.pop());
            let buf = match reuse {
                Some(b) => b,
                None => self.dev.scoped(
                    || "allocating a uniform arena chunk".into(),
                    || {
                        self.dev
                            .inner
                            .device
                            .create_buffer(&wgpu::BufferDescriptor {
                                label: Some("spikescan params"),
                                size: CHUNK_BYTES,
                                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                                mapped_at_creation: false,
                            })
                    },
                )?,
            };
            self.chunks
                .push((buf, Vec::with_capacity(CHUNK_BYTES as usize)));
        }
        let idx = self.chunks.len() - 1;
        let bytes = &mut self.chunks[idx].1;
        let off = bytes.len();
        bytes.extend_from_slice(params);
        bytes.resize(off + SLOT, 0);
        Ok((idx, off as u32))
    }

    /// Records one dispatch of `key` with its params, read-only `inputs` and writable
    /// `outputs` (bound in that order after the params at binding 0).
    pub fn dispatch<P: bytemuck::Pod>(
        &mut self,
        key: &PipelineKey,
        params: &P,
        inputs: &[&Tensor],
        outputs: &[&Tensor],
        groups: [u32; 3],
        info: impl FnOnce() -> OpInfo,
    ) -> Result<()> {
        if inputs.len() != key.inputs as usize || outputs.len() != key.outputs as usize {
            return Err(shape_err(
                "dispatch",
                format!(
                    "{} takes {} inputs and {} outputs, got {} and {}",
                    key.label(),
                    key.inputs,
                    key.outputs,
                    inputs.len(),
                    outputs.len()
                ),
            ));
        }
        for o in outputs {
            if inputs
                .iter()
                .chain(outputs.iter())
                .filter(|t| t.same_buffer(o))
                .count()
                > 1
            {
                return Err(shape_err(
                    "dispatch",
                    format!(
                        "{}: an output shares its buffer with another binding",
                        key.label()
                    ),
                ));
            }
        }
        self.dev.ensure_alive("recording a dispatch")?;
        check_grid(
            &key.label(),
            groups,
            self.dev.wg(),
            self.dev.limits().max_compute_workgroups_per_dimension,
        )?;
        let kernel = self.dev.kernel(key)?;
        for t in inputs.iter().chain(outputs.iter()) {
            t.mark_user(self.id)?;
        }
        let pbytes = bytemuck::bytes_of(params);
        let (chunk, offset) = self.stage_params(pbytes)?;
        let psize = (pbytes.len().div_ceil(16) * 16).max(16) as u64;
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.chunks[chunk].0,
                offset: 0,
                size: std::num::NonZeroU64::new(psize),
            }),
        }];
        for (i, t) in inputs.iter().chain(outputs.iter()).enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: 1 + i as u32,
                resource: t.buffer().as_entire_binding(),
            });
        }
        // A validation scope (per thread in wgpu) catches an error of this bind group, so
        // the error names this op even with other threads recording; errors found later (in
        // the pass, at submit) name it by the bind group's label.
        let scope = self
            .dev
            .inner
            .device
            .push_error_scope(wgpu::ErrorFilter::Validation);
        let bind = self
            .dev
            .inner
            .device
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(&kernel.label),
                layout: &kernel.layout,
                entries: &entries,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            let op = info();
            return Err(crate::error::RuntimeError::Validation {
                context: format!(
                    "binding the buffers of op {} {} ({})",
                    op.name, op.shape, kernel.label
                ),
                message: e.to_string(),
            });
        }
        if let Some(cap) = self.capture.as_mut() {
            cap.hold(inputs);
            cap.hold(outputs);
            cap.steps.push(crate::graph::Step::Dispatch {
                kernel,
                bind,
                offset,
                groups,
            });
            self.dispatches += 1;
            return Ok(());
        }
        let profile = self.dev.profiling();
        let debug = self.dev.options().debug;
        let timed_index = match &self.timestamps {
            Some(ts) if (ts.ops.len() as u32 + 1) * 2 <= MAX_TIMED_QUERIES => {
                Some(ts.ops.len() as u32)
            }
            _ => None,
        };
        if timed_index.is_some() {
            self.end_pass();
        }
        if self.pass.is_none() {
            let ts = self.timestamps.as_ref().map(|t| t.set.clone());
            let writes =
                timed_index
                    .zip(ts.as_ref())
                    .map(|(i, set)| wgpu::ComputePassTimestampWrites {
                        query_set: set,
                        beginning_of_pass_write_index: Some(2 * i),
                        end_of_pass_write_index: Some(2 * i + 1),
                    });
            let desc = wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: writes,
            };
            let pass = self.encoder().begin_compute_pass(&desc).forget_lifetime();
            self.pass = Some(pass);
        }
        let pass = self.pass.as_mut().expect("pass just opened");
        pass.set_pipeline(&kernel.pipeline);
        pass.set_bind_group(0, &bind, &[offset]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        self.dispatches += 1;
        if let (Some(ts), Some(_)) = (self.timestamps.as_mut(), timed_index) {
            ts.ops.push(info());
            self.end_pass();
        } else if profile || debug {
            let info = if profile { Some(info()) } else { None };
            let t0 = Instant::now();
            self.flush(&kernel.label)?;
            self.dev.wait(&format!("op {}", kernel.label))?;
            if let Some(info) = info {
                self.wall.push(OpTiming {
                    info,
                    micros: t0.elapsed().as_secs_f64() * 1e6,
                    gpu_timestamps: false,
                });
            }
        }
        Ok(())
    }

    /// Records a buffer-to-buffer copy of `src` into the start of `dst`.
    pub fn copy(&mut self, src: &Tensor, dst: &Tensor) -> Result<()> {
        self.copy_at(src, dst, 0)
    }

    /// Records a copy of `src` into `dst` starting `offset` bytes in (a multiple of 4).
    pub fn copy_at(&mut self, src: &Tensor, dst: &Tensor, offset: u64) -> Result<()> {
        if src.same_buffer(dst) || !offset.is_multiple_of(4) || offset + src.bytes() > dst.bytes() {
            return Err(shape_err(
                "copy",
                format!(
                    "{} bytes at offset {offset} do not fit {} bytes (or the buffers alias)",
                    src.bytes(),
                    dst.bytes()
                ),
            ));
        }
        let n = src.bytes().div_ceil(4) * 4;
        self.dev.ensure_alive("recording a copy")?;
        src.mark_user(self.id)?;
        dst.mark_user(self.id)?;
        if let Some(cap) = self.capture.as_mut() {
            cap.hold(&[src, dst]);
            cap.steps.push(crate::graph::Step::Copy {
                src: src.clone(),
                src_offset: 0,
                dst: dst.clone(),
                dst_offset: offset,
                bytes: n,
            });
            return Ok(());
        }
        self.end_pass();
        if n > 0 {
            self.encoder()
                .copy_buffer_to_buffer(src.buffer(), 0, dst.buffer(), offset, n);
        }
        Ok(())
    }

    /// Records a copy of `bytes` bytes from `src` (starting `src_offset` bytes in) into `dst`
    /// (starting `dst_offset`); offsets and length multiples of 4, within both tensors' data.
    pub fn copy_region(
        &mut self,
        src: &Tensor,
        src_offset: u64,
        dst: &Tensor,
        dst_offset: u64,
        bytes: u64,
    ) -> Result<()> {
        let aligned =
            src_offset.is_multiple_of(4) && dst_offset.is_multiple_of(4) && bytes.is_multiple_of(4);
        if src.same_buffer(dst)
            || !aligned
            || src_offset + bytes > src.bytes()
            || dst_offset + bytes > dst.bytes()
        {
            return Err(shape_err(
                "copy",
                format!(
                    "{bytes} bytes from offset {src_offset} of {} into offset {dst_offset} of {} (4-byte aligned, distinct buffers)",
                    src.bytes(),
                    dst.bytes()
                ),
            ));
        }
        self.dev.ensure_alive("recording a copy")?;
        src.mark_user(self.id)?;
        dst.mark_user(self.id)?;
        if let Some(cap) = self.capture.as_mut() {
            cap.hold(&[src, dst]);
            cap.steps.push(crate::graph::Step::Copy {
                src: src.clone(),
                src_offset,
                dst: dst.clone(),
                dst_offset,
                bytes,
            });
            return Ok(());
        }
        self.end_pass();
        if bytes > 0 {
            self.encoder().copy_buffer_to_buffer(
                src.buffer(),
                src_offset,
                dst.buffer(),
                dst_offset,
                bytes,
            );
        }
        Ok(())
    }

    /// Writes the staged params once and hands their chunks over (for a graph, which keeps
    /// them for its lifetime).
    pub(crate) fn take_chunks_written(&mut self) -> Vec<wgpu::Buffer> {
        for (buf, bytes) in &self.chunks {
            if !bytes.is_empty() {
                self.dev.inner.queue.write_buffer(buf, 0, bytes);
            }
        }
        self.chunks.drain(..).map(|(b, _)| b).collect()
    }

    /// Writes the staged params and submits what was recorded so far.
    fn flush(&mut self, context: &str) -> Result<()> {
        self.end_pass();
        let dev = self.dev;
        for (buf, bytes) in &self.chunks {
            if !bytes.is_empty() {
                dev.inner.queue.write_buffer(buf, 0, bytes);
            }
        }
        let chunks: Vec<wgpu::Buffer> = self.chunks.drain(..).map(|(b, _)| b).collect();
        if let Some(enc) = self.encoder.take() {
            let result = dev.scoped(
                || format!("submitting {} ({context})", self.label),
                || dev.inner.queue.submit([enc.finish()]),
            );
            // Later writes to these chunks are queue-ordered after this submit.
            if let Ok(mut c) = dev.inner.uniform_chunks.lock() {
                c.extend(chunks);
            }
            result?;
        }
        dev.check(context)
    }

    /// Submits the recording. In profiling mode this waits and stores the per-op timings
    /// on the device ([`Device::take_profile`]).
    pub fn submit(mut self) -> Result<()> {
        self.dev.ensure_alive("submitting a recording")?;
        if self.capture.is_some() {
            return Err(shape_err(
                "submit",
                "a capturing recording is turned into a graph (into_graph), not submitted",
            ));
        }
        let mut resolve = None;
        if let Some(ts) = self.timestamps.take() {
            let n = ts.ops.len() as u32 * 2;
            if n > 0 {
                let buf = self
                    .dev
                    .inner
                    .device
                    .create_buffer(&wgpu::BufferDescriptor {
                        label: Some("spikescan timestamps"),
                        size: n as u64 * 8,
                        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                        mapped_at_creation: false,
                    });
                self.end_pass();
                self.encoder().resolve_query_set(&ts.set, 0..n, &buf, 0);
                resolve = Some((buf, ts.ops));
            }
        }
        self.flush("submit")?;
        let mut timings = std::mem::take(&mut self.wall);
        if let Some((buf, ops)) = resolve {
            let raw = self.dev.read_buffer(&buf, ops.len() as u64 * 16)?;
            let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(&raw);
            let period = self.dev.inner.timestamp_period_ns as f64;
            for (i, info) in ops.into_iter().enumerate() {
                let dt = ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * period / 1e3;
                timings.push(OpTiming {
                    info,
                    micros: dt,
                    gpu_timestamps: true,
                });
            }
        }
        if !timings.is_empty() {
            if let Ok(mut p) = self.dev.inner.profile.lock() {
                p.extend(timings);
            }
        }
        Ok(())
    }
}

impl Drop for Recorder<'_> {
    fn drop(&mut self) {
        // A recording dropped without submit must still close its pass before the encoder.
        self.pass = None;
        let chunks: Vec<wgpu::Buffer> = self.chunks.drain(..).map(|(b, _)| b).collect();
        if let Ok(mut c) = self.dev.inner.uniform_chunks.lock() {
            c.extend(chunks);
        }
        // After submit() (which ends by dropping the recorder) or an abandoned recording.
        if let Ok(mut p) = self.dev.inner.pool.lock() {
            p.close_recording(self.id);
        }
    }
}

impl Device {
    /// Starts a recording on this device.
    pub fn recorder(&self, label: &'static str) -> Recorder<'_> {
        Recorder::new(self, label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_that_would_wrap_u32_indices_are_errors() {
        // The largest binding's elements (2^30 - 1 f32) in 128-wide groups: fine.
        let n: u32 = (crate::device::MAX_BINDING_BYTES / 4) as u32;
        for wg in [128, 256] {
            let g = grid_1d(n.div_ceil(wg));
            check_grid("op", g, wg, 65_535).unwrap();
            // The last invocation's linear index stays in u32.
            assert!((g[0] as u64 * g[1] as u64) * wg as u64 <= u32::MAX as u64);
        }
        // 2^32 invocations: refused, naming the op.
        let e = check_grid("big", [65_535, 65_535, 1], 256, 65_535).unwrap_err();
        assert!(
            e.to_string().contains("big") && e.to_string().contains("u32"),
            "{e}"
        );
        // Past the per-dimension limit (a fold of more than 65,535^2 groups).
        let e = check_grid("fold", grid_1d(u32::MAX), 1, 65_535).unwrap_err();
        assert!(e.to_string().contains("along y"), "{e}");
    }
}
