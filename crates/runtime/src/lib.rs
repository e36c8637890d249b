//! spikescan's GPU runtime: device selection, tensors, buffer pools, the pipeline cache,
//! recording and dispatch, profiling, and one thin launcher per kernel family in [`ops`].
//! It knows nothing about models.

pub mod device;
pub mod error;
pub mod graph;
pub mod harness;
pub mod ops;
pub mod pipeline;
mod pool;
pub mod profile;
pub mod record;
pub mod spikes;
pub mod tensor;

pub use device::{list_adapters, AdapterSummary, Caps, Device, DeviceOptions, Resources};
pub use error::{Result, RuntimeError};
pub use graph::{Graph, ReadbackRing, ReplayCost};
pub use pipeline::{PipelineKey, Shader};
pub use profile::{format_table, OpInfo, OpTiming};
pub use record::Recorder;
pub use spikes::PackedSpikes;
pub use tensor::{DType, Residency, Tensor};
pub use wgpu;
