//! spikescan: spiking transformers and recurrent/state-space sequence models on any Vulkan,
//! Metal or DX12 GPU, through wgpu.
//!
//! This facade re-exports the workspace crates: [`runtime`] (device, tensors, kernels),
//! [`loader`] (checkpoints) and [`models`] (architectures).
//!
//! ```no_run
//! use spikescan::{ops, Device};
//! let dev = Device::new()?; // best adapter; SPIKESCAN_ADAPTER / SPIKESCAN_BACKEND override
//! let x = dev.tensor_f32(&[1.0, -2.0, 3.0], &[3])?;
//! let mut rec = dev.recorder("example");
//! let y = ops::elementwise::relu(&mut rec, &x)?;
//! rec.submit()?;
//! assert_eq!(dev.read_f32(&y)?, vec![1.0, 0.0, 3.0]);
//! # Ok::<(), spikescan::RuntimeError>(())
//! ```

pub use spikescan_loader as loader;
pub use spikescan_models as models;
pub use spikescan_runtime as runtime;
pub use spikescan_runtime::{
    list_adapters, ops, AdapterSummary, Caps, DType, Device, DeviceOptions, PackedSpikes, Recorder,
    Resources, Result, RuntimeError, Tensor,
};
