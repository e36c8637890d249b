//! Python bindings of spikescan (the `spikescan._spikescan` extension module; the package
//! around it is `python/spikescan/`). The types follow the Rust API: a `Device`, a `Model`
//! of any architecture loaded from a model directory, Mamba's `MambaState` and token
//! `Generation`, LMUFormer's frame-by-frame `Stream`.
//!
//! Every GPU call runs with the GIL released and under `catch_unwind`, so a panic becomes a
//! `spikescan.InternalError` instead of reaching the interpreter; errors are the library's
//! own messages (those the CLI prints) as `spikescan.Error` subclasses.

use std::borrow::Cow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use numpy::{
    Element, IntoPyArray, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use spikescan::models::lmuformer::LOOKAHEAD;
use spikescan::models::stats::stats;
use spikescan::models::taps::Taps;
use spikescan::models::{
    input, top_classes, vision, Generation as RGeneration, LmuSnapshot, LmuStream, Lmuformer,
    Mamba, MambaState as RMambaState, Model as RModel, ModelDir, ModelError, Sampling,
};
use spikescan::{Device as RDevice, DeviceOptions, RuntimeError};

pyo3::import_exception!(spikescan.errors, Error);
pyo3::import_exception!(spikescan.errors, ModelNotFoundError);
pyo3::import_exception!(spikescan.errors, ConfigError);
pyo3::import_exception!(spikescan.errors, CheckpointError);
pyo3::import_exception!(spikescan.errors, InputError);
pyo3::import_exception!(spikescan.errors, DTypeError);
pyo3::import_exception!(spikescan.errors, DeviceError);
pyo3::import_exception!(spikescan.errors, InternalError);
pyo3::import_exception!(spikescan.errors, HubError);

/// A library error as the Python exception of its kind, with the message the CLI prints
/// (the error, then each source after ": ").
fn py_err(e: ModelError) -> PyErr {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    match e {
        ModelError::NoDirectory(_) | ModelError::Nowhere { .. } => ModelNotFoundError::new_err(msg),
        ModelError::Config { .. } | ModelError::UnknownArchitecture { .. } => {
            ConfigError::new_err(msg)
        }
        ModelError::Load(_) => CheckpointError::new_err(msg),
        ModelError::Input(_) => InputError::new_err(msg),
        ModelError::Runtime(_) => DeviceError::new_err(msg),
        ModelError::Hub(
            spikescan::loader::hub::HubError::NotFound { .. }
            | spikescan::loader::hub::HubError::Offline { .. },
        ) => ModelNotFoundError::new_err(msg),
        ModelError::Hub(_) => HubError::new_err(msg),
    }
}

fn runtime_err(e: RuntimeError) -> PyErr {
    DeviceError::new_err(e.to_string())
}

fn input_err(msg: impl Into<String>) -> PyErr {
    InputError::new_err(msg.into())
}

/// Runs `f` with the GIL released; a panic inside becomes `spikescan.InternalError`.
fn gpu<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    F: FnOnce() -> PyResult<T> + Send,
    T: Send,
{
    py.detach(move || match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(InternalError::new_err(format!(
                "internal error in spikescan (please report it): {what}"
            )))
        }
    })
}

/// [`gpu`] for a library call.
fn gpu_m<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    F: FnOnce() -> Result<T, ModelError> + Send,
    T: Send,
{
    gpu(py, move || f().map_err(py_err))
}

fn default_device(py: Python<'_>) -> PyResult<RDevice> {
    static DEFAULT: Mutex<Option<RDevice>> = Mutex::new(None);
    gpu(py, || {
        let mut d = DEFAULT.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(dev) = d.as_ref() {
            return Ok(dev.clone());
        }
        let dev = RDevice::with_options(DeviceOptions::from_env()).map_err(runtime_err)?;
        *d = Some(dev.clone());
        Ok(dev)
    })
}

/// A GPU adapter opened for compute. `adapter` is an index from `spikescan.adapters()` or a
/// name substring, `backend` one of "vulkan", "metal", "dx12", "gl"; None takes
/// `SPIKESCAN_ADAPTER` / `SPIKESCAN_BACKEND`, else the best adapter.
#[pyclass(frozen, module = "spikescan", name = "Device")]
struct Device {
    dev: RDevice,
}

fn adapter_dict<'py>(
    py: Python<'py>,
    a: &spikescan::AdapterSummary,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("index", a.index)?;
    d.set_item("name", &a.name)?;
    d.set_item("backend", &a.backend)?;
    d.set_item("device_type", &a.device_type)?;
    d.set_item("driver", &a.driver)?;
    d.set_item("driver_info", &a.driver_info)?;
    Ok(d)
}

#[pymethods]
impl Device {
    #[new]
    #[pyo3(signature = (adapter=None, backend=None))]
    fn new(
        py: Python<'_>,
        adapter: Option<Bound<'_, PyAny>>,
        backend: Option<String>,
    ) -> PyResult<Self> {
        let mut opts = DeviceOptions::from_env();
        if let Some(a) = adapter {
            opts.adapter = Some(a.str()?.to_string());
        }
        if backend.is_some() {
            opts.backend = backend;
        }
        let dev = gpu(py, || RDevice::with_options(opts).map_err(runtime_err))?;
        Ok(Self { dev })
    }

