//! Replayable recordings: a [`Graph`] holds the dispatches and copies of one recording with
//! their pipelines, bind groups and uniform parameters built once, so a loop that runs the
//! same step again and again (a decode step) records nothing per iteration: each replay
//! encodes the stored commands into one command buffer and submits it. Host work per replay
//! is the encoding itself (no bind group, no pipeline lookup, no parameter upload).
//!
//! [`ReadbackRing`] copies a small tensor into one of a few mappable buffers as part of a
//! submit and maps it later, so the host reads results of step t while step t + 1 runs.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::device::Device;
use crate::error::{shape_err, Result, RuntimeError};
use crate::pipeline::Kernel;
use crate::record::Recorder;
use crate::tensor::Tensor;

pub(crate) enum Step {
    Dispatch {
        kernel: Arc<Kernel>,
        bind: wgpu::BindGroup,
        offset: u32,
        groups: [u32; 3],
    },
    Copy {
        src: Tensor,
        src_offset: u64,
        dst: Tensor,
        dst_offset: u64,
        bytes: u64,
    },
}

/// What a capturing [`Recorder`] keeps instead of encoding.
#[derive(Default)]
pub(crate) struct Capture {
    pub(crate) steps: Vec<Step>,
    /// Every tensor a step binds: kept alive, so no buffer returns to the pool while the
    /// graph can still be replayed.
    pub(crate) held: Vec<Tensor>,
}

impl Capture {
    pub(crate) fn hold(&mut self, tensors: &[&Tensor]) {
        for t in tensors {
            if !self.held.iter().any(|h| h.same_buffer(t)) {
                self.held.push((*t).clone());
            }
        }
    }
}

/// A recording that can be submitted again and again. Its tensors (inputs, outputs and every
/// intermediate) keep their buffers for the graph's lifetime, so a replay reads what the
/// caller last wrote into its inputs (or what an earlier replay left in them) and overwrites
/// its outputs in place.
pub struct Graph {
    pub(crate) label: &'static str,
    pub(crate) steps: Vec<Step>,
    pub(crate) held: Vec<Tensor>,
    /// The uniform arena chunks its bind groups point into, written once.
    pub(crate) _chunks: Vec<wgpu::Buffer>,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("label", &self.label)
            .field("dispatches", &self.dispatches())
            .field("copies", &(self.steps.len() - self.dispatches()))
            .finish()
    }
}

/// What a replay cost the host.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ReplayCost {
    pub dispatches: usize,
    pub copies: usize,
    pub submits: usize,
    /// Host time spent encoding and submitting (the GPU is not waited for).
    pub host_micros: f64,
    /// Of which in `queue.submit` (a driver may block there, e.g. on a full queue).
    pub submit_micros: f64,
}

impl Graph {
    /// Dispatches per replay.
    pub fn dispatches(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| matches!(s, Step::Dispatch { .. }))
            .count()
    }

    /// Buffer bytes the graph keeps bound (inputs, outputs and intermediates).
    pub fn held_bytes(&self) -> u64 {
        self.held.iter().map(|t| t.capacity()).sum()
    }

    fn encode(&self, enc: &mut wgpu::CommandEncoder) {
        let mut pass: Option<wgpu::ComputePass<'_>> = None;
        for s in &self.steps {
            match s {
                Step::Dispatch {
                    kernel,
                    bind,
                    offset,
                    groups,
                } => {
                    let p = pass.get_or_insert_with(|| {
                        enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                            label: Some(self.label),
                            timestamp_writes: None,
                        })
                        .forget_lifetime()
                    });
                    p.set_pipeline(&kernel.pipeline);
                    p.set_bind_group(0, bind, &[*offset]);
                    p.dispatch_workgroups(groups[0], groups[1], groups[2]);
                }
                Step::Copy {
                    src,
                    src_offset,
                    dst,
                    dst_offset,
                    bytes,
                } => {
                    pass = None;
                    enc.copy_buffer_to_buffer(
                        src.buffer(),
                        *src_offset,
                        dst.buffer(),
                        *dst_offset,
                        *bytes,
                    );
                }
            }
        }
    }
}

