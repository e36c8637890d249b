//! Adapter selection, the device, and its shared caches.
//!
//! One [`Device`] is shared (it is `Clone + Send + Sync`) by every model and thread that uses
//! the same GPU: it owns the pipeline cache, the activation buffer pool and the uniform arena
//! chunks. Work is recorded with a [`Recorder`](crate::Recorder) and submitted once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Result, RuntimeError};
use crate::pipeline::{Kernel, PipelineKey};
use crate::pool::BufferPool;

/// How to pick and configure the device. [`DeviceOptions::from_env`] reads the
/// `SPIKESCAN_*` variables; fields can also be set directly by an embedding app.
#[derive(Clone, Debug)]
pub struct DeviceOptions {
    /// Adapter index (as listed by [`list_adapters`]) or a case-insensitive name substring.
    pub adapter: Option<String>,
    /// Restrict to one backend: `vulkan`, `metal`, `dx12` or `gl`.
    pub backend: Option<String>,
    /// Never use `shader-f16` kernels, even where the adapter supports them.
    pub force_f32: bool,
    /// Never use subgroup kernels, even where the adapter supports them.
    pub no_subgroups: bool,
    /// Submit and wait after every op, so a failure names the op that caused it.
    pub debug: bool,
    /// Time every dispatch and keep a per-op table ([`Device::take_profile`]).
    pub profile: bool,
    /// Longest wait for the GPU before giving up with [`RuntimeError::Timeout`].
    pub poll_timeout: Duration,
    /// Caps the storage-binding size below the adapter's (bytes), to run as a device with a
    /// smaller limit would (WebGPU's default and many mobile GPUs allow 128 MiB).
    pub max_binding: Option<u64>,
    /// Request only WebGPU's default limits (8 storage buffers per stage, 16 KiB workgroup
    /// storage, 256 invocations, 128 MiB bindings, 256 MiB buffers) and no optional feature,
    /// to run as the least capable WebGPU device would.
    pub webgpu_limits: bool,
    /// Caps the invocations per workgroup below the adapter's, to run as a device with a
    /// lower limit would (Dawn's compatibility mode allows 128): below 256 the runtime
    /// compiles every kernel's 128-invocation variant.
    pub max_invocations: Option<u32>,
    /// A `SPIKESCAN_LIMITS` value that is not a limit set: opening a device fails naming it.
    pub bad_limits: Option<String>,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        Self {
            adapter: None,
            backend: None,
            force_f32: false,
            no_subgroups: false,
            debug: false,
            profile: false,
            poll_timeout: Duration::from_secs(120),
            max_binding: None,
            webgpu_limits: false,
            max_invocations: None,
            bad_limits: None,
        }
    }
}

fn env_flag(name: &str) -> bool {
    matches!(
        std::env::var(name).ok().as_deref().map(str::trim),
        Some("1" | "true" | "yes" | "on")
    )
}

impl DeviceOptions {
    /// Options from `SPIKESCAN_ADAPTER`, `SPIKESCAN_BACKEND`, `SPIKESCAN_FORCE_F32`,
    /// `SPIKESCAN_NO_SUBGROUPS`, `SPIKESCAN_DEBUG`, `SPIKESCAN_PROFILE`,
    /// `SPIKESCAN_POLL_TIMEOUT` (seconds), `SPIKESCAN_MAX_BINDING` (bytes; a `K`, `M` or
    /// `G` suffix multiplies by 1024, 1024² or 1024³), `SPIKESCAN_MAX_INVOCATIONS` and
    /// `SPIKESCAN_LIMITS` (`adapter`, the default; `webgpu`, WebGPU's default limits and no
    /// optional feature; `compat`, the same with 128 invocations per workgroup, as Dawn's
    /// compatibility mode).
    pub fn from_env() -> Self {
        let non_empty = |n: &str| std::env::var(n).ok().filter(|s| !s.trim().is_empty());
        let mut o = Self {
            adapter: non_empty("SPIKESCAN_ADAPTER"),
            backend: non_empty("SPIKESCAN_BACKEND"),
            force_f32: env_flag("SPIKESCAN_FORCE_F32"),
            no_subgroups: env_flag("SPIKESCAN_NO_SUBGROUPS"),
            debug: env_flag("SPIKESCAN_DEBUG"),
            profile: env_flag("SPIKESCAN_PROFILE"),
            ..Self::default()
        };
        if let Some(s) = non_empty("SPIKESCAN_POLL_TIMEOUT").and_then(|s| s.parse::<f64>().ok()) {
            // (A value too large for a Duration, or not a number, waits for ever.)
            o.poll_timeout = Duration::try_from_secs_f64(s.max(0.001))
                .unwrap_or(Duration::from_secs(u32::MAX as u64));
        }
        o.max_binding = non_empty("SPIKESCAN_MAX_BINDING").and_then(|s| parse_bytes(&s));
        match non_empty("SPIKESCAN_LIMITS").map(|s| s.trim().to_lowercase()) {
            None => {}
            Some(s) if s == "adapter" => {}
            Some(s) if s == "webgpu" => o.webgpu_limits = true,
            Some(s) if s == "compat" => {
                o.webgpu_limits = true;
                o.max_invocations = Some(128);
            }
            Some(s) => o.bad_limits = Some(s),
        }
        if let Some(v) = non_empty("SPIKESCAN_MAX_INVOCATIONS") {
            match v.trim().parse::<u32>() {
                Ok(n) => o.max_invocations = Some(o.max_invocations.map_or(n, |m| m.min(n))),
                Err(_) => o.bad_limits = Some(format!("SPIKESCAN_MAX_INVOCATIONS={v}")),
            }
        }
        o
    }
}

