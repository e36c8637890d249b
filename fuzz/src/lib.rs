//! What each fuzz target runs on its input, in one place: the cargo-fuzz targets under
//! `fuzz_targets/` call these, and the stable test `tests/fuzz_corpus.rs` (which includes
//! this file as a module) replays the committed corpora through them. Each function takes
//! untrusted bytes and returns `Ok` or the error message; it must never panic, abort or
//! allocate without bound.

use std::path::{Path, PathBuf};

use serde_json::Value;
use spikescan_loader::Checkpoint;
use spikescan_models::{
    audio, input, text, vision, LmuformerConfig, MambaConfig, MetaSpikeformerConfig, ModelDir,
    SpikformerConfig, MAX_PARAMETERS,
};

/// Fuzz target names, each with a function of the same name below.
pub const TARGETS: &[&str] = &[
    "checkpoint",
    "config",
    "tokenizer",
    "wav",
    "image",
    "prompt_ids",
];

/// Runs target `name` on `data`.
pub fn run(name: &str, data: &[u8]) -> Result<(), String> {
    match name {
        "checkpoint" => checkpoint(data),
        "config" => config(data),
        "tokenizer" => tokenizer(data),
        "wav" => wav(data),
        "image" => image(data),
        "prompt_ids" => prompt_ids(data),
        other => panic!("no fuzz target {other}"),
    }
}

/// Reads every tensor of a checkpoint as floats and as integers.
fn read_all(ck: &Checkpoint) -> Result<(), String> {
    let _ = ck.parameter_count();
    let _ = ck.metadata("format");
    for key in ck.keys() {
        let shape = ck.shape(key).ok_or("a listed key has no shape")?;
        let _ = ck.dtype(key);
        if let Ok(v) = ck.f32_any(key) {
            // The values are the tensor's, no more: the header's shape decides the count.
            let n: usize = shape.iter().product();
            if v.len() != n {
                panic!("{key}: {} values for shape {shape:?}", v.len());
            }
        }
        let _ = ck.ints(key);
        let _ = ck.f32(key, shape);
    }
    let _ = ck.unused_keys();
    Ok(())
}

/// A directory (one per process) holding one valid shard, `model-00001-of-00001.safetensors`
/// with tensors `a` and `b`, for fuzzing index files against it.
fn shard_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("spikescan-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        spikescan_loader::save_f32(
            dir.join("model-00001-of-00001.safetensors"),
            &[
                ("a".into(), vec![2], vec![1.0, 2.0]),
                ("module.b".into(), vec![1, 1], vec![3.0]),
            ],
        )
        .expect("writing the shard");
        dir
    })
}

/// safetensors bytes → [`Checkpoint::from_bytes`], then every tensor read; the same bytes as
/// a sharded checkpoint's index next to one valid shard.
pub fn checkpoint(data: &[u8]) -> Result<(), String> {
    let single = match Checkpoint::from_bytes("fuzz.safetensors".into(), data.to_vec()) {
        Ok(ck) => read_all(&ck),
        Err(e) => Err(e.to_string()),
    };
    // An index is JSON; most safetensors inputs are not worth a file write.
    if data.first() == Some(&b'{') {
        let index = shard_dir().join("model.safetensors.index.json");
        std::fs::write(&index, data).map_err(|e| e.to_string())?;
        match Checkpoint::open_sharded(&index) {
            Ok(ck) => read_all(&ck)?,
            Err(e) => return Err(e.to_string()),
        }
    }
    single
}

/// Checks that `shapes` (from a config that parsed) stay within [`MAX_PARAMETERS`].
fn bounded(shapes: &[(String, Vec<usize>)]) {
    let total: u128 = shapes
        .iter()
        .map(|(_, s)| s.iter().map(|&d| d as u128).product::<u128>())
        .sum();
    assert!(
        total <= MAX_PARAMETERS as u128,
        "a config that parsed describes {total} parameters"
    );
}

