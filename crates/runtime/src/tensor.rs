//! Tensors: a GPU buffer, a shape and a dtype; always contiguous (row-major).

use std::sync::{Arc, Mutex, Weak};

use crate::device::Device;
use crate::error::{shape_err, Result, RuntimeError};
use crate::pool::{size_class, BufferPool, Taker};

/// Element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    U32,
    I32,
    /// One byte per element (spike maps, small integers).
    U8,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::U32 | DType::I32 => 4,
            DType::F16 => 2,
            DType::U8 => 1,
        }
    }
    /// Lower-case name, as in reports.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::U32 => "u32",
            DType::I32 => "i32",
            DType::U8 => "u8",
        }
    }
}

/// Whether a buffer comes from (and returns to) the activation pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Residency {
    /// Reused across ops and forward passes.
    Pooled,
    /// Held for the lifetime of the tensor (weights, persistent state).
    Owned,
}

/// Tensor buffers alive on a device (in use, not in its pool).
#[derive(Default)]
pub(crate) struct LiveCount {
    pub(crate) buffers: std::sync::atomic::AtomicUsize,
    pub(crate) bytes: std::sync::atomic::AtomicU64,
}

pub(crate) struct Storage {
    buffer: Option<wgpu::Buffer>,
    live: Arc<LiveCount>,
    class: u64,
    pool: Option<Weak<Mutex<BufferPool>>>,
    /// Recordings that bound this (pooled) buffer; pruned of closed ones as it grows.
    users: Mutex<Vec<u64>>,
    /// The open recording this buffer was still pending on when the pool handed it out (only
    /// to that recording's [`Recorder::alloc`](crate::Recorder::alloc)), if any.
    inherited: Option<u64>,
}

impl Storage {
    fn new(
        buffer: wgpu::Buffer,
        class: u64,
        pool: Option<Weak<Mutex<BufferPool>>>,
        live: &Arc<LiveCount>,
        inherited: Option<u64>,
    ) -> Self {
        let ordering = std::sync::atomic::Ordering::Relaxed;
        live.buffers.fetch_add(1, ordering);
        live.bytes.fetch_add(class, ordering);
        Self {
            live: live.clone(),
            buffer: Some(buffer),
            class,
            pool,
            inherited,
            users: Mutex::new(inherited.into_iter().collect()),
        }
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        let ordering = std::sync::atomic::Ordering::Relaxed;
        self.live.buffers.fetch_sub(1, ordering);
        self.live.bytes.fetch_sub(self.class, ordering);
        if let (Some(buf), Some(pool)) = (self.buffer.take(), self.pool.as_ref()) {
            if let Some(pool) = pool.upgrade() {
                let users = std::mem::take(self.users.get_mut().unwrap_or_else(|e| e.into_inner()));
                if let Ok(mut p) = pool.lock() {
                    p.give(self.class, buf, &users);
                }
            }
        }
    }
}

/// Users kept before the closed ones are pruned.
const USERS_BEFORE_PRUNE: usize = 8;

/// A contiguous tensor on the GPU. Clones share the buffer.
#[derive(Clone)]
pub struct Tensor {
    storage: Arc<Storage>,
    shape: Vec<usize>,
    dtype: DType,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({}{:?})", self.dtype.name(), self.shape)
    }
}