/// The largest storage binding the runtime uses, whatever the adapter allows: 4 GiB - 4 bytes
/// (element indices stay below 2^30 and cannot wrap in u32).
pub const MAX_BINDING_BYTES: u64 = u32::MAX as u64 - 3;

/// The workgroup width the kernels can run with under `limits`: 256, 128, or none.
pub fn workgroup_width(limits: &wgpu::Limits) -> Option<u32> {
    [256, 128].into_iter().find(|&w| {
        limits.max_compute_invocations_per_workgroup >= w
            && limits.max_compute_workgroup_size_x >= w
    })
}

/// `"134217728"`, `"128M"`, `"2G"`, `"64k"` → bytes; `None` if it is not a size.
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mul) = match s.chars().last()?.to_ascii_uppercase() {
        'K' => (&s[..s.len() - 1], 1u64 << 10),
        'M' => (&s[..s.len() - 1], 1 << 20),
        'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mul)
}

/// What the runtime uses of the adapter, after the options are applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    /// `shader-f16` kernels (f16 weights, f32 accumulation) are enabled.
    pub f16: bool,
    /// Subgroup reductions are enabled.
    pub subgroups: bool,
    /// Dispatches can be timed with timestamp queries.
    pub timestamps: bool,
}

/// A one-line-per-field description of an adapter.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub index: usize,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
}

impl AdapterSummary {
    fn new(index: usize, info: &wgpu::AdapterInfo) -> Self {
        Self {
            index,
            name: info.name.clone(),
            backend: format!("{:?}", info.backend).to_lowercase(),
            device_type: format!("{:?}", info.device_type),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
        }
    }
}

fn parse_backend(name: Option<&str>) -> Result<wgpu::Backends> {
    Ok(match name.map(|s| s.trim().to_lowercase()).as_deref() {
        // GL only on request: it is a last resort for compute, and probing it is noisy.
        None => wgpu::Backends::PRIMARY,
        Some("vulkan" | "vk") => wgpu::Backends::VULKAN,
        Some("metal" | "mtl") => wgpu::Backends::METAL,
        Some("dx12" | "d3d12") => wgpu::Backends::DX12,
        Some("gl" | "gles" | "opengl") => wgpu::Backends::GL,
        Some(other) => {
            return Err(RuntimeError::NoAdapter(format!(
                "SPIKESCAN_BACKEND='{other}' is not a backend; use vulkan, metal, dx12 or gl"
            )))
        }
    })
}

fn type_rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

const NO_ADAPTER_HELP: &str =
    "no Vulkan, Metal or DX12 device was found. On Debian/Ubuntu without a GPU, \
install Mesa's software Vulkan driver: `sudo apt-get install mesa-vulkan-drivers` (lavapipe)";

fn instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends;
    wgpu::Instance::new(desc)
}

fn adapters(backends: wgpu::Backends) -> (wgpu::Instance, Vec<wgpu::Adapter>) {
    let inst = instance(backends);
    let list = pollster::block_on(inst.enumerate_adapters(backends));
    (inst, list)
}