    /// The adapter: index, name, backend, device_type, driver, driver_info.
    #[getter]
    fn adapter<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        adapter_dict(py, self.dev.adapter())
    }

    /// Whether f16 kernels, subgroup reductions and timestamp profiling are in use.
    #[getter]
    fn features<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.dev.caps();
        let d = PyDict::new(py);
        d.set_item("f16", c.f16)?;
        d.set_item("subgroups", c.subgroups)?;
        d.set_item("timestamps", c.timestamps)?;
        d.set_item(
            "max_storage_buffer_binding_size",
            self.dev.limits().max_storage_buffer_binding_size,
        )?;
        d.set_item("max_buffer_size", self.dev.limits().max_buffer_size)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        format!("spikescan.Device({})", self.dev.describe())
    }
}

/// Every adapter wgpu can see (on `backend` only, when given), with the index `Device`
/// accepts.
#[pyfunction]
#[pyo3(signature = (backend=None))]
fn adapters<'py>(py: Python<'py>, backend: Option<String>) -> PyResult<Bound<'py, PyList>> {
    let list = gpu(py, || {
        spikescan::list_adapters(backend.as_deref()).map_err(runtime_err)
    })?;
    let out = PyList::empty(py);
    for a in &list {
        out.append(adapter_dict(py, a)?)?;
    }
    Ok(out)
}

/// What a loaded model shares with its sessions.
struct Inner {
    dev: RDevice,
    model: RModel,
    path: PathBuf,
    labels: Option<Vec<String>>,
    tokenizer: Option<tokenizers::Tokenizer>,
}

impl Inner {
    fn mamba(&self) -> PyResult<&Mamba> {
        match &self.model {
            RModel::Mamba(m) => Ok(m),
            _ => Err(input_err(format!(
                "{} is a {} model, not a language model (Mamba)",
                self.path.display(),
                self.model.architecture()
            ))),
        }
    }

    fn lmuformer(&self) -> PyResult<&Lmuformer> {
        match &self.model {
            RModel::Lmuformer(m) => Ok(m),
            _ => Err(input_err(format!(
                "{} is a {} model; streaming runs LMUFormer models",
                self.path.display(),
                self.model.architecture()
            ))),
        }
    }

    fn label(&self, j: usize) -> String {
        self.labels
            .as_ref()
            .and_then(|l| l.get(j))
            .cloned()
            .unwrap_or_default()
    }
}

/// Host values of a float32 array, borrowed when it is C-contiguous (no copy), else copied
/// once in logical order; the shape with it.
fn f32_input<'a>(arr: &'a numpy::PyReadonlyArrayDyn<'_, f32>) -> (Cow<'a, [f32]>, Vec<usize>) {
    let shape = arr.shape().to_vec();
    match arr.as_slice() {
        Ok(s) => (Cow::Borrowed(s), shape),
        Err(_) => (Cow::Owned(arr.as_array().iter().copied().collect()), shape),
    }
}

fn type_name(x: &Bound<'_, PyAny>) -> String {
    x.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// `x` as a float32 numpy array, or `DTypeError` naming what it is.
fn as_f32_array<'py>(
    x: &Bound<'py, PyAny>,
    what: &str,
) -> PyResult<numpy::PyReadonlyArrayDyn<'py, f32>> {
    let Ok(u) = x.cast::<PyUntypedArray>() else {
        return Err(DTypeError::new_err(format!(
            "{what} must be a numpy array of float32, got {}",
            type_name(x)
        )));
    };
    let dt = u.dtype();
    if !dt.is_equiv_to(&numpy::dtype::<f32>(x.py())) {
        return Err(DTypeError::new_err(format!(
            "{what} must be float32, got {} (convert with x.astype(numpy.float32))",
            dt.str()?
        )));
    }
    Ok(x.cast::<PyArrayDyn<f32>>()?.readonly())
}

