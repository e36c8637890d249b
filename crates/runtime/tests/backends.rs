//! Every shader variant through naga's back ends — SPIR-V (Vulkan), MSL (Metal), HLSL (DX12)
//! and GLSL (GL/GLES) — with every override set the launchers use, as wgpu would translate
//! them on each platform (GLSL: all but the F16 variants, which the GL back end never runs).
//! No GPU needed. The SPIR-V is validated by `spirv-val` in the
//! portability gate (`tools/portability/check.sh`, from `examples/export_shaders.rs`).

use naga::back::{glsl, hlsl, msl, spv};
use naga::valid::{Capabilities, ShaderStages, SubgroupOperationSet, ValidationFlags, Validator};
use naga::ShaderStage;
use spikescan_runtime::pipeline::{every_pipeline, Target, VariantPipeline};

fn module(p: &VariantPipeline) -> (naga::Module, naga::valid::ModuleInfo) {
    let src = p.shader.wgsl(p.defines, Target::Naga).unwrap();
    let module = naga::front::wgsl::parse_str(&src).unwrap();
    let info = Validator::new(ValidationFlags::all(), Capabilities::all())
        .subgroup_stages(ShaderStages::COMPUTE)
        .subgroup_operations(SubgroupOperationSet::all())
        .validate(&module)
        .unwrap();
    (module, info)
}

/// Writes one pipeline through every back end; the errors, one line each.
fn translate(p: &VariantPipeline) -> Vec<String> {
    let (module, info) = module(p);
    let mut constants = naga::back::PipelineConstants::default();
    for &(name, v) in &p.constants {
        constants.insert(name.to_string(), v as f64);
    }
    let entry = p.needs.entry.as_str();
    let (module, info) = match naga::back::pipeline_constants::process_overrides(
        &module,
        &info,
        Some((ShaderStage::Compute, entry)),
        &constants,
    ) {
        Ok(r) => r,
        Err(e) => return vec![format!("overrides: {e}")],
    };
    let mut errors = Vec::new();

    let spv_options = spv::Options {
        lang_version: (1, 3),
        ..spv::Options::default()
    };
    let spv_pipeline = spv::PipelineOptions {
        shader_stage: ShaderStage::Compute,
        entry_point: entry.to_string(),
    };
    match spv::write_vec(&module, &info, &spv_options, Some(&spv_pipeline)) {
        Ok(words) if words.first() == Some(&0x0723_0203) => {}
        Ok(_) => errors.push("spir-v: no magic number".into()),
        Err(e) => errors.push(format!("spir-v: {e}")),
    }

    let msl_options = msl::Options {
        lang_version: (2, 4),
        ..msl::Options::default()
    };
    let msl_pipeline = msl::PipelineOptions {
        entry_point: Some((ShaderStage::Compute, entry.to_string())),
        ..msl::PipelineOptions::default()
    };
    if let Err(e) = msl::write_string(&module, &info, &msl_options, &msl_pipeline) {
        errors.push(format!("msl: {e}"));
    }

    // Shader model 6.2 for f16 (DX12 exposes shader-f16 only there), 6.0 for wave ops.
    let hlsl_options = hlsl::Options {
        shader_model: hlsl::ShaderModel::V6_2,
        ..hlsl::Options::default()
    };
    let hlsl_pipeline = hlsl::PipelineOptions {
        entry_point: Some((ShaderStage::Compute, entry.to_string())),
    };
    let mut out = String::new();
    if let Err(e) =
        hlsl::Writer::new(&mut out, &hlsl_options, &hlsl_pipeline).write(&module, &info, None)
    {
        errors.push(format!("hlsl: {e}"));
    }

    // GLES 3.1: compute shaders, as wgpu's GL back end targets. Not the F16 variants: wgpu's
    // GL back end never offers shader-f16 (naga's GLSL writer has no 16-bit floats), so
    // `Device::kernel` refuses them there and the launchers take the f32 twins.
    if p.defines.contains(&"F16") {
        return errors;
    }
    let glsl_options = glsl::Options {
        version: glsl::Version::Embedded {
            version: 310,
            is_webgl: false,
        },
        ..glsl::Options::default()
    };
    let glsl_pipeline = glsl::PipelineOptions {
        shader_stage: ShaderStage::Compute,
        entry_point: entry.to_string(),
        multiview: None,
    };
    let mut out = String::new();
    match glsl::Writer::new(
        &mut out,
        &module,
        &info,
        &glsl_options,
        &glsl_pipeline,
        naga::proc::BoundsCheckPolicies::default(),
    ) {
        Ok(mut w) => {
            if let Err(e) = w.write() {
                errors.push(format!("glsl: {e}"));
            }
        }
        Err(e) => errors.push(format!("glsl: {e}")),
    }
    errors
}

#[test]
fn every_variant_translates_to_spirv_msl_hlsl_and_glsl() {
    let pipelines = every_pipeline().unwrap();
    let mut failures = Vec::new();
    for p in &pipelines {
        for e in translate(p) {
            failures.push(format!("{}: {e}", p.label()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} pipelines fail a naga back end:\n{}",
        failures.len(),
        pipelines.len(),
        failures.join("\n")
    );
    assert!(pipelines.len() > 50, "only {} pipelines", pipelines.len());
}