/// Number of elements of a shape.
pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }
    /// Size of the data in bytes (not rounded up).
    pub fn bytes(&self) -> u64 {
        (self.numel() * self.dtype.size()) as u64
    }
    /// Size of the underlying buffer in bytes (at least `bytes()`).
    pub fn capacity(&self) -> u64 {
        self.buffer().size()
    }
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.storage
            .buffer
            .as_ref()
            .expect("buffer present until drop")
    }
    /// Dimension `i`, counting from the end when negative.
    pub fn dim(&self, i: isize) -> usize {
        let r = self.shape.len() as isize;
        let j = if i < 0 { r + i } else { i };
        self.shape[j as usize]
    }
    /// The same buffer seen with another shape of the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.numel() {
            return Err(shape_err(
                "reshape",
                format!(
                    "cannot view {:?} ({} elements) as {:?}",
                    self.shape,
                    self.numel(),
                    shape
                ),
            ));
        }
        Ok(Tensor {
            storage: self.storage.clone(),
            shape: shape.to_vec(),
            dtype: self.dtype,
        })
    }
    /// True when both tensors use the same GPU buffer.
    pub fn same_buffer(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }
    /// Whether this tensor's buffer is still pending on an open recording other than
    /// `except` (it came from that recording's `Recorder::alloc`; see `pool`).
    fn inherited_open(&self, except: Option<u64>) -> Option<u64> {
        let r = self.storage.inherited.filter(|&r| Some(r) != except)?;
        let pool = self.storage.pool.as_ref()?.upgrade()?;
        let open = pool.lock().map(|p| p.is_open(r)).unwrap_or(true);
        open.then_some(r)
    }

    /// Notes that recording `id` binds this tensor (pooled buffers only; see `pool`).
    /// Refused when the buffer is still pending on another open recording.
    pub(crate) fn mark_user(&self, id: u64) -> Result<()> {
        let Some(pool) = self.storage.pool.as_ref() else {
            return Ok(());
        };
        if self.inherited_open(Some(id)).is_some() {
            return Err(shape_err(
                "recording",
                format!(
                    "a {} tensor {:?} allocated with Recorder::alloc for another recording is \
                     bound before that recording was submitted: its buffer may still be read \
                     by that recording's work (allocate shared tensors with Device::alloc)",
                    self.dtype.name(),
                    self.shape
                ),
            ));
        }
        let mut users = self.storage.users.lock().unwrap_or_else(|e| e.into_inner());
        if users.contains(&id) {
            return Ok(());
        }
        if users.len() >= USERS_BEFORE_PRUNE {
            // Lock order: a storage's users, then the pool (the pool never locks a storage).
            if let Some(Ok(p)) = pool.upgrade().as_ref().map(|p| p.lock()) {
                users.retain(|&u| p.is_open(u));
            }
        }
        users.push(id);
        Ok(())
    }
    /// Shape as "[a, b, c]" for messages and profiles.
    pub fn shape_str(&self) -> String {
        format!("{:?}", self.shape)
    }
}

fn pad4(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if bytes.len().is_multiple_of(4) && !bytes.is_empty() {
        std::borrow::Cow::Borrowed(bytes)
    } else {
        let mut v = bytes.to_vec();
        v.resize(bytes.len().div_ceil(4).max(1) * 4, 0);
        std::borrow::Cow::Owned(v)
    }
}

