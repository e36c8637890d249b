//! WGSL sources, the tiny preprocessor for variants, and the pipeline cache.
//!
//! A pipeline is keyed by what changes its code — shader family, entry point, `#define`d
//! variants (`F16`, `SUBGROUPS`, …), `override` constants, binding counts — never by tensor
//! shapes, which travel in the uniform params arena.

use std::sync::Arc;

use crate::device::Device;
use crate::error::{Result, RuntimeError};

macro_rules! shaders {
    ($($variant:ident => $file:literal, [$([$($d:literal),*]),*];)*) => {
        /// A WGSL kernel family: one file under `shaders/`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Shader { $($variant),* }

        impl Shader {
            /// Every kernel family.
            pub const ALL: &'static [Shader] = &[$(Shader::$variant),*];
            /// File name under `shaders/`.
            pub fn file(self) -> &'static str {
                match self { $(Shader::$variant => $file),* }
            }
            /// The raw WGSL, before preprocessing.
            pub fn source(self) -> &'static str {
                match self { $(Shader::$variant => include_str!(concat!("../../../shaders/", $file))),* }
            }
            /// Every `#define` set the runtime compiles this family with (sorted, as in
            /// [`PipelineKey`]): each listed set, then each again with `WG128` (the
            /// 128-invocation variant, for devices that allow fewer than 256).
            pub fn variants(self) -> &'static [&'static [&'static str]] {
                match self { $(Shader::$variant => &[$(&[$($d),*]),*, $(&[$($d,)* "WG128"]),*]),* }
            }
        }
    };
}

shaders! {
    Elementwise => "elementwise.wgsl", [[]];
    Matmul => "matmul.wgsl", [
        [],
        ["RM8"],
        ["A_VEC", "B_VEC", "OUT_VEC", "RM8", "UNCHECKED"],
        ["A_ROWS", "B_ROWS"],
        ["A_ROWS", "A_VEC", "B_ROWS", "B_VEC", "OUT_VEC", "UNCHECKED"],
        ["B_F16", "F16"],
        ["B_F16", "B_VEC", "F16", "OUT_VEC", "RM8", "UNCHECKED"],
        ["A_F16", "A_VEC", "B_ROWS", "B_VEC", "F16", "OUT_VEC"],
        ["A_F16", "B_ROWS", "F16", "RM8"],
        ["B_BITS", "B_ROWS"],
        ["A_VEC", "B_BITS", "B_ROWS", "OUT_VEC", "RM8", "UNCHECKED"],
        ["A_F16", "A_VEC", "B_BITS", "B_ROWS", "F16", "OUT_VEC"],
        ["CN8"],
        ["A_VEC", "B_VEC", "CN8", "OUT_VEC", "RM8", "UNCHECKED"],
        ["A_ROWS", "B_ROWS", "CN8", "RM8"],
        ["A_VEC", "B_ROWS", "B_VEC", "CN8", "OUT_VEC", "RM8", "UNCHECKED"],
        ["A_VEC", "B_F16", "B_VEC", "CN8", "F16", "OUT_VEC", "RM8", "UNCHECKED"],
        ["A_VEC", "B_VEC"],
        ["A_VEC", "B_F16", "B_VEC", "F16"],
        ["A_F16", "A_VEC", "B_VEC", "F16"],
        ["A_F16", "F16"],
        ["A_VEC", "B_VEC", "CONV_STEP"],
        ["A_VEC", "B_F16", "B_VEC", "CONV_STEP", "F16"],
        ["CONV_STEP"],
        ["B_F16", "CONV_STEP", "F16"],
        ["A_VEC", "B_VEC", "CONV_STEP", "NORM_X"],
        ["A_VEC", "B_F16", "B_VEC", "CONV_STEP", "F16", "NORM_X"],
        ["CONV_STEP", "NORM_X"],
        ["B_F16", "CONV_STEP", "F16", "NORM_X"],
        ["A_VEC", "B_VEC", "NORM_X"],
        ["A_VEC", "B_F16", "B_VEC", "F16", "NORM_X"],
        ["NORM_X"],
        ["B_F16", "F16", "NORM_X"]
    ];
    Conv => "conv.wgsl", [
        [],
        ["B_ROWS", "GEMM"],
        ["B_ROWS", "GEMM", "SPIKES"],
        ["A_VEC", "B_ROWS", "GEMM", "OUT_VEC", "RM8"],
        ["A_VEC", "B_ROWS", "GEMM", "OUT_VEC", "RM8", "SPIKES"],
        ["A_F16", "A_VEC", "B_ROWS", "F16", "GEMM", "SPIKES"],
        ["A_F16", "B_ROWS", "F16", "GEMM", "OUT_VEC"]
    ];
    BatchNorm => "batch_norm.wgsl", [[]];
    LayerNorm => "layer_norm.wgsl", [[], ["SUBGROUPS"]];
    RmsNorm => "rms_norm.wgsl", [[], ["SUBGROUPS"]];
    Pool => "pool.wgsl", [[]];
    Reduce => "reduce.wgsl", [[]];
    Embedding => "embedding.wgsl", [[], ["F16"], ["PAIR"], ["F16", "PAIR"]];
    Select => "select.wgsl", [[]];
    Lif => "lif.wgsl", [[]];
    SpikeMatmul => "spike_matmul.wgsl", [[]];
    Ssa => "ssa.wgsl", [[]];
    Sdsa => "sdsa.wgsl", [[]];
    SelectiveScan => "selective_scan.wgsl", [[]];
    CausalConv1d => "causal_conv1d.wgsl", [[]];
    Tokens => "tokens.wgsl", [[]];
    Lmu => "lmu.wgsl", [[]];
}