impl Device {
    /// Starts a capturing recording: ops recorded into it build their bind groups and stage
    /// their parameters as usual but are kept, not encoded; [`Recorder::into_graph`] turns
    /// them into a [`Graph`]. Nothing runs until the graph is replayed.
    ///
    /// Other recordings may be open meanwhile, on this thread or others: the pool hands a
    /// capture only buffers that no open recording still reads, since a graph can be
    /// replayed before those recordings are submitted (see `pool`).
    pub fn capture(&self, label: &'static str) -> Result<Recorder<'_>> {
        self.ensure_alive("starting a capture")?;
        Ok(Recorder::open(self, label, Some(Capture::default())))
    }

    /// Replays `graphs` in order in one command buffer and one submit; with `readback`, the
    /// tensor `read` is then copied into the ring's next slot in the same submit (see
    /// [`ReadbackRing::push`]). Returns what it cost the host.
    pub fn replay(
        &self,
        graphs: &[&Graph],
        readback: Option<(&Tensor, &mut ReadbackRing)>,
    ) -> Result<ReplayCost> {
        let t0 = Instant::now();
        self.ensure_alive("replaying a graph")?;
        let mut enc = self
            .inner
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("spikescan replay"),
            });
        let mut cost = ReplayCost {
            submits: 1,
            ..ReplayCost::default()
        };
        for g in graphs {
            g.encode(&mut enc);
            cost.dispatches += g.dispatches();
            cost.copies += g.steps.len() - g.dispatches();
        }
        let mut slot = None;
        if let Some((t, ring)) = readback {
            let i = ring.claim(t)?;
            let n = t.bytes().div_ceil(4) * 4;
            enc.copy_buffer_to_buffer(t.buffer(), 0, &ring.slots[i].buffer, 0, n);
            ring.slots[i].len = t.bytes();
            cost.copies += 1;
            slot = Some((ring, i));
        }
        let t1 = Instant::now();
        let index = self.scoped(
            || "submitting a graph replay".into(),
            || self.inner.queue.submit([enc.finish()]),
        )?;
        if let Some((ring, i)) = slot {
            ring.map(i, index);
        }
        cost.submit_micros = t1.elapsed().as_secs_f64() * 1e6;
        cost.host_micros = t0.elapsed().as_secs_f64() * 1e6;
        Ok(cost)
    }
}

impl<'d> Recorder<'d> {
    /// The graph of a recording started with [`Device::capture`].
    pub fn into_graph(mut self) -> Result<Graph> {
        let cap = self.capture.take().ok_or_else(|| {
            shape_err(
                "graph",
                "into_graph needs a recording started with Device::capture",
            )
        })?;
        self.device().ensure_alive("capturing a graph")?;
        let chunks = self.take_chunks_written();
        self.device().check("capturing a graph")?;
        Ok(Graph {
            label: self.label,
            steps: cap.steps,
            held: cap.held,
            _chunks: chunks,
        })
    }
}

/// Set by a slot's map callback.
type MapResult = Arc<Mutex<Option<std::result::Result<(), wgpu::BufferAsyncError>>>>;

struct Slot {
    buffer: wgpu::Buffer,
    /// Mapping requested and not yet taken; its result once the callback fired.
    pending: Option<MapResult>,
    /// The submission that copies into it.
    index: Option<wgpu::SubmissionIndex>,
    /// Order of submission (for `take_oldest`).
    seq: u64,
    /// Bytes copied in.
    len: u64,
}

/// A few mappable buffers that small results (the next token ids) are copied into as part of
/// a replay and read later, oldest first: the host reads step t's result while step t + 1 is
/// already submitted, with no blocking readback between them.
pub struct ReadbackRing {
    slots: Vec<Slot>,
    bytes: u64,
    next_seq: u64,
}