thread_local! {
    /// The largest buffer asked for on this thread inside [`largest_allocation`].
    static LARGEST: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` and returns its result with the largest buffer (bytes, before pooling's size
/// classes) that this thread asked any device for meanwhile, allowed or not. Recording a
/// model's forward pass for one input this way gives its largest activation per input,
/// which is how a batch is split into micro-batches that fit one storage binding.
pub fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let outer = LARGEST.with(|l| l.replace(Some(0)));
    let r = f();
    let got = LARGEST.with(|l| l.replace(outer)).unwrap_or(0);
    if let Some(o) = outer {
        LARGEST.with(|l| l.set(Some(o.max(got))));
    }
    (r, got)
}

impl Device {
    /// The largest buffer that one storage binding can hold here (the smaller of the binding
    /// and buffer limits).
    pub fn max_binding_bytes(&self) -> u64 {
        let l = &self.inner.limits;
        l.max_storage_buffer_binding_size.min(l.max_buffer_size)
    }

    /// Checks a buffer of `bytes` against the binding and buffer limits.
    pub fn check_buffer_size(&self, bytes: u64, what: &str) -> Result<()> {
        let l = &self.inner.limits;
        if bytes > l.max_storage_buffer_binding_size {
            return Err(RuntimeError::BufferTooLarge {
                what: what.to_string(),
                bytes,
                limit: l.max_storage_buffer_binding_size,
                limit_name: "max_storage_buffer_binding_size",
            });
        }
        if bytes > l.max_buffer_size {
            return Err(RuntimeError::BufferTooLarge {
                what: what.to_string(),
                bytes,
                limit: l.max_buffer_size,
                limit_name: "max_buffer_size",
            });
        }
        Ok(())
    }

    fn make_storage(&self, min_bytes: u64, what: &str, residency: Residency) -> Result<Storage> {
        self.make_storage_from(min_bytes, what, residency, Taker::Unattributed)
    }

    /// `taker`: who will use the buffer first, which decides what the pool may hand out
    /// (see `pool`).
    fn make_storage_from(
        &self,
        min_bytes: u64,
        what: &str,
        residency: Residency,
        taker: Taker,
    ) -> Result<Storage> {
        LARGEST.with(|l| {
            if let Some(v) = l.get() {
                l.set(Some(v.max(min_bytes)));
            }
        });
        self.ensure_alive(what)?;
        self.check_buffer_size(min_bytes, what)?;
        let exact = min_bytes.max(16).div_ceil(16) * 16;
        let class = match residency {
            Residency::Pooled => {
                let c = size_class(min_bytes);
                if c > self.inner.limits.max_storage_buffer_binding_size {
                    exact
                } else {
                    c
                }
            }
            Residency::Owned => exact,
        };
        if residency == Residency::Pooled {
            if let Some((b, pending)) = self
                .inner
                .pool
                .lock()
                .ok()
                .and_then(|mut p| p.take(class, taker))
            {
                return Ok(Storage::new(
                    b,
                    class,
                    Some(Arc::downgrade(&self.inner.pool)),
                    &self.inner.live,
                    pending,
                ));
            }
        }
        let buffer = self.scoped(
            || format!("allocating {class} bytes for {what}"),
            || {
                self.inner.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(what),
                    size: class,
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            },
        )?;
        Ok(Storage::new(
            buffer,
            class,
            (residency == Residency::Pooled).then(|| Arc::downgrade(&self.inner.pool)),
            &self.inner.live,
            None,
        ))
    }

    /// An uninitialised pooled tensor (an activation), attributed to no recording: any
    /// recording may bind it, and the host may write it. Ops allocate their outputs with
    /// [`Recorder::alloc`](crate::Recorder::alloc), which can reuse more buffers.
    pub fn alloc(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        self.alloc_in(shape, dtype, Residency::Pooled)
    }

    /// A pooled tensor for `taker` (see `pool`).
    pub(crate) fn alloc_for(&self, shape: &[usize], dtype: DType, taker: Taker) -> Result<Tensor> {
        self.alloc_with(shape, dtype, Residency::Pooled, taker)
    }

    /// An uninitialised tensor with the given residency.
    pub fn alloc_in(&self, shape: &[usize], dtype: DType, residency: Residency) -> Result<Tensor> {
        self.alloc_with(shape, dtype, residency, Taker::Unattributed)
    }

    fn alloc_with(
        &self,
        shape: &[usize],
        dtype: DType,
        residency: Residency,
        taker: Taker,
    ) -> Result<Tensor> {
        let bytes = (numel(shape) * dtype.size()) as u64;
        let what = format!("{} tensor {:?}", dtype.name(), shape);
        Ok(Tensor {
            storage: Arc::new(self.make_storage_from(bytes, &what, residency, taker)?),
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// A tensor whose buffer holds at least `capacity` bytes (the op harness puts a guard
    /// region after the data this way). Not pooled.
    pub fn alloc_with_capacity(
        &self,
        shape: &[usize],
        dtype: DType,
        capacity: u64,
    ) -> Result<Tensor> {
        let bytes = ((numel(shape) * dtype.size()) as u64).max(capacity);
        let what = format!("{} tensor {:?}", dtype.name(), shape);
        Ok(Tensor {
            storage: Arc::new(self.make_storage(bytes, &what, Residency::Owned)?),
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// Uploads raw little-endian bytes as a tensor (into a pooled buffer that no pending
    /// recording reads, or a new one).
    pub fn upload(
        &self,
        shape: &[usize],
        dtype: DType,
        data: &[u8],
        residency: Residency,
    ) -> Result<Tensor> {
        let expect = numel(shape) * dtype.size();
        if data.len() != expect {
            return Err(shape_err(
                "upload",
                format!(
                    "{} {:?} needs {expect} bytes, got {}",
                    dtype.name(),
                    shape,
                    data.len()
                ),
            ));
        }
        let what = format!("{} tensor {:?}", dtype.name(), shape);
        let t = Tensor {
            storage: Arc::new(self.make_storage_from(
                expect as u64,
                &what,
                residency,
                Taker::Host,
            )?),
            shape: shape.to_vec(),
            dtype,
        };
        self.write(&t, data)?;
        Ok(t)
    }

    /// Overwrites the start of a tensor's buffer with raw bytes.
    pub fn write(&self, t: &Tensor, data: &[u8]) -> Result<()> {
        self.ensure_alive("writing a tensor")?;
        if t.inherited_open(None).is_some() {
            return Err(shape_err(
                "write",
                format!(
                    "{} tensor {:?} comes from Recorder::alloc and its buffer may still be read \
                     by that recording's work, which a host write would precede: upload host \
                     data with Device::upload, or write after the recording is submitted",
                    t.dtype.name(),
                    t.shape
                ),
            ));
        }
        let data = pad4(data);
        if data.len() as u64 > t.capacity() {
            return Err(shape_err(
                "write",
                format!(
                    "{} bytes do not fit a buffer of {}",
                    data.len(),
                    t.capacity()
                ),
            ));
        }
        self.inner.queue.write_buffer(t.buffer(), 0, &data);
        Ok(())
    }

    /// Overwrites the start of an f32 tensor's buffer with `data`.
    pub fn write_f32(&self, t: &Tensor, data: &[f32]) -> Result<()> {
        self.write(t, bytemuck::cast_slice(data))
    }

    /// A pooled f32 activation from host data.
    pub fn tensor_f32(&self, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        self.upload(
            shape,
            DType::F32,
            bytemuck::cast_slice(data),
            Residency::Pooled,
        )
    }
    /// A u32 tensor (indices, token ids) from host data.
    pub fn tensor_u32(&self, data: &[u32], shape: &[usize]) -> Result<Tensor> {
        self.upload(
            shape,
            DType::U32,
            bytemuck::cast_slice(data),
            Residency::Pooled,
        )
    }
    /// An f32 weight (not pooled).
    pub fn weight_f32(&self, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        self.upload(
            shape,
            DType::F32,
            bytemuck::cast_slice(data),
            Residency::Owned,
        )
    }
    /// A weight stored as f16 when the device runs f16 kernels, else as f32 (the plain twin).
    pub fn weight_f16(&self, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        if self.caps().f16 {
            let h: Vec<half::f16> = data.iter().map(|&x| half::f16::from_f32(x)).collect();
            self.upload(
                shape,
                DType::F16,
                bytemuck::cast_slice(&h),
                Residency::Owned,
            )
        } else {
            let h: Vec<f32> = data
                .iter()
                .map(|&x| half::f16::from_f32(x).to_f32())
                .collect();
            self.weight_f32(&h, shape)
        }
    }

    /// Reads `len` bytes from the start of a buffer (waits for all submitted work).
    pub fn read_buffer(&self, buffer: &wgpu::Buffer, len: u64) -> Result<Vec<u8>> {
        self.ensure_alive("reading a buffer back")?;
        let len4 = len.div_ceil(4) * 4;
        if len4 == 0 {
            return Ok(Vec::new());
        }
        let staging = self.scoped(
            || format!("allocating a {len4}-byte readback buffer"),
            || {
                self.inner.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("spikescan readback"),
                    size: len4,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            },
        )?;
        let mut enc = self
            .inner
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("readback"),
            });
        enc.copy_buffer_to_buffer(buffer, 0, &staging, 0, len4);
        self.inner.queue.submit([enc.finish()]);
        let slot: Arc<Mutex<Option<std::result::Result<(), wgpu::BufferAsyncError>>>> =
            Arc::new(Mutex::new(None));
        let s2 = slot.clone();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            if let Ok(mut s) = s2.lock() {
                *s = Some(r);
            }
        });
        // Another thread's poll may be the one that fires our callback, a moment after our
        // own wait returns: keep polling until the slot is filled or the deadline passes.
        let timeout = self.poll_timeout();
        let deadline = self.deadline();
        let mapped = loop {
            self.wait("a readback")?;
            if let Some(r) = slot.lock().ok().and_then(|mut s| s.take()) {
                break Some(r);
            }
            if std::time::Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(std::time::Duration::from_micros(50));
        };
        match mapped {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                return Err(RuntimeError::Validation {
                    context: "mapping a readback buffer".into(),
                    message: e.to_string(),
                })
            }
            None => {
                return Err(RuntimeError::Timeout {
                    what: "mapping a readback buffer".into(),
                    seconds: timeout.as_secs_f64(),
                })
            }
        }
        let mut out = staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| RuntimeError::Validation {
                context: "reading a mapped readback buffer".into(),
                message: e.to_string(),
            })?
            .to_vec();
        staging.unmap();
        out.truncate(len as usize);
        Ok(out)
    }

    /// A tensor's bytes.
    pub fn read_bytes(&self, t: &Tensor) -> Result<Vec<u8>> {
        self.read_buffer(t.buffer(), t.bytes())
    }

    /// A float tensor (f32 or f16) as f32 values.
    pub fn read_f32(&self, t: &Tensor) -> Result<Vec<f32>> {
        let b = self.read_bytes(t)?;
        match t.dtype() {
            DType::F32 => Ok(bytemuck::pod_collect_to_vec(&b)),
            DType::F16 => Ok(bytemuck::pod_collect_to_vec::<u8, half::f16>(&b)
                .into_iter()
                .map(|h| h.to_f32())
                .collect()),
            d => Err(shape_err(
                "read_f32",
                format!("tensor is {}, not a float", d.name()),
            )),
        }
    }

    /// A u32 or i32 tensor as u32 values.
    pub fn read_u32(&self, t: &Tensor) -> Result<Vec<u32>> {
        match t.dtype() {
            DType::U32 | DType::I32 => Ok(bytemuck::pod_collect_to_vec(&self.read_bytes(t)?)),
            d => Err(shape_err(
                "read_u32",
                format!("tensor is {}, not u32/i32", d.name()),
            )),
        }
    }
}