/// The WGSL compiler a preprocessed source is for. The two disagree on one directive:
/// Tint (Dawn: Chrome and other browsers) requires `enable subgroups;` before subgroup
/// builtins, naga 30 rejects it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Naga,
    Tint,
}

impl Target {
    /// The compiler this build's wgpu hands WGSL to: the browser's on the web, naga elsewhere.
    pub const NATIVE: Target = if cfg!(target_arch = "wasm32") {
        Target::Tint
    } else {
        Target::Naga
    };
}

impl Shader {
    /// The preprocessed WGSL of one variant (`defines`), for `target`.
    pub fn wgsl(self, defines: &[&str], target: Target) -> std::result::Result<String, String> {
        let mut all = defines.to_vec();
        if target == Target::Tint {
            all.push("ENABLE_SUBGROUPS");
        }
        preprocess(self.source(), &all)
    }

    /// The `override` values the launchers compile an entry point with, beyond the defaults
    /// (the portability gate builds a pipeline for each). Empty: the defaults only.
    pub fn override_sets(self, entry: &str) -> Vec<Vec<(&'static str, u32)>> {
        let one = |name: &'static str, values: &[u32]| -> Vec<Vec<(&'static str, u32)>> {
            values.iter().map(|&v| vec![(name, v)]).collect()
        };
        match (self, entry) {
            // ops::elementwise: Unary and Binary codes.
            (Shader::Elementwise, "unary") => one("OP", &[0, 1, 2, 3, 4, 5]),
            (Shader::Elementwise, "binary") => one("OP", &[0, 1, 2, 3]),
            // ops::selective_scan: the padded state count, a power of two in 4..=64 (the
            // wide scan takes N > 16 only, but any NS compiles).
            (Shader::SelectiveScan, "selective_scan_wide" | "selective_state_update") => {
                one("NS", &[4, 8, 16, 32, 64])
            }
            // ops::selective_scan's ScanVariant: tokens per chunk of the N <= 16 kernels.
            (Shader::SelectiveScan, "selective_scan" | "selective_scan_channel") => {
                one("ST", &[16, 32])
            }
            // ops::matmul's skinny plans: (lanes along k, row quads) for k >= 128 or under;
            // m <= 4, <= 8, or passes of 8 rows.
            (Shader::Matmul, "skinny") => [(32, 1), (32, 2), (32, 4), (8, 1), (8, 2), (8, 4)]
                .iter()
                .map(|&(l, q)| vec![("SKL", l), ("SKQ", q)])
                .collect(),
            _ => Vec::new(),
        }
    }

    /// What each entry point of one variant needs from a device, read from its WGSL, with
    /// every `override` at its default.
    pub fn needs(self, defines: &[&str]) -> std::result::Result<Vec<EntryNeeds>, String> {
        self.needs_with(defines, &[])
    }

    /// [`Shader::needs`] with some `override`s set (`constants`): workgroup arrays sized by
    /// an override expression count at those values.
    pub fn needs_with(
        self,
        defines: &[&str],
        constants: &[(&str, u32)],
    ) -> std::result::Result<Vec<EntryNeeds>, String> {
        use naga::valid::{Capabilities, ShaderStages, SubgroupOperationSet, ValidationFlags};
        let name = format!("{}[{}]", self.file(), defines.join(","));
        let src = self.wgsl(defines, Target::Naga)?;
        let module = naga::front::wgsl::parse_str(&src)
            .map_err(|e| format!("{name}: {}", e.emit_to_string(&src)))?;
        let info = naga::valid::Validator::new(ValidationFlags::all(), Capabilities::all())
            .subgroup_stages(ShaderStages::COMPUTE)
            .subgroup_operations(SubgroupOperationSet::all())
            .validate(&module)
            .map_err(|e| format!("{name}: {}", e.emit_to_string(&src)))?;
        let mut out = Vec::new();
        for (i, ep) in module.entry_points.iter().enumerate() {
            let fi = info.get_entry_point(i);
            let mut n = EntryNeeds {
                entry: ep.name.clone(),
                storage_buffers: 0,
                uniform_buffers: 0,
                workgroup_bytes: 0,
                workgroup_size: ep.workgroup_size,
                f16: defines.contains(&"F16"),
                subgroups: defines.contains(&"SUBGROUPS"),
            };
            for (h, var) in module.global_variables.iter() {
                if fi[h].is_empty() {
                    continue;
                }
                match var.space {
                    naga::AddressSpace::Storage { .. } => n.storage_buffers += 1,
                    naga::AddressSpace::Uniform => n.uniform_buffers += 1,
                    naga::AddressSpace::WorkGroup => {
                        n.workgroup_bytes += workgroup_var_bytes(&module, var.ty, constants)
                            .ok_or_else(|| {
                                format!(
                                "{name}: the size of {} is not an override expression of literals",
                                var.name.as_deref().unwrap_or("a workgroup variable")
                            )
                            })?
                    }
                    _ => {}
                }
            }
            if let Some(overrides) = &ep.workgroup_size_overrides {
                for (dim, e) in overrides.iter().enumerate() {
                    if let Some(e) = e {
                        n.workgroup_size[dim] = override_value(&module, *e, constants)
                            .and_then(|v| u32::try_from(v).ok())
                            .ok_or_else(|| {
                                format!("{name}: {}'s workgroup size is not a literal", ep.name)
                            })?;
                    }
                }
            }
            out.push(n);
        }
        Ok(out)
    }
}