impl ReadbackRing {
    /// `slots` buffers of `bytes` bytes (rounded up to 4).
    pub fn new(dev: &Device, bytes: u64, slots: usize) -> Result<Self> {
        dev.ensure_alive("creating a readback ring")?;
        let bytes = bytes.max(4).div_ceil(4) * 4;
        let slots = (0..slots.max(1))
            .map(|_| Slot {
                buffer: dev.inner.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("spikescan readback ring"),
                    size: bytes,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
                pending: None,
                index: None,
                seq: 0,
                len: 0,
            })
            .collect();
        Ok(Self {
            slots,
            bytes,
            next_seq: 0,
        })
    }

    /// Results submitted and not yet taken.
    pub fn in_flight(&self) -> usize {
        self.slots.iter().filter(|s| s.pending.is_some()).count()
    }

    /// A free slot for `t`; with none free, an error (take results first).
    fn claim(&mut self, t: &Tensor) -> Result<usize> {
        if t.bytes() > self.bytes {
            return Err(shape_err(
                "readback ring",
                format!("{} bytes do not fit {}-byte slots", t.bytes(), self.bytes),
            ));
        }
        let i = self
            .slots
            .iter()
            .position(|s| s.pending.is_none())
            .ok_or_else(|| {
                shape_err(
                    "readback ring",
                    format!(
                        "all {} slots are in flight: take one first",
                        self.slots.len()
                    ),
                )
            })?;
        Ok(i)
    }

    fn map(&mut self, i: usize, index: wgpu::SubmissionIndex) {
        let flag: MapResult = Arc::new(Mutex::new(None));
        let f2 = flag.clone();
        self.slots[i]
            .buffer
            .map_async(wgpu::MapMode::Read, .., move |r| {
                if let Ok(mut s) = f2.lock() {
                    *s = Some(r);
                }
            });
        self.slots[i].pending = Some(flag);
        self.slots[i].index = Some(index);
        self.slots[i].seq = self.next_seq;
        self.next_seq += 1;
    }

    fn wait_mapped(&self, dev: &Device, i: usize) -> Result<()> {
        let slot = &self.slots[i];
        let flag = slot.pending.as_ref().expect("pending");
        let deadline = dev.deadline();
        let r = loop {
            if let Some(r) = flag.lock().ok().and_then(|mut s| s.take()) {
                break r;
            }
            if Instant::now() > deadline {
                return Err(RuntimeError::Timeout {
                    what: "a readback ring slot".into(),
                    seconds: dev.poll_timeout().as_secs_f64(),
                });
            }
            // Waits for this slot's submission only: later ones keep the GPU busy.
            dev.wait_for(slot.index.clone(), "a readback ring slot")?;
        };
        r.map_err(|e| RuntimeError::Validation {
            context: "mapping a readback ring slot".into(),
            message: e.to_string(),
        })
    }

    /// The oldest result in flight, waiting for the GPU to finish it (`None`: nothing in
    /// flight). Later submissions keep running meanwhile.
    pub fn take_oldest(&mut self, dev: &Device) -> Result<Option<Vec<u8>>> {
        let Some(i) = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.pending.is_some())
            .min_by_key(|(_, s)| s.seq)
            .map(|(i, _)| i)
        else {
            return Ok(None);
        };
        let r = self.wait_mapped(dev, i);
        let slot = &mut self.slots[i];
        slot.pending = None;
        slot.index = None;
        let out = r.and_then(|()| {
            slot.buffer
                .slice(..)
                .get_mapped_range()
                .map(|v| v[..slot.len as usize].to_vec())
                .map_err(|e| RuntimeError::Validation {
                    context: "reading a readback ring slot".into(),
                    message: e.to_string(),
                })
        });
        // Unmapping also cancels a map still pending after an error: the slot is reusable
        // either way.
        slot.buffer.unmap();
        let out = out?;
        Ok(Some(out))
    }
}