/// Token ids from an integer numpy array, list or tuple: u32 values and the shape; negative
/// or over-u32 ids are `InputError`, other dtypes `DTypeError`.
fn token_ids(x: &Bound<'_, PyAny>) -> PyResult<(Vec<u32>, Vec<usize>)> {
    fn take<T: Element + Copy + TryInto<i64>>(
        x: &Bound<'_, PyAny>,
    ) -> Option<(Vec<i64>, Vec<usize>)> {
        let a = x.cast::<PyArrayDyn<T>>().ok()?.readonly();
        let shape = a.shape().to_vec();
        let v = a
            .as_array()
            .iter()
            .map(|&t| t.try_into().unwrap_or(i64::MAX))
            .collect();
        Some((v, shape))
    }
    let (ids, shape) = if let Ok(u) = x.cast::<PyUntypedArray>() {
        take::<i64>(x)
            .or_else(|| take::<i32>(x))
            .or_else(|| take::<u32>(x))
            .or_else(|| take::<i16>(x))
            .or_else(|| take::<u16>(x))
            .or_else(|| take::<u8>(x))
            .or_else(|| take::<i8>(x))
            .or_else(|| take::<u64>(x))
            .ok_or_else(|| {
                let dt = u.dtype().str().map(|s| s.to_string()).unwrap_or_default();
                DTypeError::new_err(format!(
                    "token ids must be integers (int64 or int32), got {dt}"
                ))
            })?
    } else if let Ok(v) = x.extract::<Vec<i64>>() {
        let n = v.len();
        (v, vec![n])
    } else if let Ok(v) = x.extract::<Vec<Vec<i64>>>() {
        let l = v.first().map_or(0, Vec::len);
        if v.iter().any(|r| r.len() != l) {
            return Err(input_err("token id rows differ in length"));
        }
        let b = v.len();
        (v.into_iter().flatten().collect(), vec![b, l])
    } else {
        return Err(DTypeError::new_err(format!(
            "token ids must be an integer numpy array or a list of ints, got {}",
            type_name(x)
        )));
    };
    if let Some(bad) = ids.iter().find(|&&t| t < 0 || t > u32::MAX as i64) {
        return Err(input_err(format!("token id {bad} is out of range")));
    }
    Ok((ids.into_iter().map(|t| t as u32).collect(), shape))
}

fn array_out<'py>(
    py: Python<'py>,
    v: Vec<f32>,
    shape: &[usize],
) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
    v.into_pyarray(py).reshape(shape.to_vec())
}

/// A model of any architecture, loaded onto a device. `model(x)` gives logits.
#[pyclass(frozen, module = "spikescan", name = "Model")]
struct Model {
    inner: Arc<Inner>,
}

/// Loads a model directory (the CLI's contract): `spikescan.load` wraps this.
#[pyfunction]
#[pyo3(signature = (path, device=None, dtype="auto"))]
fn _load(
    py: Python<'_>,
    path: PathBuf,
    device: Option<PyRef<'_, Device>>,
    dtype: &str,
) -> PyResult<Model> {
    let weights: spikescan::models::WeightDtype = dtype.parse().map_err(input_err)?;
    let dev = match device {
        Some(d) => d.dev.clone(),
        None => default_device(py)?,
    };
    let inner = gpu(py, move || {
        let md = ModelDir::open(&path).map_err(py_err)?.with_weights(weights);
        let model = RModel::from_dir(&dev, &md).map_err(py_err)?;
        let nonfinite = md.checkpoint.nonfinite_tensors();
        let weights = md.checkpoint.path().display().to_string();
        // A Hub id resolves to its snapshot directory.
        let path = md.path.clone();
        let tok_path = path.join("tokenizer.json");
        let tokenizer = if matches!(model, RModel::Mamba(_)) && tok_path.exists() {
            // (Not Tokenizer::from_file: tokenizers panics on some malformed files.)
            Some(
                spikescan::models::text::load_tokenizer(&tok_path)
                    .map_err(|e| ConfigError::new_err(e.to_string()))?,
            )
        } else {
            None
        };
        Ok((
            Inner {
                labels: spikescan::models::labels(&path),
                dev,
                model,
                path,
                tokenizer,
            },
            weights,
            nonfinite,
        ))
    })?;
    let (inner, weights, nonfinite) = inner;
    for (key, bad, total) in nonfinite {
        warn_nonfinite(
            py,
            &format!("{weights}: weight '{key}': {bad} of {total} values are NaN or Inf"),
        )?;
    }
    Ok(Model {
        inner: Arc::new(inner),
    })
}

/// A RuntimeWarning about NaN/Inf in weights or an input (the CLI's warning; turn it into
/// an error with `warnings.simplefilter("error", RuntimeWarning)`, as the CLI's --strict).
fn warn_nonfinite(py: Python<'_>, msg: &str) -> PyResult<()> {
    let text = std::ffi::CString::new(format!(
        "{msg}; they propagate through the model (spiking layers turn NaN into no spike)"
    ))
    .unwrap_or_default();
    PyErr::warn(
        py,
        &py.get_type::<pyo3::exceptions::PyRuntimeWarning>(),
        &text,
        1,
    )
}

/// Warns when an input array holds NaN or Inf.
fn check_input_values(py: Python<'_>, data: &[f32], what: &str) -> PyResult<()> {
    let bad = spikescan::loader::count_nonfinite(data);
    if bad > 0 {
        warn_nonfinite(
            py,
            &format!("{what}: {bad} of {} values are NaN or Inf", data.len()),
        )?;
    }
    Ok(())
}

/// A classifier's input: decoded from a file or an image (owned), or a float32 array
/// (borrowed).
enum Batch<'py> {
    Owned(Vec<f32>, Vec<usize>),
    Array(numpy::PyReadonlyArrayDyn<'py, f32>),
}

impl Batch<'_> {
    fn view(&self) -> (Cow<'_, [f32]>, Vec<usize>) {
        match self {
            Batch::Owned(v, s) => (Cow::Borrowed(v.as_slice()), s.clone()),
            Batch::Array(a) => f32_input(a),
        }
    }
}