/// One pipeline the portability checks build: a variant, an entry point, override values.
#[derive(Clone, Debug)]
pub struct VariantPipeline {
    pub shader: Shader,
    pub defines: &'static [&'static str],
    pub needs: EntryNeeds,
    pub constants: Vec<(&'static str, u32)>,
}

impl VariantPipeline {
    /// `selective_scan.wgsl[SUBGROUPS]:selective_scan{NS=16}`
    pub fn label(&self) -> String {
        format!(
            "{}[{}]:{}{{{}}}",
            self.shader.file(),
            self.defines.join(","),
            self.needs.entry,
            constants_label(&self.constants)
        )
    }
}

/// Every variant's every entry point, once with each of its [`Shader::override_sets`] (or
/// once with the defaults).
pub fn every_pipeline() -> std::result::Result<Vec<VariantPipeline>, String> {
    let mut out = Vec::new();
    for &shader in Shader::ALL {
        for &defines in shader.variants() {
            for needs in shader.needs(defines)? {
                let mut sets = shader.override_sets(&needs.entry);
                if sets.is_empty() {
                    sets.push(Vec::new());
                }
                for constants in sets {
                    // Workgroup arrays may be sized by the overrides set.
                    let needs = if constants.is_empty() {
                        needs.clone()
                    } else {
                        shader
                            .needs_with(defines, &constants)?
                            .into_iter()
                            .find(|n| n.entry == needs.entry)
                            .ok_or_else(|| format!("{}: no entry {}", shader.file(), needs.entry))?
                    };
                    out.push(VariantPipeline {
                        shader,
                        defines,
                        needs,
                        constants,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// The value of an override expression (a workgroup size, an array length) with the
/// `override`s named in `constants` set and the others at their defaults; `None` past the
/// literals, overrides, constants, arithmetic, comparisons and `select` it knows. Booleans
/// are 0 and 1.
fn override_value(
    module: &naga::Module,
    e: naga::Handle<naga::Expression>,
    constants: &[(&str, u32)],
) -> Option<i64> {
    use naga::{BinaryOperator as Op, Expression as E, Literal as L};
    let eval = |e| override_value(module, e, constants);
    Some(match module.global_expressions[e] {
        E::Literal(L::U32(v)) => v as i64,
        E::Literal(L::I32(v)) => v as i64,
        E::Literal(L::AbstractInt(v)) => v,
        E::Literal(L::Bool(v)) => v as i64,
        E::Constant(c) => eval(module.constants[c].init)?,
        E::Override(o) => override_of(module, o, constants)?,
        E::Binary { op, left, right } => {
            let (a, b) = (eval(left)?, eval(right)?);
            match op {
                Op::Add => a + b,
                Op::Subtract => a - b,
                Op::Multiply => a * b,
                Op::Divide => a.checked_div(b)?,
                Op::Modulo => a.checked_rem(b)?,
                Op::Equal => (a == b) as i64,
                Op::NotEqual => (a != b) as i64,
                Op::Less => (a < b) as i64,
                Op::LessEqual => (a <= b) as i64,
                Op::Greater => (a > b) as i64,
                Op::GreaterEqual => (a >= b) as i64,
                _ => return None,
            }
        }
        E::Select {
            condition,
            accept,
            reject,
        } => {
            if eval(condition)? != 0 {
                eval(accept)?
            } else {
                eval(reject)?
            }
        }
        _ => return None,
    })
}

/// Bytes of a workgroup variable of type `ty`, an override-sized array counted at the
/// overrides' values (`constants`, defaults otherwise).
fn workgroup_var_bytes(
    module: &naga::Module,
    ty: naga::Handle<naga::Type>,
    constants: &[(&str, u32)],
) -> Option<u64> {
    match module.types[ty].inner {
        naga::TypeInner::Array {
            size: naga::ArraySize::Pending(o),
            stride,
            ..
        } => Some(u64::try_from(override_of(module, o, constants)?).ok()? * stride as u64),
        ref inner => Some(inner.size(module.to_ctx()) as u64),
    }
}

/// The value of override `o`: from `constants` by name, else its initializer's.
fn override_of(
    module: &naga::Module,
    o: naga::Handle<naga::Override>,
    constants: &[(&str, u32)],
) -> Option<i64> {
    let ov = &module.overrides[o];
    match constants
        .iter()
        .find(|(n, _)| ov.name.as_deref() == Some(*n))
    {
        Some(&(_, v)) => Some(v as i64),
        None => override_value(module, ov.init?, constants),
    }
}

/// What one entry point of a shader variant needs from a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryNeeds {
    pub entry: String,
    pub storage_buffers: u32,
    pub uniform_buffers: u32,
    /// `var<workgroup>` bytes the entry point uses.
    pub workgroup_bytes: u64,
    /// With every `override` at its default (launchers do not change workgroup sizes).
    pub workgroup_size: [u32; 3],
    pub f16: bool,
    pub subgroups: bool,
}

impl EntryNeeds {
    pub fn invocations(&self) -> u32 {
        self.workgroup_size.iter().product()
    }

    /// Every limit of `limits` this entry point exceeds, as readable lines (empty: it fits).
    pub fn exceeds(&self, limits: &wgpu::Limits) -> Vec<String> {
        let mut v = Vec::new();
        let mut check = |what: &str, need: u64, max: u64| {
            if need > max {
                v.push(format!("{what} {need} > {max}"));
            }
        };
        check(
            "storage buffers",
            self.storage_buffers as u64,
            limits.max_storage_buffers_per_shader_stage as u64,
        );
        check(
            "uniform buffers",
            self.uniform_buffers as u64,
            limits.max_uniform_buffers_per_shader_stage as u64,
        );
        check(
            "workgroup storage bytes",
            self.workgroup_bytes,
            limits.max_compute_workgroup_storage_size as u64,
        );
        check(
            "invocations",
            self.invocations() as u64,
            limits.max_compute_invocations_per_workgroup as u64,
        );
        let dims = [
            limits.max_compute_workgroup_size_x,
            limits.max_compute_workgroup_size_y,
            limits.max_compute_workgroup_size_z,
        ];
        for (d, (&need, max)) in self.workgroup_size.iter().zip(dims).enumerate() {
            check(&format!("workgroup size [{d}]"), need as u64, max as u64);
        }
        v
    }

    /// `8 storage, 2048 B shared, 256 inv, f16`: for `spikescan ops`.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} storage, {} B shared, {} inv",
            self.storage_buffers,
            self.workgroup_bytes,
            self.invocations()
        );
        if self.f16 {
            s.push_str(", shader-f16");
        }
        if self.subgroups {
            s.push_str(", subgroups");
        }
        s
    }
}

/// Helper files that kernels pull in with `#include "lib/…"`.
const LIBRARY: &[(&str, &str)] = &[
    (
        "lib/common.wgsl",
        include_str!("../../../shaders/lib/common.wgsl"),
    ),
    (
        "lib/math.wgsl",
        include_str!("../../../shaders/lib/math.wgsl"),
    ),
    (
        "lib/gemm.wgsl",
        include_str!("../../../shaders/lib/gemm.wgsl"),
    ),
    (
        "lib/spike_words.wgsl",
        include_str!("../../../shaders/lib/spike_words.wgsl"),
    ),
    (
        "lib/conv_step.wgsl",
        include_str!("../../../shaders/lib/conv_step.wgsl"),
    ),
];

/// Expands `#include "lib/x.wgsl"`, `#ifdef NAME`, `#ifndef NAME`, `#else` and `#endif`.
/// Nesting is allowed; anything else starting with `#` is an error.
pub fn preprocess(source: &str, defines: &[&str]) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(source.len() + 1024);
    // Each frame: (this branch is active, the enclosing branch is active).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let active = |stack: &Vec<(bool, bool)>| stack.last().is_none_or(|&(a, p)| a && p);
    for (n, line) in source.lines().enumerate() {
        let t = line.trim_start();
        if let Some(rest) = t.strip_prefix('#') {
            let mut words = rest.split_whitespace();
            let directive = words.next().unwrap_or("");
            let arg = words.next().unwrap_or("");
            match directive {
                "ifdef" | "ifndef" => {
                    let parent = active(&stack);
                    let has = defines.contains(&arg);
                    stack.push((if directive == "ifdef" { has } else { !has }, parent));
                }
                "else" => match stack.last_mut() {
                    Some(top) => top.0 = !top.0,
                    None => return Err(format!("line {}: #else without #ifdef", n + 1)),
                },
                "endif" => {
                    if stack.pop().is_none() {
                        return Err(format!("line {}: #endif without #ifdef", n + 1));
                    }
                }
                "include" => {
                    if active(&stack) {
                        let name = arg.trim_matches('"');
                        let lib = LIBRARY
                            .iter()
                            .find(|(k, _)| *k == name)
                            .ok_or_else(|| format!("line {}: unknown include {name}", n + 1))?;
                        out.push_str(&preprocess(lib.1, defines)?);
                        out.push('\n');
                    }
                }
                d => return Err(format!("line {}: unknown directive #{d}", n + 1)),
            }
            out.push('\n'); // keep line numbers of the original file
            continue;
        }
        if active(&stack) {
            out.push_str(line);
        }
        out.push('\n');
    }
    if !stack.is_empty() {
        return Err("unterminated #ifdef".into());
    }
    Ok(out)
}

/// What identifies a compiled pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PipelineKey {
    pub shader: Shader,
    pub entry: &'static str,
    /// `#define`d variant names, sorted.
    pub defines: Vec<&'static str>,
    /// `override` constants (workgroup sizes, op selectors, tile constants).
    pub constants: Vec<(&'static str, u32)>,
    /// Read-only storage bindings (1..=inputs), then read-write ones.
    pub inputs: u8,
    pub outputs: u8,
}

impl PipelineKey {
    pub fn new(shader: Shader, entry: &'static str, inputs: u8, outputs: u8) -> Self {
        Self {
            shader,
            entry,
            defines: Vec::new(),
            constants: Vec::new(),
            inputs,
            outputs,
        }
    }
    /// Adds a `#define` when `on`.
    pub fn define_if(mut self, name: &'static str, on: bool) -> Self {
        if on && !self.defines.contains(&name) {
            self.defines.push(name);
            self.defines.sort_unstable();
        }
        self
    }
    /// Sets an `override` constant.
    pub fn constant(mut self, name: &'static str, value: u32) -> Self {
        self.constants.retain(|(n, _)| *n != name);
        self.constants.push((name, value));
        self.constants.sort_unstable();
        self
    }
    /// The module-cache key: the shader file and its defines.
    pub fn module_id(&self) -> String {
        format!("{}[{}]", self.shader.file(), self.defines.join(","))
    }
    /// Readable label: `matmul.wgsl:matmul[F16]{TILE=4}`.
    pub fn label(&self) -> String {
        format!(
            "{}:{}[{}]{{{}}}",
            self.shader.file(),
            self.entry,
            self.defines.join(","),
            constants_label(&self.constants)
        )
    }
}

/// `NAME=value,…` of override constants, for labels.
fn constants_label(constants: &[(&'static str, u32)]) -> String {
    let c: Vec<String> = constants.iter().map(|(n, v)| format!("{n}={v}")).collect();
    c.join(",")
}

/// A compiled compute pipeline and its bind group layout.
pub struct Kernel {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
    pub(crate) label: String,
}

impl Kernel {
    /// The label of the key it was compiled for (with the `WG128` define where added).
    pub fn label(&self) -> &str {
        &self.label
    }
}

impl Device {
    fn module(&self, key: &PipelineKey) -> Result<wgpu::ShaderModule> {
        let id = key.module_id();
        if let Some(m) = self
            .inner
            .modules
            .lock()
            .ok()
            .and_then(|m| m.get(&id).cloned())
        {
            return Ok(m);
        }
        let src = key.shader.wgsl(&key.defines, Target::NATIVE).map_err(|e| {
            RuntimeError::Validation {
                context: format!("preprocessing {id}"),
                message: e,
            }
        })?;
        let module = self.scoped(
            || format!("compiling shader {id}"),
            || {
                self.inner
                    .device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(&id),
                        source: wgpu::ShaderSource::Wgsl(src.into()),
                    })
            },
        )?;
        if let Ok(mut m) = self.inner.modules.lock() {
            m.insert(id, module.clone());
        }
        Ok(module)
    }

    /// The cached pipeline for `key`, compiled on first use; on a device whose workgroups
    /// hold fewer than 256 invocations ([`Device::wg`]), compiled as the key's `WG128`
    /// variant (the cache is per device, so it stays keyed as the launcher built the key).
    pub fn kernel(&self, key: &PipelineKey) -> Result<Arc<Kernel>> {
        if let Some(k) = self
            .inner
            .kernels
            .lock()
            .ok()
            .and_then(|k| k.get(key).cloned())
        {
            return Ok(k);
        }
        if key.defines.contains(&"F16") && !self.caps().f16 {
            return Err(RuntimeError::Unsupported(format!(
                "{} needs shader-f16",
                key.label()
            )));
        }
        if key.defines.contains(&"SUBGROUPS") && !self.caps().subgroups {
            return Err(RuntimeError::Unsupported(format!(
                "{} needs subgroups",
                key.label()
            )));
        }
        let compiled = key.clone().define_if("WG128", self.wg() < 256);
        let module = self.module(&compiled)?;
        let label = compiled.label();
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: true,
                min_binding_size: None,
            },
            count: None,
        }];
        for i in 0..(key.inputs + key.outputs) {
            entries.push(wgpu::BindGroupLayoutEntry {
                binding: 1 + i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage {
                        read_only: i < key.inputs,
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            });
        }
        let constants: Vec<(&str, f64)> =
            key.constants.iter().map(|&(n, v)| (n, v as f64)).collect();
        let kernel =
            self.scoped(
                || format!("creating pipeline {label}"),
                || {
                    let layout = self.inner.device.create_bind_group_layout(
                        &wgpu::BindGroupLayoutDescriptor {
                            label: Some(&label),
                            entries: &entries,
                        },
                    );
                    let pl =
                        self.inner
                            .device
                            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                                label: Some(&label),
                                bind_group_layouts: &[Some(&layout)],
                                immediate_size: 0,
                            });
                    let pipeline = self.inner.device.create_compute_pipeline(
                        &wgpu::ComputePipelineDescriptor {
                            label: Some(&label),
                            layout: Some(&pl),
                            module: &module,
                            entry_point: Some(key.entry),
                            compilation_options: wgpu::PipelineCompilationOptions {
                                constants: &constants,
                                zero_initialize_workgroup_memory: false,
                            },
                            cache: None,
                        },
                    );
                    Kernel {
                        pipeline,
                        layout,
                        label: label.clone(),
                    }
                },
            )?;
        let kernel = Arc::new(kernel);
        if let Ok(mut k) = self.inner.kernels.lock() {
            k.insert(key.clone(), kernel.clone());
        }
        Ok(kernel)
    }

    /// Number of pipelines compiled so far.
    pub fn pipeline_count(&self) -> usize {
        self.inner.kernels.lock().map(|k| k.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocessor_selects_branches_and_keeps_line_numbers() {
        let src = "a\n#ifdef X\nb\n#else\nc\n#endif\n#ifndef Y\nd\n#endif\n";
        let with = preprocess(src, &["X"]).unwrap();
        let without = preprocess(src, &[]).unwrap();
        assert_eq!(
            with.lines().collect::<Vec<_>>(),
            ["a", "", "b", "", "", "", "", "d", ""]
        );
        assert_eq!(
            without.lines().collect::<Vec<_>>(),
            ["a", "", "", "", "c", "", "", "d", ""]
        );
        assert!(preprocess("#ifdef X\n", &[]).is_err());
        assert!(preprocess("#endif\n", &[]).is_err());
        assert!(preprocess("#pragma x\n", &[]).is_err());
        assert!(preprocess("#include \"lib/nope.wgsl\"\n", &[]).is_err());
    }

    #[test]
    fn nested_branches_inside_inactive_ones_stay_inactive() {
        let src = "#ifdef A\n#ifndef B\nx\n#endif\n#endif\n";
        assert!(!preprocess(src, &[]).unwrap().contains('x'));
        assert!(preprocess(src, &["A"]).unwrap().contains('x'));
        assert!(!preprocess(src, &["A", "B"]).unwrap().contains('x'));
    }

    #[test]
    fn keys_that_change_code_never_collide() {
        use std::collections::HashSet;
        let base = PipelineKey::new(Shader::Matmul, "matmul", 3, 1);
        let keys = [
            base.clone(),
            base.clone().define_if("F16", true),
            base.clone().define_if("SUBGROUPS", true),
            base.clone().constant("OP", 1),
            base.clone().constant("OP", 2),
            PipelineKey::new(Shader::Matmul, "gemv", 3, 1),
            PipelineKey::new(Shader::Conv, "matmul", 3, 1),
        ];
        let labels: HashSet<String> = keys.iter().map(|k| k.label()).collect();
        assert_eq!(labels.len(), keys.len());
        let set: HashSet<&PipelineKey> = keys.iter().collect();
        assert_eq!(set.len(), keys.len());
        // The module id differs exactly when the preprocessed source can differ.
        assert_ne!(keys[0].module_id(), keys[1].module_id());
        assert_eq!(keys[0].module_id(), keys[3].module_id());
        // Defines are order-insensitive.
        let ab = base
            .clone()
            .define_if("F16", true)
            .define_if("SUBGROUPS", true);
        let ba = base.define_if("SUBGROUPS", true).define_if("F16", true);
        assert_eq!(ab, ba);
    }

    /// Every WGSL file and every variant parses and validates with naga — no GPU needed.
    #[test]
    fn every_shader_variant_validates_with_naga() {
        use naga::valid::{Capabilities, ValidationFlags, Validator};
        let mut checked = 0;
        for &shader in Shader::ALL {
            for defines in shader.variants() {
                let src = shader
                    .wgsl(defines, Target::Naga)
                    .unwrap_or_else(|e| panic!("{} {defines:?}: {e}", shader.file()));
                let module = naga::front::wgsl::parse_str(&src).unwrap_or_else(|e| {
                    panic!(
                        "{} {defines:?} does not parse:\n{}",
                        shader.file(),
                        e.emit_to_string(&src)
                    )
                });
                let mut caps = Capabilities::empty();
                if defines.contains(&"F16") {
                    caps |= Capabilities::SHADER_FLOAT16;
                }
                if defines.contains(&"SUBGROUPS") {
                    caps |= Capabilities::SUBGROUP;
                }
                let info = Validator::new(ValidationFlags::all(), caps)
                    .subgroup_stages(naga::valid::ShaderStages::COMPUTE)
                    .subgroup_operations(naga::valid::SubgroupOperationSet::all())
                    .validate(&module)
                    .unwrap_or_else(|e| {
                        panic!(
                            "{} {defines:?} fails validation:\n{}",
                            shader.file(),
                            e.emit_to_string(&src)
                        )
                    });
                let _ = info;
                assert!(
                    !module.entry_points.is_empty(),
                    "{} has no entry point",
                    shader.file()
                );
                checked += 1;
            }
        }
        assert!(checked >= Shader::ALL.len());
    }

    /// Every entry point of every variant fits WebGPU's default limits (what every WebGPU
    /// device guarantees): 8 storage buffers per stage, 16 KiB of workgroup storage, 256
    /// invocations — the limits `SPIKESCAN_LIMITS=webgpu` requests; with each of the
    /// launchers' override values (workgroup arrays may be sized by them).
    #[test]
    fn every_entry_point_fits_default_webgpu_limits() {
        let limits = wgpu::Limits::default();
        let mut entries = 0;
        let mut over = Vec::new();
        for p in every_pipeline().unwrap() {
            entries += 1;
            for e in p.needs.exceeds(&limits) {
                over.push(format!("{}: {e}", p.label()));
            }
        }
        assert!(
            over.is_empty(),
            "over default WebGPU limits:\n{}",
            over.join("\n")
        );
        assert!(entries > Shader::ALL.len());
    }

    /// Every variant comes in a 256- and a 128-invocation form, and nothing else: the
    /// launchers' grids assume `Device::wg` invocations per workgroup. The exceptions have a
    /// fixed size under 128 that every device runs, and launchers that size their grids by it.
    #[test]
    fn every_entry_point_runs_wg_invocations() {
        // ops::selective_scan: 16 channels x 4 state groups; 64 channels, a thread each.
        const FIXED: &[(&str, &str, u32)] = &[
            ("selective_scan.wgsl", "selective_scan", 64),
            ("selective_scan.wgsl", "selective_scan_channel", 64),
        ];
        let compat = wgpu::Limits {
            max_compute_invocations_per_workgroup: 128,
            max_compute_workgroup_size_x: 128,
            max_compute_workgroup_size_y: 128,
            max_compute_workgroup_size_z: 64,
            ..wgpu::Limits::default()
        };
        let mut narrow = 0;
        for &shader in Shader::ALL {
            let v = shader.variants();
            assert_eq!(
                v.iter().filter(|d| d.contains(&"WG128")).count() * 2,
                v.len()
            );
            for defines in v {
                let wg = if defines.contains(&"WG128") { 128 } else { 256 };
                for n in shader.needs(defines).unwrap() {
                    let fixed = FIXED
                        .iter()
                        .find(|(f, e, _)| *f == shader.file() && *e == n.entry);
                    assert_eq!(
                        n.workgroup_size,
                        [fixed.map_or(wg, |x| x.2), 1, 1],
                        "{} {defines:?} {}",
                        shader.file(),
                        n.entry
                    );
                    if wg == 128 {
                        narrow += 1;
                        assert!(
                            n.exceeds(&compat).is_empty(),
                            "{} {defines:?} {}: {:?}",
                            shader.file(),
                            n.entry,
                            n.exceeds(&compat)
                        );
                    }
                }
            }
        }
        assert!(narrow > Shader::ALL.len());
    }

    #[test]
    fn needs_counts_what_an_entry_point_uses() {
        let scan = Shader::SelectiveScan.needs(&[]).unwrap();
        let get = |name: &str| scan.iter().find(|n| n.entry == name).unwrap().clone();
        // u, dt, bc, z, packed weights, h0, y, h_out; the decode update has no h0.
        assert_eq!(get("selective_scan").storage_buffers, 8);
        assert_eq!(get("selective_scan_wide").storage_buffers, 8);
        assert_eq!(get("selective_state_update").storage_buffers, 7);
        // t_delta, t_u, t_b, t_c (vec4), t_part; sa, sb, carry; red and red_y.
        assert_eq!(
            get("selective_scan").workgroup_bytes,
            4 * (256 + 256 + 4 * 64 + 4 * 64 + 1280)
        );
        assert_eq!(
            get("selective_scan_wide").workgroup_bytes,
            4 * (256 + 256 + 64)
        );
        assert_eq!(
            get("selective_state_update").workgroup_bytes,
            4 * (256 + 256)
        );
        // 32-token chunks: every array doubles, t_part's rows shrink to 64 words (16 KiB);
        // the channel-per-thread kernel stages B and C only.
        let scan32 = Shader::SelectiveScan
            .needs_with(&[], &[("ST", 32)])
            .unwrap();
        let get32 = |name: &str| scan32.iter().find(|n| n.entry == name).unwrap().clone();
        assert_eq!(get32("selective_scan").workgroup_bytes, 16384);
        assert_eq!(get("selective_scan_channel").workgroup_bytes, 2 * 16 * 64);
        assert_eq!(
            get32("selective_scan_channel").workgroup_bytes,
            2 * 16 * 128
        );
        assert_eq!(get("selective_scan_channel").storage_buffers, 8);
        assert_eq!(get32("selective_scan_wide"), get("selective_scan_wide"));
        assert_eq!(get("selective_scan").invocations(), 64);
        assert_eq!(get("selective_scan_wide").invocations(), 256);
        let tight = wgpu::Limits {
            max_storage_buffers_per_shader_stage: 7,
            ..wgpu::Limits::default()
        };
        assert_eq!(
            get("selective_scan").exceeds(&tight),
            ["storage buffers 8 > 7"]
        );
        assert!(get("selective_state_update").exceeds(&tight).is_empty());
        // The elementwise workgroup size is an override (WG = 256 by default).
        let ew = Shader::Elementwise.needs(&[]).unwrap();
        assert!(ew.iter().all(|n| n.workgroup_size == [256, 1, 1]));
    }

    #[test]
    fn subgroup_variants_enable_subgroups_for_tint_only() {
        let naga_src = Shader::RmsNorm.wgsl(&["SUBGROUPS"], Target::Naga).unwrap();
        let tint_src = Shader::RmsNorm.wgsl(&["SUBGROUPS"], Target::Tint).unwrap();
        let plain = Shader::RmsNorm.wgsl(&[], Target::Tint).unwrap();
        assert!(!naga_src.contains("enable subgroups;"));
        assert!(tint_src.contains("enable subgroups;"));
        assert!(!plain.contains("enable subgroups;"));
    }

    /// Every file in shaders/ is known to the runtime (nothing is left untested).
    #[test]
    fn every_shader_file_is_registered() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shaders");
        let known: Vec<&str> = Shader::ALL.iter().map(|s| s.file()).collect();
        for e in std::fs::read_dir(&dir).expect("shaders/ exists") {
            let name = e.expect("entry").file_name().to_string_lossy().to_string();
            if name.ends_with(".wgsl") {
                assert!(
                    known.contains(&name.as_str()),
                    "shaders/{name} is not registered in Shader"
                );
            }
        }
    }
}