/// Every adapter wgpu can see (for `spikescan info --all`), in index order.
pub fn list_adapters(backend: Option<&str>) -> Result<Vec<AdapterSummary>> {
    let (_, list) = adapters(parse_backend(backend)?);
    Ok(list
        .iter()
        .enumerate()
        .map(|(i, a)| AdapterSummary::new(i, &a.get_info()))
        .collect())
}

fn select_adapter(
    list: Vec<wgpu::Adapter>,
    wanted: Option<&str>,
) -> Result<(usize, wgpu::Adapter)> {
    if list.is_empty() {
        return Err(RuntimeError::NoAdapter(NO_ADAPTER_HELP.into()));
    }
    let names: Vec<String> = list
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{i}: {}", a.get_info().name))
        .collect();
    if let Some(w) = wanted {
        let pos = match w.trim().parse::<usize>() {
            Ok(i) if i < list.len() => Some(i),
            Ok(_) => None,
            Err(_) => {
                let w = w.to_lowercase();
                list.iter()
                    .position(|a| a.get_info().name.to_lowercase().contains(&w))
            }
        };
        return match pos {
            Some(i) => Ok((i, list.into_iter().nth(i).expect("index checked"))),
            None => Err(RuntimeError::NoAdapter(format!(
                "SPIKESCAN_ADAPTER='{w}' matches no adapter; available: {}",
                names.join(", ")
            ))),
        };
    }
    // Best first: discrete > integrated > virtual > other > CPU; native APIs before GL.
    let best = list
        .iter()
        .enumerate()
        .min_by_key(|(i, a)| {
            let info = a.get_info();
            (
                type_rank(info.device_type),
                u8::from(info.backend == wgpu::Backend::Gl),
                *i,
            )
        })
        .map(|(i, _)| i)
        .expect("non-empty");
    Ok((best, list.into_iter().nth(best).expect("index checked")))
}

pub(crate) struct Inner {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) adapter: wgpu::Adapter,
    pub(crate) summary: AdapterSummary,
    pub(crate) limits: wgpu::Limits,
    /// Invocations per workgroup of every kernel: 256, or 128 (the `WG128` variants).
    pub(crate) wg: u32,
    pub(crate) caps: Caps,
    pub(crate) options: DeviceOptions,
    pub(crate) kernels: Mutex<HashMap<PipelineKey, Arc<Kernel>>>,
    pub(crate) modules: Mutex<HashMap<String, wgpu::ShaderModule>>,
    pub(crate) pool: Arc<Mutex<BufferPool>>,
    /// Tensor buffers alive (in use, not in the pool): count and bytes.
    pub(crate) live: Arc<crate::tensor::LiveCount>,
    pub(crate) uniform_chunks: Mutex<Vec<wgpu::Buffer>>,
    pub(crate) uncaptured: Arc<Mutex<Vec<String>>>,
    pub(crate) lost: Arc<Mutex<Option<String>>>,
    pub(crate) lost_flag: Arc<std::sync::atomic::AtomicBool>,
    /// The current poll time-out in microseconds (initially `options.poll_timeout`).
    poll_timeout_us: std::sync::atomic::AtomicU64,
    pub(crate) profile: Mutex<Vec<crate::profile::OpTiming>>,
    profiling: std::sync::atomic::AtomicBool,
    pub(crate) timestamp_period_ns: f32,
}

/// The GPU device with its caches. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Device {
    pub(crate) inner: Arc<Inner>,
}

/// A device's resource counts ([`Device::resources`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// Tensors' buffers alive outside the pool (weights, state, activations in use), and
    /// their bytes.
    pub tensor_buffers: usize,
    pub tensor_bytes: u64,
    /// Free buffers the activation pool keeps for reuse, and their bytes.
    pub pooled_buffers: usize,
    pub pooled_bytes: u64,
    /// Compute pipelines and shader modules in the cache.
    pub pipelines: usize,
    pub shader_modules: usize,
    /// Uniform arena chunks free for the next recording.
    pub free_uniform_chunks: usize,
    /// Recordings opened and not yet submitted or dropped (any thread).
    pub open_recordings: usize,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("adapter", &self.inner.summary.name)
            .field("backend", &self.inner.summary.backend)
            .field("caps", &self.inner.caps)
            .finish()
    }
}

impl Device {
    /// Opens the best adapter, honouring the `SPIKESCAN_*` environment variables.
    pub fn new() -> Result<Self> {
        Self::with_options(DeviceOptions::from_env())
    }