/// An image or feature batch for a classifier: a file path (PNG/JPEG for image models, WAV
/// for LMUFormers, or safetensors with `input`), a uint8 image `[H, W, 3]` (preprocessed as
/// a file would be), or a float32 batch already in the model's layout.
fn classifier_input<'py>(
    py: Python<'py>,
    inner: &Inner,
    x: &Bound<'py, PyAny>,
) -> PyResult<Batch<'py>> {
    if let RModel::Mamba(_) = inner.model {
        return Err(input_err(format!(
            "{} is a language model (Mamba): call it on token ids, or use generate()",
            inner.path.display()
        )));
    }
    let is_array = x.is_instance_of::<PyUntypedArray>();
    if !is_array {
        if let Ok(path) = x.extract::<PathBuf>() {
            let (v, s) = gpu_m(py, || match &inner.model {
                RModel::Lmuformer(m) => input::read_features(&path, m),
                m => input::read_images(&path, m),
            })?;
            return Ok(Batch::Owned(v, s));
        }
    }
    if let Ok(u) = x.cast::<PyUntypedArray>() {
        if u.dtype().is_equiv_to(&numpy::dtype::<u8>(py)) {
            let Some(spec) = inner.model.image_spec() else {
                return Err(DTypeError::new_err(
                    "a uint8 array is an image; this model takes float32 features [B, frames, mel]",
                ));
            };
            let a = x.cast::<PyArrayDyn<u8>>()?.readonly();
            let sh = a.shape().to_vec();
            if sh.len() != 3 || sh[2] != 3 || sh[0] == 0 || sh[1] == 0 {
                return Err(input_err(format!(
                    "a uint8 image is [H, W, 3] (RGB), got {sh:?}"
                )));
            }
            let raw: Vec<u8> = a.as_array().iter().copied().collect();
            let img = image::RgbImage::from_raw(sh[1] as u32, sh[0] as u32, raw)
                .ok_or_else(|| input_err(format!("an image of shape {sh:?} is too large")))?;
            let v = gpu(py, || {
                Ok(vision::preprocess(
                    &img,
                    spec.height,
                    spec.width,
                    spec.crop_pct,
                ))
            })?;
            return Ok(Batch::Owned(v, vec![1, 3, spec.height, spec.width]));
        }
    }
    Ok(Batch::Array(as_f32_array(x, "the input")?))
}

/// The batch's shape suits the model and its data fills it (the CLI's check).
fn check_batch(model: &RModel, data: &[f32], shape: &[usize]) -> Result<(), ModelError> {
    model.check_input(shape)?;
    if data.len() != shape.iter().product::<usize>() {
        return Err(ModelError::Input(format!(
            "{} values for an input of shape {shape:?}",
            data.len()
        )));
    }
    Ok(())
}

