//! WGSL sources, the tiny preprocessor for variants, and the pipeline cache.
//!
//! A pipeline is keyed by what changes its code — shader family, entry point, `#define`d
//! variants (`F16`, `SUBGROUPS`, …), `override` constants, binding counts — never by tensor
//! shapes, which travel in the uniform params arena.

use std::sync::Arc;

use crate::device::Device;
use crate::error::{Result, RuntimeError};

macro_rules! shaders {
    ($($variant:ident => $file:literal, [$($vars:expr),*];)*) => {
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
            /// Every `#define` set the runtime compiles this family with.
            pub fn variants(self) -> &'static [&'static [&'static str]] {
                match self { $(Shader::$variant => &[$($vars),*]),* }
            }
        }
    };
}

shaders! {
    Elementwise => "elementwise.wgsl", [&[]];
    Matmul => "matmul.wgsl", [&[], &["F16"]];
    Conv => "conv.wgsl", [&[]];
    BatchNorm => "batch_norm.wgsl", [&[]];
    LayerNorm => "layer_norm.wgsl", [&[], &["SUBGROUPS"]];
    RmsNorm => "rms_norm.wgsl", [&[], &["SUBGROUPS"]];
    Pool => "pool.wgsl", [&[]];
    Reduce => "reduce.wgsl", [&[]];
    Embedding => "embedding.wgsl", [&[], &["F16"]];
    Select => "select.wgsl", [&[]];
    Lif => "lif.wgsl", [&[]];
    SpikeMatmul => "spike_matmul.wgsl", [&[]];
    Ssa => "ssa.wgsl", [&[]];
    Sdsa => "sdsa.wgsl", [&[]];
    SelectiveScan => "selective_scan.wgsl", [&[]];
    CausalConv1d => "causal_conv1d.wgsl", [&[]];
    Tokens => "tokens.wgsl", [&[]];
    Lmu => "lmu.wgsl", [&[]];
}

/// Helper files that kernels pull in with `#include "lib/…"`.
const LIBRARY: &[(&str, &str)] = &[(
    "lib/common.wgsl",
    include_str!("../../../shaders/lib/common.wgsl"),
)];

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
        let c: Vec<String> = self
            .constants
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        format!(
            "{}:{}[{}]{{{}}}",
            self.shader.file(),
            self.entry,
            self.defines.join(","),
            c.join(",")
        )
    }
}

/// A compiled compute pipeline and its bind group layout.
pub struct Kernel {
    pub(crate) pipeline: wgpu::ComputePipeline,
    pub(crate) layout: wgpu::BindGroupLayout,
    pub(crate) label: String,
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
        let src = preprocess(key.shader.source(), &key.defines).map_err(|e| {
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

    /// The cached pipeline for `key`, compiled on first use.
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
        let module = self.module(key)?;
        let label = key.label();
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
                let src = preprocess(shader.source(), defines)
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
