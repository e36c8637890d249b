//! Writes every preprocessed shader variant for the portability gate (tools/portability/):
//! `DIR/wgsl/*.wgsl` (WGSL for Tint, one file per variant), `DIR/spv/*.spv` (naga's SPIR-V of
//! each pipeline, for `spirv-val`) and `DIR/manifest.json` (each variant's entry points, what
//! they need, and the override sets the launchers use).
//!
//! `cargo run -p spikescan-runtime --example export_shaders -- DIR`

use std::fmt::Write as _;
use std::path::PathBuf;

use naga::back::spv;
use naga::valid::{Capabilities, ShaderStages, SubgroupOperationSet, ValidationFlags, Validator};
use spikescan_runtime::pipeline::{every_pipeline, Target, VariantPipeline};
use spikescan_runtime::Shader;

fn stem(shader: Shader, defines: &[&str]) -> String {
    let mut s = shader.file().trim_end_matches(".wgsl").to_string();
    for d in defines {
        s.push('_');
        s.push_str(&d.to_lowercase());
    }
    s
}

fn spirv(p: &VariantPipeline) -> Result<Vec<u32>, String> {
    let src = p.shader.wgsl(p.defines, Target::Naga)?;
    let module = naga::front::wgsl::parse_str(&src).map_err(|e| e.emit_to_string(&src))?;
    let info = Validator::new(ValidationFlags::all(), Capabilities::all())
        .subgroup_stages(ShaderStages::COMPUTE)
        .subgroup_operations(SubgroupOperationSet::all())
        .validate(&module)
        .map_err(|e| e.emit_to_string(&src))?;
    let mut constants = naga::back::PipelineConstants::default();
    for &(name, v) in &p.constants {
        constants.insert(name.to_string(), v as f64);
    }
    let entry = p.needs.entry.clone();
    let (module, info) = naga::back::pipeline_constants::process_overrides(
        &module,
        &info,
        Some((naga::ShaderStage::Compute, &entry)),
        &constants,
    )
    .map_err(|e| e.to_string())?;
    // SPIR-V 1.3: what Vulkan 1.1 (wgpu's floor) accepts and subgroup operations need.
    let options = spv::Options {
        lang_version: (1, 3),
        ..spv::Options::default()
    };
    let pipeline = spv::PipelineOptions {
        shader_stage: naga::ShaderStage::Compute,
        entry_point: entry,
    };
    spv::write_vec(&module, &info, &options, Some(&pipeline)).map_err(|e| e.to_string())
}

fn main() -> Result<(), String> {
    let dir = PathBuf::from(std::env::args().nth(1).ok_or("usage: export_shaders DIR")?);
    for sub in ["wgsl", "spv"] {
        let d = dir.join(sub);
        if d.exists() {
            std::fs::remove_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let write = |path: PathBuf, bytes: &[u8]| -> Result<(), String> {
        std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))
    };
    let pipelines = every_pipeline()?;
    let mut json = String::from("{\"modules\": [\n");
    let mut modules = 0;
    for (mi, &shader) in Shader::ALL.iter().enumerate() {
        for (vi, &defines) in shader.variants().iter().enumerate() {
            let name = format!("{}.wgsl", stem(shader, defines));
            write(
                dir.join("wgsl").join(&name),
                shader.wgsl(defines, Target::Tint)?.as_bytes(),
            )?;
            if mi + vi > 0 {
                json.push_str(",\n");
            }
            let quoted: Vec<String> = defines.iter().map(|d| format!("\"{d}\"")).collect();
            let _ = write!(
                json,
                "  {{\"file\": \"{}\", \"defines\": [{}], \"wgsl\": \"wgsl/{name}\", \"f16\": {}, \"subgroups\": {}, \"pipelines\": [",
                shader.file(),
                quoted.join(", "),
                defines.contains(&"F16"),
                defines.contains(&"SUBGROUPS"),
            );
            let mine: Vec<&VariantPipeline> = pipelines
                .iter()
                .filter(|p| p.shader == shader && p.defines == defines)
                .collect();
            for (pi, p) in mine.iter().enumerate() {
                let spv_name = format!(
                    "{}-{}-{}.spv",
                    stem(shader, defines),
                    p.needs.entry,
                    p.constants
                        .iter()
                        .map(|(n, v)| format!("{n}{v}"))
                        .collect::<Vec<_>>()
                        .join("_")
                );
                let words = spirv(p).map_err(|e| format!("{}: {e}", p.label()))?;
                write(
                    dir.join("spv").join(&spv_name),
                    bytemuck::cast_slice(&words),
                )?;
                let consts: Vec<String> = p
                    .constants
                    .iter()
                    .map(|(n, v)| format!("\"{n}\": {v}"))
                    .collect();
                let n = &p.needs;
                let _ = write!(
                    json,
                    "{}\n    {{\"entry\": \"{}\", \"constants\": {{{}}}, \"spv\": \"spv/{spv_name}\", \"storage_buffers\": {}, \"uniform_buffers\": {}, \"workgroup_bytes\": {}, \"workgroup_size\": [{}, {}, {}], \"invocations\": {}}}",
                    if pi > 0 { "," } else { "" },
                    n.entry,
                    consts.join(", "),
                    n.storage_buffers,
                    n.uniform_buffers,
                    n.workgroup_bytes,
                    n.workgroup_size[0],
                    n.workgroup_size[1],
                    n.workgroup_size[2],
                    n.invocations(),
                );
            }
            json.push_str("]}");
            modules += 1;
        }
    }
    json.push_str("\n]}\n");
    write(dir.join("manifest.json"), json.as_bytes())?;
    eprintln!(
        "export_shaders: {modules} variants, {} pipelines -> {}",
        pipelines.len(),
        dir.display()
    );
    Ok(())
}