#[pymethods]
impl Model {
    /// Logits: images `[B, C, H, W]` (float32, normalised) → `[B, classes]`; LMUFormer
    /// features `[B, frames, mel]` → `[B, classes]`, or `[B, frames, classes]` with
    /// `all_seq=True`; Mamba token ids `[B, L]` (integers) → `[B, L, vocab]` (padded vocab).
    #[pyo3(signature = (x, all_seq=false))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        all_seq: bool,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let inner = &*self.inner;
        let dev = &inner.dev;
        if let RModel::Mamba(m) = &inner.model {
            if all_seq {
                return Err(input_err("all_seq applies to LMUFormer models only"));
            }
            let (ids, shape) = token_ids(x)?;
            if shape.len() != 2 || shape[0] == 0 || shape[1] == 0 {
                return Err(input_err(format!(
                    "token ids must be [B, L], got {shape:?}"
                )));
            }
            let v = m.config.vocab_padded;
            let logits = gpu_m(py, || m.logits(dev, &ids, shape[0]))?;
            return array_out(py, logits, &[shape[0], shape[1], v]);
        }
        if all_seq && !matches!(inner.model, RModel::Lmuformer(_)) {
            return Err(input_err("all_seq applies to LMUFormer models only"));
        }
        let arr = as_f32_array(x, "the input")?;
        let (data, shape) = f32_input(&arr);
        let data: &[f32] = &data;
        check_input_values(py, data, "the input")?;
        let (out, out_shape) = gpu_m(py, || {
            check_batch(&inner.model, data, &shape)?;
            Ok(match &inner.model {
                RModel::Spikformer(m) => {
                    let k = m.config.num_classes;
                    (m.run(dev, data, &shape)?, vec![shape[0], k])
                }
                RModel::MetaSpikeformer(m) => {
                    let k = m.config.num_classes;
                    (m.run(dev, data, &shape)?, vec![shape[0], k])
                }
                RModel::Lmuformer(m) => {
                    let k = m.config.num_classes;
                    let s = if all_seq {
                        vec![shape[0], shape[1], k]
                    } else {
                        vec![shape[0], k]
                    };
                    (m.run(dev, data, &shape, all_seq)?, s)
                }
                RModel::Mamba(_) => {
                    return Err(ModelError::Input(
                        "a Mamba model takes token ids, not images".into(),
                    ))
                }
            })
        })?;
        array_out(py, out, &out_shape)
    }

    /// The top classes of an image (a path, a uint8 `[H, W, 3]` array or a float32 batch) or,
    /// for an LMUFormer, a clip (a WAV path or features): a list of {"class", "label",
    /// "logit"}, best first, for one sample; a list of such lists for a batch of several.
    #[pyo3(signature = (x, top_k=5))]
    fn classify<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        top_k: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        let inner = &*self.inner;
        let batch = classifier_input(py, inner, x)?;
        let (data, shape) = batch.view();
        let data: &[f32] = &data;
        check_input_values(py, data, "the input")?;
        let (logits, k) = gpu_m(py, || {
            check_batch(&inner.model, data, &shape)?;
            let k = match &inner.model {
                RModel::Lmuformer(m) => m.config.num_classes,
                m => m.image_spec().map_or(0, |s| s.num_classes),
            };
            let x = inner.dev.tensor_f32(data, &shape)?;
            let mut rec = inner.dev.recorder("classify");
            let y = inner.model.forward(&mut rec, &x, None)?;
            rec.submit()?;
            Ok((inner.dev.read_f32(&y)?, k))
        })?;
        let rows = PyList::empty(py);
        for row in logits.chunks(k.max(1)) {
            let best = PyList::empty(py);
            for j in top_classes(row, top_k) {
                let d = PyDict::new(py);
                d.set_item("class", j)?;
                d.set_item("label", inner.label(j))?;
                d.set_item("logit", row[j])?;
                best.append(d)?;
            }
            rows.append(best)?;
        }
        if rows.len() == 1 {
            return Ok(rows.get_item(0)?.cast_into::<PyList>()?);
        }
        Ok(rows)
    }

    /// One forward pass with every LIF layer tapped, as `spikescan run --stats`: a dict with
    /// "logits", "layers" (each {"layer", "firing_rate", "sops"}), "first_layer_macs",
    /// "sops" and "energy_mj" (per sample). Takes what `classify` takes.
    fn stats<'py>(&self, py: Python<'py>, x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
        let inner = &*self.inner;
        let batch = classifier_input(py, inner, x)?;
        let (data, shape) = batch.view();
        let data: &[f32] = &data;
        check_input_values(py, data, "the input")?;
        let (logits, out_shape, st) = gpu_m(py, || {
            check_batch(&inner.model, data, &shape)?;
            let (k, t) = match &inner.model {
                RModel::Lmuformer(m) => (m.config.num_classes, shape[1]),
                m => m.image_spec().map_or((0, 0), |s| (s.num_classes, s.t)),
            };
            let x = inner.dev.tensor_f32(data, &shape)?;
            let mut taps = Taps::default();
            let mut rec = inner.dev.recorder("stats");
            let y = inner.model.forward(&mut rec, &x, Some(&mut taps))?;
            rec.submit()?;
            let logits = inner.dev.read_f32(&y)?;
            let st = stats(&inner.dev, &inner.model, &taps, &shape, t)?;
            Ok((logits, vec![shape[0], k], st))
        })?;
        let d = PyDict::new(py);
        d.set_item("logits", array_out(py, logits, &out_shape)?)?;
        let layers = PyList::empty(py);
        for l in &st.layers {
            let e = PyDict::new(py);
            e.set_item("layer", &l.layer)?;
            e.set_item("firing_rate", l.firing_rate)?;
            e.set_item("sops", l.sops)?;
            layers.append(e)?;
        }
        d.set_item("layers", layers)?;
        d.set_item("first_layer_macs", st.first_layer_macs)?;
        d.set_item("sops", st.sops)?;
        d.set_item("energy_mj", st.energy_mj)?;
        Ok(d)
    }

    /// Mamba: generates up to `max_new_tokens` after `prompt` (text, which needs
    /// tokenizer.json in the model directory, or token ids). Returns a `Generation`, an
    /// iterator that produces one token per step: the new text of each token (possibly "")
    /// for a text prompt, the token id for an id prompt. Temperature 0 is greedy; `top_k` 0
    /// keeps 256 candidates.
    #[pyo3(signature = (prompt, max_new_tokens=32, temperature=0.0, top_k=0, top_p=1.0, seed=0))]
    #[allow(clippy::too_many_arguments)]
    fn generate(
        &self,
        py: Python<'_>,
        prompt: &Bound<'_, PyAny>,
        max_new_tokens: usize,
        temperature: f32,
        top_k: usize,
        top_p: f32,
        seed: u64,
    ) -> PyResult<Generation> {
        let inner = self.inner.clone();
        let m = inner.mamba()?;
        let (ids, text) = if let Ok(text) = prompt.extract::<String>() {
            let tok_path = inner.path.join("tokenizer.json");
            let tok = inner.tokenizer.as_ref().ok_or_else(|| {
                input_err(format!(
                    "a text prompt needs a tokenizer: {} is missing (or pass token ids)",
                    tok_path.display()
                ))
            })?;
            let enc = tok
                .encode(text.as_str(), false)
                .map_err(|e| input_err(format!("tokenizing the prompt: {e}")))?;
            (enc.get_ids().to_vec(), true)
        } else {
            let (ids, shape) = token_ids(prompt)?;
            if shape.len() > 1 && shape[..shape.len() - 1].iter().any(|&d| d != 1) {
                return Err(input_err(format!(
                    "generate takes one sequence of token ids, got shape {shape:?}"
                )));
            }
            (ids, false)
        };
        let sampling = Sampling {
            temperature,
            top_k,
            top_p,
            seed,
        };
        let g = gpu_m(py, || {
            m.start_generation(&inner.dev, &ids, &sampling, Some(max_new_tokens))
        })?;
        Ok(Generation {
            inner: inner.clone(),
            gen: g,
            remaining: max_new_tokens,
            tokens: ids.clone(),
            prompt_len: ids.len(),
            text,
            printed: String::new(),
        })
    }

    /// Mamba: a fresh (zero) recurrent state for `batch` sequences decoding together.
    #[pyo3(signature = (batch=1))]
    fn state(&self, py: Python<'_>, batch: usize) -> PyResult<MambaState> {
        let inner = self.inner.clone();
        let m = inner.mamba()?;
        if batch == 0 {
            return Err(input_err("a state needs at least one sequence"));
        }
        let st = gpu_m(py, || m.new_state(&inner.dev, batch))?;
        Ok(MambaState {
            inner: inner.clone(),
            state: st,
        })
    }

    /// Mamba: runs prompts `ids [B, L]` through the parallel scan, continuing from `state`
    /// (B sequences) and leaving the final states in it; the logits of the last position
    /// `[B, vocab]`.
    fn prefill<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'py, PyAny>,
        mut state: PyRefMut<'py, MambaState>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let inner = &*self.inner;
        let m = inner.mamba()?;
        let (ids, shape) = token_ids(ids)?;
        if shape.len() != 2 || shape[0] == 0 || shape[1] == 0 {
            return Err(input_err(format!(
                "token ids must be [B, L], got {shape:?}"
            )));
        }
        same_model(inner, &state)?;
        let st = &mut state.state;
        let v = m.config.vocab_padded;
        let out = gpu_m(py, || {
            m.check_ids(&ids)?;
            let t = inner.dev.tensor_u32(&ids, &shape)?;
            let mut rec = inner.dev.recorder("mamba prefill");
            let y = m.prefill(&mut rec, &t, st, false)?;
            rec.submit()?;
            Ok(inner.dev.read_f32(&y)?)
        })?;
        array_out(py, out, &[shape[0], v])
    }

    /// Mamba: one decoding step, a token `ids [B]` for each of the state's B sequences;
    /// logits `[B, vocab]`.
    fn step<'py>(
        &self,
        py: Python<'py>,
        ids: &Bound<'py, PyAny>,
        mut state: PyRefMut<'py, MambaState>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let inner = &*self.inner;
        let m = inner.mamba()?;
        let (ids, _) = token_ids(ids)?;
        same_model(inner, &state)?;
        if ids.len() != state.state.batch {
            return Err(input_err(format!(
                "{} token ids for a state of {} sequences",
                ids.len(),
                state.state.batch
            )));
        }
        let st = &mut state.state;
        let v = m.config.vocab_padded;
        let b = ids.len();
        let out = gpu_m(py, || {
            m.check_ids(&ids)?;
            let t = inner.dev.tensor_u32(&ids, &[b])?;
            let mut rec = inner.dev.recorder("mamba step");
            let y = m.step(&mut rec, &t, st)?;
            rec.submit()?;
            Ok(inner.dev.read_f32(&y)?)
        })?;
        array_out(py, out, &[b, v])
    }

    /// LMUFormer: a frame-by-frame session over `streams` independent streams.
    #[pyo3(signature = (streams=1))]
    fn stream(&self, py: Python<'_>, streams: usize) -> PyResult<Stream> {
        let inner = self.inner.clone();
        inner.lmuformer()?;
        let cell = gpu(py, move || {
            StreamCell::try_new(inner, |o| match &o.model {
                RModel::Lmuformer(m) => m.stream(&o.dev, streams).map_err(py_err),
                _ => Err(input_err("not an LMUFormer")),
            })
        })?;
        Ok(Stream { cell })
    }

    /// The architecture, as in config.json.
    #[getter]
    fn architecture(&self) -> &'static str {
        self.inner.model.architecture()
    }

    /// The model directory it was loaded from.
    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.path.clone()
    }

    /// Class names from labels.txt (None without one).
    #[getter]
    fn labels(&self) -> Option<Vec<String>> {
        self.inner.labels.clone()
    }

    #[getter]
    fn device(&self) -> Device {
        Device {
            dev: self.inner.dev.clone(),
        }
    }

    /// Classes of a classifier; the vocabulary (unpadded) of a language model.
    #[getter]
    fn num_classes(&self) -> usize {
        match &self.inner.model {
            RModel::Mamba(m) => m.config.vocab_size,
            RModel::Lmuformer(m) => m.config.num_classes,
            m => m.image_spec().map_or(0, |s| s.num_classes),
        }
    }

    /// The input one sample takes: `[C, H, W]` (images), `[frames, mel]` (LMUFormer, whole
    /// clip), None for a language model.
    #[getter]
    fn input_shape(&self) -> Option<Vec<usize>> {
        match &self.inner.model {
            RModel::Mamba(_) => None,
            RModel::Lmuformer(m) => Some(vec![m.config.seq_len, m.config.in_channels]),
            m => m
                .image_spec()
                .map(|s| vec![s.in_channels, s.height, s.width]),
        }
    }

    /// Decodes token ids with the model's tokenizer.
    fn decode(&self, ids: &Bound<'_, PyAny>) -> PyResult<String> {
        let tok = self.inner.tokenizer.as_ref().ok_or_else(|| {
            input_err(format!(
                "{} has no tokenizer.json",
                self.inner.path.display()
            ))
        })?;
        let (ids, _) = token_ids(ids)?;
        tok.decode(&ids, false)
            .map_err(|e| input_err(format!("decoding: {e}")))
    }

    /// Encodes text with the model's tokenizer.
    fn encode(&self, text: &str) -> PyResult<Vec<u32>> {
        let tok = self.inner.tokenizer.as_ref().ok_or_else(|| {
            input_err(format!(
                "{} has no tokenizer.json",
                self.inner.path.display()
            ))
        })?;
        Ok(tok
            .encode(text, false)
            .map_err(|e| input_err(format!("tokenizing: {e}")))?
            .get_ids()
            .to_vec())
    }

    fn __repr__(&self) -> String {
        format!(
            "spikescan.Model({}, {} on {})",
            self.inner.path.display(),
            self.inner.model.architecture(),
            self.inner.dev.describe()
        )
    }
}