/// config.json bytes → every architecture's config parser, then the shapes and costs each
/// computes from the sizes (CPU only: nothing is loaded).
pub fn config(data: &[u8]) -> Result<(), String> {
    let cfg: Value = serde_json::from_slice(data).map_err(|e| e.to_string())?;
    let path = Path::new("config.json");
    let md = ModelDir::in_memory("fuzz", cfg.clone(), &[]).map_err(|e| e.to_string())?;
    let _ = md.architecture();
    let mut errors = Vec::new();
    match MambaConfig::from_json(&cfg, path) {
        Ok(c) => {
            bounded(&c.weight_shapes(true));
            bounded(&c.weight_shapes(false));
        }
        Err(e) => errors.push(e.to_string()),
    }
    match SpikformerConfig::from_json(&cfg, path) {
        Ok(c) => {
            bounded(&c.weight_shapes());
            let _ = c.lif_layers(c.img_size_h, c.img_size_w);
            let _ = c.first_layer_macs(c.img_size_h, c.img_size_w);
            let _ = c.tokens_hw(c.img_size_h, c.img_size_w);
        }
        Err(e) => errors.push(e.to_string()),
    }
    match MetaSpikeformerConfig::from_json(&cfg, path) {
        Ok(c) => {
            bounded(&c.weight_shapes());
            let _ = c.synaptic_costs(c.img_size_h, c.img_size_w);
        }
        Err(e) => errors.push(e.to_string()),
    }
    for spiking in [false, true] {
        match LmuformerConfig::from_json(&cfg, path, spiking) {
            Ok(c) => {
                bounded(&c.weight_shapes());
                let _ = c.synaptic_costs();
                let _ = c.memory();
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    if errors.len() == 5 {
        Err(errors.join("; "))
    } else {
        Ok(())
    }
}

/// tokenizer.json bytes → [`text::tokenizer_from_bytes`], then a fixed text and the
/// input's own tail encoded (and decoded back).
pub fn tokenizer(data: &[u8]) -> Result<(), String> {
    let tok = text::tokenizer_from_bytes(data)?;
    let tail = String::from_utf8_lossy(&data[data.len().saturating_sub(64)..]).into_owned();
    for text in [
        "The quick brown fox jumps over 13 lazy dogs. ¿Qué? 日本語",
        &tail,
    ] {
        let enc = tok.encode(text, false).map_err(|e| e.to_string())?;
        let _ = tok.decode(enc.get_ids(), true);
        let _ = tok.encode(text, true);
    }
    let _ = tok.get_vocab_size(true);
    Ok(())
}

/// WAV bytes → [`audio::parse_wav`], then LMUFormer's features (128 frames of 128 mel bins,
/// the Speech Commands models' sizes) of the first 3 s.
pub fn wav(data: &[u8]) -> Result<(), String> {
    let (samples, _rate) = audio::parse_wav(data)?;
    let n = samples.len().min(3 * audio::SAMPLE_RATE as usize);
    let x = audio::features(&samples[..n], 128, 128);
    assert_eq!(x.len(), 128 * 128);
    Ok(())
}

/// PNG/JPEG bytes → [`vision::decode_image`] at the sizes and crop ratios the vision models
/// use; the first byte picks one, the rest is the image.
pub fn image(data: &[u8]) -> Result<(), String> {
    let (&pick, bytes) = data.split_first().ok_or("empty input")?;
    let (h, w, crop) = match pick % 4 {
        0 => (224, 224, 0.875),
        1 => (32, 32, 1.0),
        2 => (64, 48, 0.9),
        _ => (1, 3, 0.1),
    };
    let v = vision::decode_image(bytes, h, w, crop)?;
    assert_eq!(v.len(), 3 * h * w);
    Ok(())
}

/// Text arguments: the input as `--prompt-ids` ([`input::parse_token_ids`]), as a byte size
/// (`SPIKESCAN_MAX_BINDING`, [`spikescan_runtime::device::parse_bytes`]) and as WGSL for the
/// shader preprocessor ([`spikescan_runtime::pipeline::preprocess`]).
pub fn prompt_ids(data: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(data).map_err(|e| e.to_string())?;
    let ids = input::parse_token_ids(text).map_err(|e| e.to_string());
    if let Ok(ids) = &ids {
        assert_eq!(ids.len(), text.split(',').count());
    }
    let _ = spikescan_runtime::device::parse_bytes(text);
    let _ = spikescan_runtime::pipeline::preprocess(text, &["A", "B"]);
    ids.map(|_| ())
}