    /// Opens a device with explicit options.
    pub fn with_options(options: DeviceOptions) -> Result<Self> {
        if let Some(bad) = &options.bad_limits {
            return Err(RuntimeError::NoAdapter(if bad.contains('=') {
                format!("{bad} is not a number of invocations")
            } else {
                format!(
                    "SPIKESCAN_LIMITS='{bad}' is not a limit set; use adapter, webgpu or compat"
                )
            }));
        }
        let backends = parse_backend(options.backend.as_deref())?;
        let (_instance, list) = adapters(backends);
        let (index, adapter) = select_adapter(list, options.adapter.as_deref())?;
        let info = adapter.get_info();
        let summary = AdapterSummary::new(index, &info);

        let available = adapter.features();
        let mut features = wgpu::Features::empty();
        // WebGPU limits: no optional feature either (the plain twins run).
        let optional = !options.webgpu_limits;
        let want_f16 =
            optional && !options.force_f32 && available.contains(wgpu::Features::SHADER_F16);
        let want_sg =
            optional && !options.no_subgroups && available.contains(wgpu::Features::SUBGROUP);
        let want_ts = optional && available.contains(wgpu::Features::TIMESTAMP_QUERY);
        if want_f16 {
            features |= wgpu::Features::SHADER_F16;
        }
        if want_sg {
            features |= wgpu::Features::SUBGROUP;
        }
        if want_ts {
            features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        // Ask for everything the adapter offers: big storage bindings matter for weights.
        let mut limits = if options.webgpu_limits {
            wgpu::Limits::default()
        } else {
            adapter.limits()
        };
        // Kernels index elements in u32: a binding of at most 4 GiB holds < 2^30 four-byte
        // elements, so no index (nor `index + WG`) can wrap. Metal reports its whole buffer
        // size (tens of GiB on unified memory); wgpu caps Vulkan and DX12 at 2 GiB.
        limits.max_storage_buffer_binding_size = limits
            .max_storage_buffer_binding_size
            .min(MAX_BINDING_BYTES);
        if let Some(cap) = options.max_binding {
            // Never below 4 KiB: the uniform arena and small tensors must still bind.
            let cap = cap.max(4096);
            limits.max_storage_buffer_binding_size =
                limits.max_storage_buffer_binding_size.min(cap);
        }
        if let Some(cap) = options.max_invocations {
            limits.max_compute_invocations_per_workgroup =
                limits.max_compute_invocations_per_workgroup.min(cap);
            limits.max_compute_workgroup_size_x = limits.max_compute_workgroup_size_x.min(cap);
            limits.max_compute_workgroup_size_y = limits.max_compute_workgroup_size_y.min(cap);
            limits.max_compute_workgroup_size_z = limits.max_compute_workgroup_size_z.min(cap);
        }
        let wg = workgroup_width(&limits).ok_or_else(|| RuntimeError::RequestDevice {
            adapter: info.name.clone(),
            reason: format!(
                "it allows {} invocations per workgroup ({} along x); spikescan's kernels need 128",
                limits.max_compute_invocations_per_workgroup, limits.max_compute_workgroup_size_x
            ),
        })?;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("spikescan"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| RuntimeError::RequestDevice {
            adapter: info.name.clone(),
            reason: e.to_string(),
        })?;

        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                if v.len() < 64 {
                    v.push(e.to_string());
                }
            }
        }));
        let lost = Arc::new(Mutex::new(None));
        let lost_flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (lost_sink, flag) = (lost.clone(), lost_flag.clone());
        device.set_device_lost_callback(move |reason, msg| {
            if let Ok(mut l) = lost_sink.lock() {
                l.get_or_insert_with(|| format!("{reason:?}: {msg}"));
            }
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        let poll_timeout_us = std::sync::atomic::AtomicU64::new(
            options.poll_timeout.as_micros().min(u64::MAX as u128) as u64,
        );
        let timestamp_period_ns = queue.get_timestamp_period();
        let profile_on = options.profile;
        Ok(Self {
            inner: Arc::new(Inner {
                device,
                queue,
                adapter,
                summary,
                limits,
                wg,
                caps: Caps {
                    f16: want_f16,
                    subgroups: want_sg,
                    timestamps: want_ts,
                },
                options,
                kernels: Mutex::new(HashMap::new()),
                modules: Mutex::new(HashMap::new()),
                pool: Arc::new(Mutex::new(BufferPool::default())),
                live: Arc::default(),
                uniform_chunks: Mutex::new(Vec::new()),
                uncaptured,
                lost,
                lost_flag,
                poll_timeout_us,
                profile: Mutex::new(Vec::new()),
                profiling: std::sync::atomic::AtomicBool::new(profile_on),
                timestamp_period_ns,
            }),
        })
    }

    /// The adapter this device runs on.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.inner.summary
    }
    /// What the runtime uses: f16, subgroups, timestamps.
    pub fn caps(&self) -> Caps {
        self.inner.caps
    }
    /// Invocations per workgroup the kernels run with: 256, or 128 where the limits allow
    /// fewer than 256 (each kernel's `WG128` variant).
    pub fn wg(&self) -> u32 {
        self.inner.wg
    }
    /// The limits in force (the adapter's own, or WebGPU's defaults with `webgpu_limits`).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.inner.limits
    }
    /// Features the adapter advertises (whether or not they are enabled).
    pub fn adapter_features(&self) -> wgpu::Features {
        self.inner.adapter.features()
    }
    /// Features enabled on this device.
    pub fn features(&self) -> wgpu::Features {
        self.inner.device.features()
    }
    /// The adapter's (smallest, largest) subgroup size.
    pub fn subgroup_sizes(&self) -> (u32, u32) {
        let i = self.inner.adapter.get_info();
        (i.subgroup_min_size, i.subgroup_max_size)
    }
    /// The options the device was opened with.
    pub fn options(&self) -> &DeviceOptions {
        &self.inner.options
    }
    /// The underlying wgpu device, for embedding apps that record their own work.
    pub fn wgpu_device(&self) -> &wgpu::Device {
        &self.inner.device
    }
    /// The underlying wgpu queue.
    pub fn wgpu_queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }
    /// "name (backend, driver)" for report lines.
    pub fn describe(&self) -> String {
        let s = &self.inner.summary;
        format!("{} ({}, {} {})", s.name, s.backend, s.driver, s.driver_info)
    }

    /// Returns an error if the device was lost or an uncaptured error was reported.
    pub fn check(&self, context: &str) -> Result<()> {
        self.ensure_alive(context)?;
        let errs: Vec<String> = match self.inner.uncaptured.lock() {
            Ok(mut v) => v.drain(..).collect(),
            Err(_) => Vec::new(),
        };
        if errs.is_empty() {
            Ok(())
        } else {
            Err(RuntimeError::Validation {
                context: context.to_string(),
                message: errs.join("; "),
            })
        }
    }

    /// An error if the device was lost (a driver reset, a removed GPU, [`Device::destroy`]):
    /// every entry point that would touch the GPU calls this first, so work on a lost device
    /// fails at once with [`RuntimeError::DeviceLost`] naming what was attempted, never
    /// hangs or panics. Open a new [`Device`] to go on.
    pub fn ensure_alive(&self, what: &str) -> Result<()> {
        if !self
            .inner
            .lost_flag
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(());
        }
        let why = self
            .inner
            .lost
            .lock()
            .ok()
            .and_then(|l| l.clone())
            .unwrap_or_else(|| "lost".into());
        Err(RuntimeError::DeviceLost(format!("{why} (while {what})")))
    }

    /// Whether the device was lost.
    pub fn is_lost(&self) -> bool {
        self.inner
            .lost_flag
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Destroys the device now, as a driver reset would lose it: later calls on it (and on
    /// its tensors, models and graphs) return [`RuntimeError::DeviceLost`].
    pub fn destroy(&self) {
        if let Ok(mut l) = self.inner.lost.lock() {
            l.get_or_insert_with(|| "destroyed by Device::destroy".into());
        }
        self.inner
            .lost_flag
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.device.destroy();
    }

    /// The longest wait for the GPU before [`RuntimeError::Timeout`].
    pub fn poll_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_micros(
            self.inner
                .poll_timeout_us
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Changes the poll time-out (all threads; from the next wait on).
    pub fn set_poll_timeout(&self, timeout: std::time::Duration) {
        self.inner.poll_timeout_us.store(
            timeout.as_micros().min(u64::MAX as u128) as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// When a wait that starts now must end (a time-out too large to add saturates).
    pub(crate) fn deadline(&self) -> std::time::Instant {
        let now = std::time::Instant::now();
        now.checked_add(self.poll_timeout())
            .or_else(|| now.checked_add(Duration::from_secs(u32::MAX as u64)))
            .unwrap_or(now)
    }

    /// Waits (at most `poll_timeout`) for all submitted work.
    pub fn wait(&self, what: &str) -> Result<()> {
        self.wait_for(None, what)
    }

    /// Waits for one submission (and those before it) or, with `None`, for all.
    pub(crate) fn wait_for(&self, index: Option<wgpu::SubmissionIndex>, what: &str) -> Result<()> {
        self.ensure_alive(what)?;
        let timeout = self.poll_timeout();
        match self.inner.device.poll(wgpu::PollType::Wait {
            submission_index: index,
            timeout: Some(timeout),
        }) {
            Ok(_) => self.check(what),
            Err(wgpu::PollError::Timeout) => Err(RuntimeError::Timeout {
                what: what.to_string(),
                seconds: timeout.as_secs_f64(),
            }),
            Err(e) => {
                self.check(what)?;
                Err(RuntimeError::DeviceLost(format!("{what}: {e}")))
            }
        }
    }

    /// Whether recordings started now time every dispatch (initially `options().profile`).
    pub fn profiling(&self) -> bool {
        self.inner
            .profiling
            .load(std::sync::atomic::Ordering::Relaxed)
    }
    /// Turns per-dispatch timing on or off for recordings started from now on (e.g. one
    /// profiled pass of a model after its steady-state timing).
    pub fn set_profiling(&self, on: bool) {
        self.inner
            .profiling
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Per-op timings collected in profiling mode since the last call.
    pub fn take_profile(&self) -> Vec<crate::profile::OpTiming> {
        self.inner
            .profile
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default()
    }

    /// Bytes held by the activation pool (free buffers kept for reuse).
    pub fn pooled_bytes(&self) -> u64 {
        self.inner.pool.lock().map(|p| p.free_bytes()).unwrap_or(0)
    }

    /// What this device holds now: buffers in use and in the pool, pipelines, shader modules
    /// and uniform arena chunks. A long session should hold these flat after its warm-up.
    pub fn resources(&self) -> Resources {
        let (pooled_buffers, pooled_bytes, open_recordings) = self
            .inner
            .pool
            .lock()
            .map(|p| (p.free_buffers(), p.free_bytes(), p.open_recordings()))
            .unwrap_or_default();
        let ordering = std::sync::atomic::Ordering::Relaxed;
        Resources {
            tensor_buffers: self.inner.live.buffers.load(ordering),
            tensor_bytes: self.inner.live.bytes.load(ordering),
            pooled_buffers,
            pooled_bytes,
            pipelines: self.inner.kernels.lock().map(|k| k.len()).unwrap_or(0),
            shader_modules: self.inner.modules.lock().map(|m| m.len()).unwrap_or(0),
            free_uniform_chunks: self
                .inner
                .uniform_chunks
                .lock()
                .map(|c| c.len())
                .unwrap_or(0),
            open_recordings,
        }
    }

    /// Drops every free pooled buffer.
    pub fn trim_pool(&self) {
        if let Ok(mut p) = self.inner.pool.lock() {
            p.clear();
        }
    }

    /// Runs `f` inside error scopes for validation and out-of-memory errors, turning a
    /// captured error into an `Err` that names `context`.
    pub(crate) fn scoped<T>(
        &self,
        context: impl FnOnce() -> String,
        f: impl FnOnce() -> T,
    ) -> Result<T> {
        let oom = self
            .inner
            .device
            .push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = self
            .inner
            .device
            .push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let v = pollster::block_on(val.pop());
        let o = pollster::block_on(oom.pop());
        if let Some(e) = o {
            let _ = e;
            return Err(RuntimeError::OutOfMemory(context()));
        }
        if let Some(e) = v {
            return Err(RuntimeError::Validation {
                context: context(),
                message: e.to_string(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse_backend(Some("Vulkan")).unwrap(),
            wgpu::Backends::VULKAN
        );
        assert_eq!(parse_backend(None).unwrap(), wgpu::Backends::PRIMARY);
        let e = parse_backend(Some("cuda")).unwrap_err().to_string();
        assert!(e.contains("cuda") && e.contains("vulkan"), "{e}");
    }

    #[test]
    fn an_adapter_override_that_matches_nothing_is_an_error() {
        let e = select_adapter(Vec::new(), None).unwrap_err().to_string();
        assert!(e.contains("mesa-vulkan-drivers"), "{e}");
        let (_, list) = adapters(wgpu::Backends::PRIMARY);
        let e = select_adapter(list, Some("no-such-adapter-xyz"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no-such-adapter-xyz"), "{e}");
    }
}