fn same_model(inner: &Inner, state: &MambaState) -> PyResult<()> {
    if !std::ptr::eq(inner, &*state.inner) {
        return Err(input_err("this state belongs to another model"));
    }
    Ok(())
}

/// A Mamba generation in progress: iterate it for one token per step (text pieces for a text
/// prompt, token ids for an id prompt).
#[pyclass(module = "spikescan", name = "Generation")]
struct Generation {
    inner: Arc<Inner>,
    gen: RGeneration,
    remaining: usize,
    tokens: Vec<u32>,
    prompt_len: usize,
    text: bool,
    printed: String,
}

#[pymethods]
impl Generation {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let inner = self.inner.clone();
        let m = inner.mamba()?;
        let g = &mut self.gen;
        let next = gpu_m(py, || m.next_token(&inner.dev, g))?;
        self.remaining -= 1;
        self.tokens.push(next);
        if !self.text {
            return Ok(Some(next.into_pyobject(py)?.into_any().unbind()));
        }
        // Decode everything generated so far and give what is new (a token may complete a
        // character only together with the next one), as `spikescan generate` prints it.
        let mut piece = String::new();
        if let Some(tok) = &inner.tokenizer {
            if let Ok(text) = tok.decode(&self.tokens[self.prompt_len..], false) {
                if text.len() > self.printed.len() && text.starts_with(self.printed.as_str()) {
                    piece = text[self.printed.len()..].to_string();
                    self.printed = text;
                }
            }
        }
        Ok(Some(piece.into_pyobject(py)?.into_any().unbind()))
    }

    /// Prompt and generated token ids so far.
    #[getter]
    fn tokens(&self) -> Vec<u32> {
        self.tokens.clone()
    }

    /// The generated tokens so far (without the prompt).
    #[getter]
    fn new_tokens(&self) -> Vec<u32> {
        self.tokens[self.prompt_len..].to_vec()
    }

    /// The generated text so far (None without a tokenizer).
    #[getter]
    fn text(&self) -> Option<String> {
        let tok = self.inner.tokenizer.as_ref()?;
        tok.decode(&self.tokens[self.prompt_len..], false).ok()
    }
}

