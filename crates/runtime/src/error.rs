//! Runtime errors. Everything that can go wrong on a GPU (no adapter, a buffer over a limit,
//! out of memory, a lost device, a shader the driver rejects, a wait that never ends) is an
//! `Err` that says what and how big: never a panic.

use thiserror::Error;

/// A runtime failure, with enough context to act on it.
#[derive(Debug, Error)]
pub enum RuntimeError {
    /// No adapter at all, or none matching the override.
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    /// The adapter refused the device request.
    #[error("could not open the GPU device on '{adapter}': {reason}")]
    RequestDevice { adapter: String, reason: String },
    /// A buffer would exceed one of the device's limits.
    #[error(
        "{what}: {bytes} bytes ({mib:.1} MiB) exceeds this device's {limit_name} of {limit} bytes ({limit_mib:.1} MiB)",
        mib = *bytes as f64 / 1048576.0,
        limit_mib = *limit as f64 / 1048576.0
    )]
    BufferTooLarge {
        what: String,
        bytes: u64,
        limit: u64,
        limit_name: &'static str,
    },
    /// The device ran out of memory.
    #[error("out of GPU memory while {0}")]
    OutOfMemory(String),
    /// The device was lost (driver reset, removal, destroyed).
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
    /// wgpu rejected a call: a shader, a pipeline, a binding or a command.
    #[error("GPU validation error while {context}: {message}")]
    Validation { context: String, message: String },
    /// A wait on the GPU did not finish in time.
    #[error("the GPU did not finish {what} within {seconds:.0} s")]
    Timeout { what: String, seconds: f64 },
    /// Tensors whose shapes or dtypes do not fit the operation.
    #[error("{op}: {message}")]
    Shape { op: &'static str, message: String },
    /// The adapter lacks something the request needs.
    #[error("unsupported on this adapter: {0}")]
    Unsupported(String),
}

/// Result alias for the runtime.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// Shorthand for a [`RuntimeError::Shape`].
pub(crate) fn shape_err(op: &'static str, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Shape {
        op,
        message: message.into(),
    }
}