/// Per-layer recurrent state of a batch of Mamba sequences, resident on the GPU
/// (`Model.state(batch)`); feed it with `Model.prefill` and `Model.step`.
#[pyclass(module = "spikescan", name = "MambaState")]
struct MambaState {
    inner: Arc<Inner>,
    state: RMambaState,
}

#[pymethods]
impl MambaState {
    /// Sequences in this state.
    #[getter]
    fn batch(&self) -> usize {
        self.state.batch
    }

    /// A copy that evolves independently (for prefix reuse).
    fn snapshot(&self, py: Python<'_>) -> PyResult<MambaState> {
        let st = &self.state;
        let dev = &self.inner.dev;
        let copy = gpu_m(py, || st.snapshot(dev))?;
        Ok(MambaState {
            inner: self.inner.clone(),
            state: copy,
        })
    }

    /// Overwrites this state with `other` (same model and batch).
    fn restore(&mut self, py: Python<'_>, other: PyRef<'_, MambaState>) -> PyResult<()> {
        if !Arc::ptr_eq(&self.inner, &other.inner) {
            return Err(input_err("restoring a state of another model"));
        }
        let dev = self.inner.dev.clone();
        let (st, src) = (&mut self.state, &other.state);
        gpu_m(py, || st.restore(&dev, src))
    }

    /// Copies sequence `src_slot` of `src` into slot `dst_slot` of this state.
    fn copy_slot(
        &mut self,
        py: Python<'_>,
        dst_slot: usize,
        src: PyRef<'_, MambaState>,
        src_slot: usize,
    ) -> PyResult<()> {
        if !Arc::ptr_eq(&self.inner, &src.inner) {
            return Err(input_err("copying a slot of another model's state"));
        }
        let dev = self.inner.dev.clone();
        let (st, other) = (&mut self.state, &src.state);
        gpu_m(py, || st.copy_slot(&dev, dst_slot, other, src_slot))
    }
}

type LmuStreamOf<'a> = LmuStream<'a>;

self_cell::self_cell!(
    /// A streaming session together with the model it reads.
    struct StreamCell {
        owner: Arc<Inner>,
        #[covariant]
        dependent: LmuStreamOf,
    }
);

/// An LMUFormer fed one frame (10 ms) at a time (`Model.stream(streams)`): `push` returns
/// the running logits of the frame `LOOKAHEAD` frames back once there is one, `finish` those
/// of the last frames held back.
#[pyclass(module = "spikescan", name = "Stream")]
struct Stream {
    cell: StreamCell,
}

/// A saved stream state (`Stream.snapshot()`), for `Stream.restore`.
#[pyclass(frozen, module = "spikescan", name = "StreamSnapshot")]
struct StreamSnapshot {
    snap: LmuSnapshot,
}

#[pymethods]
impl Stream {
    /// Pushes one frame of every stream: float32 `[streams, mel]` (or `[mel]` for one
    /// stream). Returns logits `[streams, classes]` (of frame pushed - 1 - LOOKAHEAD), or
    /// None while the look-ahead fills.
    fn push<'py>(
        &mut self,
        py: Python<'py>,
        frame: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyArrayDyn<f32>>>> {
        let arr = as_f32_array(frame, "a frame")?;
        let (data, _) = f32_input(&arr);
        let data: &[f32] = &data;
        check_input_values(py, data, "the frame")?;
        let (k, s) = {
            let o = self.cell.borrow_owner();
            let m = o.lmuformer()?;
            (m.config.num_classes, self.cell.borrow_dependent().streams())
        };
        let out = gpu_m(py, || self.cell.with_dependent_mut(|_, st| st.push(data)))?;
        out.map(|v| array_out(py, v, &[s, k])).transpose()
    }

    /// Ends the clip (its zero padding) and returns the logits of the frames still held
    /// back, in order (up to LOOKAHEAD).
    fn finish<'py>(&mut self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyArrayDyn<f32>>>> {
        let (k, s) = {
            let o = self.cell.borrow_owner();
            let m = o.lmuformer()?;
            (m.config.num_classes, self.cell.borrow_dependent().streams())
        };
        let outs = gpu_m(py, || self.cell.with_dependent_mut(|_, st| st.finish()))?;
        outs.into_iter()
            .map(|v| array_out(py, v, &[s, k]))
            .collect()
    }

    /// Frames pushed so far, and predictions emitted.
    #[getter]
    fn position(&self) -> (usize, usize) {
        self.cell.borrow_dependent().position()
    }

    #[getter]
    fn streams(&self) -> usize {
        self.cell.borrow_dependent().streams()
    }

    /// A copy of the session's state (on the host).
    fn snapshot(&self, py: Python<'_>) -> PyResult<StreamSnapshot> {
        let st = self.cell.borrow_dependent();
        let snap = gpu_m(py, || st.snapshot())?;
        Ok(StreamSnapshot { snap })
    }

    /// Returns the session to a snapshot's state.
    fn restore(&mut self, py: Python<'_>, snap: PyRef<'_, StreamSnapshot>) -> PyResult<()> {
        let s = &snap.snap;
        gpu_m(py, || self.cell.with_dependent_mut(|_, st| st.restore(s)))
    }
}

/// The source of tools/convert.py (run by `spikescan.convert` with this interpreter).
#[pyfunction]
fn _convert_source() -> &'static str {
    include_str!("../../tools/convert.py")
}

#[pymodule]
fn _spikescan(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("ARCHITECTURES", spikescan::models::ARCHITECTURES.to_vec())?;
    m.add("LOOKAHEAD", LOOKAHEAD)?;
    m.add_class::<Device>()?;
    m.add_class::<Model>()?;
    m.add_class::<Generation>()?;
    m.add_class::<MambaState>()?;
    m.add_class::<Stream>()?;
    m.add_class::<StreamSnapshot>()?;
    m.add_function(wrap_pyfunction!(adapters, m)?)?;
    m.add_function(wrap_pyfunction!(_load, m)?)?;
    m.add_function(wrap_pyfunction!(_convert_source, m)?)?;
    Ok(())
}
